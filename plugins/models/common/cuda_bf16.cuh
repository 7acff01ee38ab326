// What the model plugins' CUDA kernels share: bf16 values handled as their bits, eight of
// them in one 16-byte load, and a launch's error as text.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace dshost_models {
namespace kernels {

constexpr int kLanes = 8;  // bf16 in 16 bytes

struct alignas(16) Bf16x8 {
  uint16_t v[kLanes];
};

__device__ inline float to_float(uint16_t bits) {
  return __bfloat162float(__ushort_as_bfloat16(bits));
}
__device__ inline uint16_t to_bf16(float x) { return __bfloat16_as_ushort(__float2bfloat16(x)); }

// How a pass over a [rows, channels] bf16 matrix lays out a block of kColumnThreads threads:
// `tile` vectors of 8 channels (up to 32) by `rows_per_pass` rows, each thread keeping to its
// 8 channels.
constexpr int kColumnThreads = 256;
struct ColumnTiling {
  int tile, rows_per_pass;
};
inline ColumnTiling column_tiling(int64_t channels) {
  const int64_t vectors = channels / kLanes;
  const int tile = static_cast<int>(vectors < 32 ? vectors : 32);
  return {tile, kColumnThreads / tile};
}

// A block's column sums: `arrays` arrays of kColumnThreads * kLanes floats, one after another
// in `part`, each holding `rows` rows of `width` values, are added row r + half into row r
// until row 0 holds each column's sum (the same order every time). Every thread of the block
// calls it once its values are written.
__device__ inline void sum_block_rows(float* part, int arrays, int rows, int width) {
  __syncthreads();
  while (rows > 1) {
    const int half = (rows + 1) / 2, moved = (rows - half) * width;
    for (int i = static_cast<int>(threadIdx.x); i < arrays * moved;
         i += static_cast<int>(blockDim.x)) {
      float* value = part + i / moved * kColumnThreads * kLanes + i % moved;
      *value += value[half * width];
    }
    __syncthreads();
    rows = half;
  }
}

// Column `col` of a [rows, width] fp32 matrix summed by a (32, kSlices) block that covers 32
// columns: each thread adds every kSlices-th row from its threadIdx.y on (four loads in
// flight), then the threads of row 0 add the slices in order (the same order every time).
// Every thread of the block calls it; the sum is theirs of row 0 whose col < width.
template <int kSlices>
__device__ float column_sum(const float* m, int64_t rows, int64_t width, int64_t col) {
  __shared__ float slices[kSlices][33];
  float total = 0.f;
  if (col < width)
#pragma unroll 4
    for (int64_t r = threadIdx.y; r < rows; r += kSlices) total += m[r * width + col];
  slices[threadIdx.y][threadIdx.x] = total;
  __syncthreads();
  if (threadIdx.y == 0)
    for (int k = 1; k < kSlices; ++k) total += slices[k][threadIdx.x];
  return total;
}

// *out = bf16(total), or bf16(*out + total) where `accumulate` (a bound gradient buffer).
__device__ inline void store_bf16(uint16_t* out, float total, bool accumulate) {
  *out = to_bf16(accumulate ? to_float(*out) + total : total);
}

// The error of this thread's last launch as text, or null.
inline const char* launch_error() {
  const cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
}

}  // namespace kernels
}  // namespace dshost_models
