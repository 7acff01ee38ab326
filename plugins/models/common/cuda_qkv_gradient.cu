// The kernels of cuda_qkv_gradient.h. A thread takes 8 columns (one 16-byte load and store a
// row) over the rows of one of 128 row groups, keeping their sums; the groups' partial sums
// are then added column by column in their order, so the bias gradient is the same bits
// every run.
#include "cuda_qkv_gradient.h"

#include "cuda_bf16.cuh"

namespace dshost_models {
namespace {

using namespace kernels;

constexpr int kThreads = 256, kRowGroups = 128;

// Thread i stacks vector i % vectors of the rows of group i / vectors (every kRowGroups-th row
// from the group's on) and writes their sums to that group's row of partials: consecutive
// threads take consecutive vectors, and no block idles past a row's end.
__global__ void stack_kernel(QkvPart q, QkvPart k, QkvPart v, QkvShape s, uint16_t* stacked,
                             float* partials) {
  const int64_t width = s.heads * s.head_dim, vectors = 3 * width / kLanes;
  const int64_t thread = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  const int64_t vector = thread % vectors, group = thread / vectors;
  if (group >= kRowGroups) return;
  const int64_t col = vector * kLanes, part = col / width, in_part = col % width;
  const auto pick = [part](auto of_q, auto of_k, auto of_v) {
    return part == 0 ? of_q : part == 1 ? of_k : of_v;
  };
  const int64_t head = in_part / s.head_dim, d = in_part % s.head_dim;
  const int64_t batch_stride = pick(q.batch, k.batch, v.batch),
                time_stride = pick(q.time, k.time, v.time);
  const uint16_t* from = pick(q.data, k.data, v.data) + head * pick(q.head, k.head, v.head) + d;
  float sums[kLanes] = {};
  const int64_t rows = s.batch * s.time;
  // Row (b, t) advanced by kRowGroups a step; the loads are read-only (the non-coherent path),
  // so that four of them can be in flight ahead of the stores.
  int64_t b = group / s.time, t = group % s.time;
#pragma unroll 4
  for (int64_t row = group; row < rows; row += kRowGroups) {
    const uint4 bits =
        __ldg(reinterpret_cast<const uint4*>(from + b * batch_stride + t * time_stride));
    const Bf16x8 g = *reinterpret_cast<const Bf16x8*>(&bits);
    *reinterpret_cast<Bf16x8*>(stacked + row * 3 * width + col) = g;
    for (int j = 0; j < kLanes; ++j) sums[j] += to_float(g.v[j]);
    for (t += kRowGroups; t >= s.time; t -= s.time) ++b;
  }
  float* out = partials + group * 3 * width + col;
  for (int j = 0; j < kLanes; ++j) out[j] = sums[j];
}

// dbias: partials' columns summed over kRowGroups rows, 32 columns a block, as layer norm's
// sum_partials_kernel does.
constexpr int kSlices = 32;
__global__ void bias_kernel(const float* partials, int64_t width, uint16_t* dbias,
                            bool accumulate) {
  const int64_t col = static_cast<int64_t>(blockIdx.x) * 32 + threadIdx.x;
  const float total = column_sum<kSlices>(partials, kRowGroups, width, col);
  if (threadIdx.y != 0 || col >= width) return;
  store_bf16(dbias + col, total, accumulate);
}

}  // namespace

bool cuda_qkv_gradient_takes(const QkvShape& s) {
  return s.batch > 0 && s.time > 0 && s.heads > 0 && s.head_dim > 0 && s.head_dim % kLanes == 0;
}

int64_t cuda_qkv_gradient_scratch(const QkvShape& s) {
  return kRowGroups * 3 * s.heads * s.head_dim;
}

const char* cuda_stack_qkv_gradient(const QkvPart (&parts)[3], const QkvShape& s, uint16_t* stacked,
                                    uint16_t* dbias, bool accumulate, float* scratch,
                                    void* stream) {
  auto st = static_cast<cudaStream_t>(stream);
  const int64_t width = 3 * s.heads * s.head_dim, vectors = width / kLanes;
  const int64_t threads = vectors * kRowGroups;
  stack_kernel<<<static_cast<unsigned>((threads + kThreads - 1) / kThreads), kThreads, 0, st>>>(
      parts[0], parts[1], parts[2], s, stacked, scratch);
  const char* err = launch_error();
  if (err != nullptr) return err;
  bias_kernel<<<static_cast<unsigned>((width + 31) / 32), dim3(32, kSlices), 0, st>>>(
      scratch, width, dbias, accumulate);
  return launch_error();
}

}  // namespace dshost_models
