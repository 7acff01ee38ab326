// The kernels of cuda_max_pool.h: a thread per output position and 8 channels, in 16-byte
// loads and stores (8 bytes for `which`), over a grid-stride loop.
#include "cuda_max_pool.h"

#include "cuda_bf16.cuh"

#include <algorithm>

namespace dshost_models {
namespace {

using namespace kernels;  // a thread handles kLanes channels
using Vec = Bf16x8;
struct alignas(8) Which {
  uint8_t v[kLanes];
};

// Output position k (over n x h/2 x w/2) and channel group g: the offset of its window's
// top-left element in x, in Vecs.
__device__ int64_t window_origin(int64_t k, int64_t g, const MaxPoolShape& s) {
  const int64_t ow = s.w / 2, oh = s.h / 2, groups = s.c / kLanes;
  const int64_t x_ = k % ow, y_ = (k / ow) % oh, n = k / (ow * oh);
  return ((n * s.h + 2 * y_) * s.w + 2 * x_) * groups + g;
}

__global__ void forward_kernel(const Vec* __restrict__ x, Vec* __restrict__ y,
                               Which* __restrict__ which, MaxPoolShape s) {
  const int64_t groups = s.c / kLanes, outputs = s.n * (s.h / 2) * (s.w / 2) * groups;
  const int64_t row = s.w * groups;  // Vecs from one input row to the next
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < outputs;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t origin = window_origin(i / groups, i % groups, s);
    const Vec window[4] = {x[origin], x[origin + groups], x[origin + row],
                           x[origin + row + groups]};
    Vec out;
    Which taken;
#pragma unroll
    for (int lane = 0; lane < kLanes; ++lane) {
      float best = -INFINITY;
      uint16_t bits = window[0].v[lane];
      uint8_t at = 0;
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float value = to_float(window[e].v[lane]);
        if (value > best || isnan(value)) {
          best = value;
          bits = window[e].v[lane];
          at = e;
        }
      }
      out.v[lane] = bits;
      taken.v[lane] = at;
    }
    y[i] = out;
    which[i] = taken;
  }
}

__global__ void backward_kernel(const Vec* __restrict__ dy, const Which* __restrict__ which,
                                Vec* __restrict__ dx, MaxPoolShape s) {
  const int64_t groups = s.c / kLanes, outputs = s.n * (s.h / 2) * (s.w / 2) * groups;
  const int64_t row = s.w * groups;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < outputs;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t origin = window_origin(i / groups, i % groups, s);
    const Vec grad = dy[i];
    const Which taken = which[i];
    Vec window[4];
#pragma unroll
    for (int e = 0; e < 4; ++e)
#pragma unroll
      for (int lane = 0; lane < kLanes; ++lane)
        window[e].v[lane] = taken.v[lane] == e ? grad.v[lane] : 0;
    dx[origin] = window[0];
    dx[origin + groups] = window[1];
    dx[origin + row] = window[2];
    dx[origin + row + groups] = window[3];
  }
}

int blocks_for(const MaxPoolShape& s, int threads) {
  const int64_t outputs = s.n * (s.h / 2) * (s.w / 2) * (s.c / kLanes);
  return static_cast<int>(std::clamp<int64_t>((outputs + threads - 1) / threads, 1, 65536));
}

}  // namespace

const char* cuda_max_pool2x2(const uint16_t* x, uint16_t* y, uint8_t* which, const MaxPoolShape& s,
                             void* stream) {
  constexpr int kThreads = 256;
  forward_kernel<<<blocks_for(s, kThreads), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      reinterpret_cast<const Vec*>(x), reinterpret_cast<Vec*>(y), reinterpret_cast<Which*>(which),
      s);
  return launch_error();
}

const char* cuda_max_pool2x2_backward(const uint16_t* dy, const uint8_t* which, uint16_t* dx,
                                      const MaxPoolShape& s, void* stream) {
  constexpr int kThreads = 256;
  backward_kernel<<<blocks_for(s, kThreads), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      reinterpret_cast<const Vec*>(dy), reinterpret_cast<const Which*>(which),
      reinterpret_cast<Vec*>(dx), s);
  return launch_error();
}

}  // namespace dshost_models
