// The kernels of cuda_cross_entropy.h: a block per row. A row of an odd class count starts
// anywhere in a 16-byte word, so each row is read as a few leading elements one by one, a
// body of 16-byte words (8 bf16) and a tail; dlogits shares the logits' layout, so the same
// split serves both.
#include "cuda_cross_entropy.h"

#include "cuda_bf16.cuh"

namespace dshost_models {
namespace {

using namespace kernels;
using Vec = Bf16x8;

// Row r's elements before its first 16-byte boundary, and its whole 16-byte words after it.
struct RowSplit {
  const uint16_t* row;
  int64_t head, words, tail_begin;
  __device__ RowSplit(const uint16_t* logits, int64_t r, int64_t classes)
      : row(logits + r * classes) {
    const int64_t misaligned = (reinterpret_cast<uintptr_t>(row) % 16) / 2;
    head = misaligned == 0 ? 0 : kLanes - misaligned;
    if (head > classes) head = classes;
    words = (classes - head) / kLanes;
    tail_begin = head + words * kLanes;
  }
};

// A running maximum m and sum s of exp(x - m).
struct MaxSum {
  float m = -INFINITY, s = 0.f;
  // N values at once: their maximum first, then their exponentials, independent of each
  // other, and one rescale of s, where adding them one by one would chain N rescales.
  template <int N>
  __device__ void add(const float (&x)[N]) {
    float top = m;
#pragma unroll
    for (int k = 0; k < N; ++k) top = fmaxf(top, x[k]);  // fmaxf passes NaN over
    if (top == -INFINITY) {                              // each value -inf (adds nothing) or NaN
#pragma unroll
      for (int k = 0; k < N; ++k)
        if (isnan(x[k])) s = x[k];
      return;
    }
    float sum = 0.f;
#pragma unroll
    for (int k = 0; k < N; ++k) sum += __expf(x[k] - top);  // NaN stays NaN
    s = s * __expf(m - top) + sum;
    m = top;
  }
  __device__ void add(float x) {
    const float one[1] = {x};
    add(one);
  }
  __device__ void merge(MaxSum o) {
    const float top = fmaxf(m, o.m);
    if (top == -INFINITY) {
      s += o.s;  // zero, or NaN from a NaN value
      return;
    }
    s = s * __expf(m - top) + o.s * __expf(o.m - top);
    m = top;
  }
};

__device__ MaxSum block_merge(MaxSum x) {
  for (int offset = 16; offset > 0; offset /= 2) {
    MaxSum o;
    o.m = __shfl_xor_sync(0xffffffff, x.m, offset);
    o.s = __shfl_xor_sync(0xffffffff, x.s, offset);
    x.merge(o);
  }
  __shared__ float maxima[32], sums[32];  // a warp's each
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) {
    maxima[warp] = x.m;
    sums[warp] = x.s;
  }
  __syncthreads();
  MaxSum all;
  for (int w = 0; w < static_cast<int>(blockDim.x / 32); ++w) {
    MaxSum o;
    o.m = maxima[w];
    o.s = sums[w];
    all.merge(o);
  }
  return all;
}

__global__ void forward_kernel(const uint16_t* __restrict__ logits,
                               const int64_t* __restrict__ targets, float* __restrict__ losses,
                               float* __restrict__ lse, CrossEntropyShape s) {
  const int64_t r = blockIdx.x;
  const RowSplit split(logits, r, s.classes);
  MaxSum mine;
  for (int64_t c = threadIdx.x; c < split.head; c += blockDim.x) mine.add(to_float(split.row[c]));
  const Vec* body = reinterpret_cast<const Vec*>(split.row + split.head);
  for (int64_t w = threadIdx.x; w < split.words; w += blockDim.x) {
    const Vec word = body[w];
    float x[kLanes];
#pragma unroll
    for (int lane = 0; lane < kLanes; ++lane) x[lane] = to_float(word.v[lane]);
    mine.add(x);
  }
  for (int64_t c = split.tail_begin + threadIdx.x; c < s.classes; c += blockDim.x)
    mine.add(to_float(split.row[c]));
  const MaxSum all = block_merge(mine);
  if (threadIdx.x != 0) return;
  const float row_lse = all.m + logf(all.s);
  const int64_t t = targets[r];
  lse[r] = row_lse;
  losses[r] = t >= 0 && t < s.classes ? row_lse - to_float(split.row[t])
                                      : __int_as_float(0x7fc00000);  // NaN
}

__global__ void backward_kernel(const uint16_t* __restrict__ logits,
                                const int64_t* __restrict__ targets, const float* __restrict__ lse,
                                const float* __restrict__ scale, uint16_t* __restrict__ dlogits,
                                CrossEntropyShape s) {
  const int64_t r = blockIdx.x, t = targets[r];
  const float row_lse = lse[r], g = *scale;
  const RowSplit split(logits, r, s.classes);
  uint16_t* out = dlogits + r * s.classes;
  const auto grad = [&](int64_t c, uint16_t x) {
    return to_bf16((__expf(to_float(x) - row_lse) - (c == t ? 1.f : 0.f)) * g);
  };
  for (int64_t c = threadIdx.x; c < split.head; c += blockDim.x) out[c] = grad(c, split.row[c]);
  const Vec* body = reinterpret_cast<const Vec*>(split.row + split.head);
  Vec* out_body = reinterpret_cast<Vec*>(out + split.head);
  for (int64_t w = threadIdx.x; w < split.words; w += blockDim.x) {
    const Vec word = body[w];
    Vec d;
#pragma unroll
    for (int lane = 0; lane < kLanes; ++lane)
      d.v[lane] = grad(split.head + w * kLanes + lane, word.v[lane]);
    out_body[w] = d;
  }
  for (int64_t c = split.tail_begin + threadIdx.x; c < s.classes; c += blockDim.x)
    out[c] = grad(c, split.row[c]);
}

// Enough threads for a vocabulary's row, few for a handful of classes.
int threads_for(int64_t classes) { return classes >= 16 * 1024 ? 512 : 128; }

}  // namespace

const char* cuda_cross_entropy(const uint16_t* logits, const int64_t* targets, float* losses,
                               float* lse, const CrossEntropyShape& s, void* stream) {
  if (s.rows == 0) return nullptr;
  forward_kernel<<<s.rows, threads_for(s.classes), 0, static_cast<cudaStream_t>(stream)>>>(
      logits, targets, losses, lse, s);
  return launch_error();
}

const char* cuda_cross_entropy_backward(const uint16_t* logits, const int64_t* targets,
                                        const float* lse, const float* scale, uint16_t* dlogits,
                                        const CrossEntropyShape& s, void* stream) {
  if (s.rows == 0) return nullptr;
  backward_kernel<<<s.rows, threads_for(s.classes), 0, static_cast<cudaStream_t>(stream)>>>(
      logits, targets, lse, scale, dlogits, s);
  return launch_error();
}

}  // namespace dshost_models
