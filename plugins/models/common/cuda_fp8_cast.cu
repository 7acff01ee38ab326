// The kernels of cuda_fp8_cast.h, for matrices whose sides are multiples of 8 and whose
// data starts 16-byte aligned (fp8_linear.hpp checks both), read 8 bf16 (16 bytes) at a time.
// The largest magnitude is a maximum over the bit patterns of |x| as unsigned integers,
// which order non-negative floats as their values (infinity and NaN above every finite
// one), so a NaN is kept where fmaxf would drop it. The cast goes through a 64 x 64 tile in
// shared memory so that both layouts are written 8 bytes at a time along their rows; the
// tile's column sums, where asked for, come from the same reads.
#include "cuda_fp8_cast.h"

#include "cuda_bf16.cuh"

#include <cuda_fp8.h>

namespace dshost_models {
namespace {

using namespace kernels;  // kLanes: bf16 in 16 bytes, fp8 in 8

constexpr int kTile = static_cast<int>(kFp8CastTileRows);  // 256 threads cast 64 x 64
constexpr int kTileStride = 65;  // bytes a row of the shared tile: 8 rows 8 apart fall in 8 banks
constexpr int kThreads = 256;
constexpr int kAmaxBlocks = 1024;

struct alignas(8) Fp8x8 {
  uint8_t v[kLanes];
};

// The largest of the block's threads' `best`, on thread 0 (the others get their warp's).
// Every thread of the block calls it.
__device__ unsigned block_max(unsigned best) {
  for (int offset = 16; offset > 0; offset /= 2)
    best = max(best, __shfl_xor_sync(0xffffffff, best, offset));
  __shared__ unsigned warp_best[kThreads / 32];
  if (threadIdx.x % 32 == 0) warp_best[threadIdx.x / 32] = best;
  __syncthreads();
  if (threadIdx.x == 0)
    for (int w = 1; w < kThreads / 32; ++w) best = max(best, warp_best[w]);
  return best;
}

__global__ void amax_kernel(const Bf16x8* x, int64_t words, unsigned* amax_bits) {
  unsigned best = 0;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < words;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const Bf16x8 w = x[i];
    for (int k = 0; k < kLanes; ++k) best = max(best, __float_as_uint(fabsf(to_float(w.v[k]))));
  }
  best = block_max(best);
  if (threadIdx.x == 0) atomicMax(amax_bits, best);
}

// The tile's column sums, from each thread's sums over its rows in the 8 columns it read,
// added in a fixed order (the same bits every run) into column_partials[tile_row, col0 ...].
__device__ void sum_columns(const float (&sums)[kLanes], int64_t tile_row, int64_t col0,
                            int64_t cols, float* column_partials) {
  constexpr int kRowsAtOnce = kThreads / (kTile / kLanes);  // 32 threads share a column group
  __shared__ float partial[kRowsAtOnce][kTile + 1];
  const int c = (threadIdx.x % (kTile / kLanes)) * kLanes;
  for (int k = 0; k < kLanes; ++k) partial[threadIdx.x / (kTile / kLanes)][c + k] = sums[k];
  __syncthreads();
  if (threadIdx.x >= kTile || col0 + threadIdx.x >= cols) return;
  float total = 0.f;
  for (int r = 0; r < kRowsAtOnce; ++r) total += partial[r][threadIdx.x];
  column_partials[tile_row * cols + col0 + threadIdx.x] = total;
}

// The scale from a delayed-scaling history's finite entries (a seed from a matrix holding an
// infinity or NaN is the one entry that can be neither).
__device__ float history_scale(const unsigned* history, float format_max) {
  unsigned best = 0;
  for (int i = 0; i < kFp8History; ++i)
    if (history[i] < 0x7f800000u) best = max(best, history[i]);
  return best > 0 ? format_max / __uint_as_float(best) : 1.f;
}

// The block's largest |x| bits into the history's running maximum; the cast's last block to
// finish moves that maximum into the next slot (where finite) and resets the count.
__device__ void record_amax(unsigned best, unsigned* history) {
  best = block_max(best);
  if (threadIdx.x != 0) return;
  unsigned* running = history + kFp8History;
  atomicMax(running, best);
  __threadfence();
  const unsigned blocks = gridDim.x * gridDim.y;
  if (atomicAdd(running + 2, 1u) != blocks - 1) return;
  const unsigned amax = atomicExch(running, 0u), slot = running[1];
  if (amax < 0x7f800000u) {  // finite
    history[slot] = amax;
    running[1] = (slot + 1) % kFp8History;
  }
  running[2] = 0;
}

// Cast with the scale from *amax (current scaling) or from `history` (delayed, where not
// null; x's largest magnitude is then recorded in it).
template <__nv_fp8_interpretation_t kFormat>
__global__ void cast_kernel(const uint16_t* x, int64_t rows, int64_t cols, const float* amax,
                            unsigned* history, float format_max, uint8_t* out, uint8_t* out_t,
                            float* inverse_scale, float* column_partials) {
  // An amax of 0 (all zeros) leaves a finite scale. A NaN or infinite element is cast to NaN,
  // so the products are NaN where bf16's would be.
  const float scale =
      history != nullptr ? history_scale(history, format_max) : format_max / fmaxf(*amax, 1e-30f);
  if (blockIdx.x == 0 && blockIdx.y == 0 && threadIdx.x == 0) *inverse_scale = 1.f / scale;
  unsigned best = 0;  // the largest |x| this thread reads, as bits
  __shared__ uint8_t tile[kTile * kTileStride];
  const int64_t row0 = static_cast<int64_t>(blockIdx.y) * kTile;
  const int64_t col0 = static_cast<int64_t>(blockIdx.x) * kTile;
  constexpr int kGroups = kTile / kLanes;  // 8-element groups along a tile row
  // x's rows: thread t takes group t % 8 of rows t / 8, t / 8 + 32, and sums its columns there.
  float sums[kLanes] = {};
  for (int p = threadIdx.x; p < kTile * kGroups; p += kThreads) {
    const int r = p / kGroups, c = (p % kGroups) * kLanes;
    if (row0 + r >= rows || col0 + c >= cols) continue;
    const int64_t at = (row0 + r) * cols + col0 + c;
    const Bf16x8 in = *reinterpret_cast<const Bf16x8*>(x + at);
    Fp8x8 q;
    for (int k = 0; k < kLanes; ++k) {
      const float v = to_float(in.v[k]);
      sums[k] += v;
      best = max(best, __float_as_uint(fabsf(v)));
      q.v[k] = __nv_cvt_float_to_fp8(isinf(v) ? NAN : v * scale, __NV_SATFINITE, kFormat);
      tile[r * kTileStride + c + k] = q.v[k];
    }
    *reinterpret_cast<Fp8x8*>(out + at) = q;
  }
  if (column_partials != nullptr) sum_columns(sums, row0 / kTile, col0, cols, column_partials);
  __syncthreads();
  // out_t's rows (x's columns): thread t takes group t % 8 of columns t / 8, t / 8 + 32.
  for (int p = threadIdx.x; p < kTile * kGroups; p += kThreads) {
    const int c = p / kGroups, r = (p % kGroups) * kLanes;
    if (col0 + c >= cols || row0 + r >= rows) continue;
    Fp8x8 q;
    for (int k = 0; k < kLanes; ++k) q.v[k] = tile[(r + k) * kTileStride + c];
    *reinterpret_cast<Fp8x8*>(out_t + (col0 + c) * rows + row0 + r) = q;
  }
  if (history != nullptr) record_amax(best, history);
}

// 32 columns a block, each over kSumSlices slices of the rows (with one thread a column, most
// SMs would idle while each thread read every row).
constexpr int kSumSlices = 16;

__global__ void sum_partials_kernel(const float* partials, int64_t tile_rows, int64_t cols,
                                    uint16_t* out, bool accumulate) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * 32 + threadIdx.x;
  const float total = column_sum<kSumSlices>(partials, tile_rows, cols, c);
  if (threadIdx.y != 0 || c >= cols) return;
  store_bf16(out + c, total, accumulate);
}

const char* launch_cast(const uint16_t* x, int64_t rows, int64_t cols, const float* amax,
                        unsigned* history, Fp8Format format, uint8_t* out, uint8_t* out_t,
                        float* inverse_scale, float* column_partials, void* stream) {
  const int64_t tile_rows = (rows + kTile - 1) / kTile, tile_cols = (cols + kTile - 1) / kTile;
  if (tile_rows > 65535 || tile_cols > 2147483647)
    return "a matrix of over 4 million rows is not cast to fp8 here";
  const dim3 grid(static_cast<unsigned>(tile_cols), static_cast<unsigned>(tile_rows));
  auto s = static_cast<cudaStream_t>(stream);
  if (format == Fp8Format::e4m3)
    cast_kernel<__NV_E4M3><<<grid, kThreads, 0, s>>>(x, rows, cols, amax, history, 448.f, out,
                                                     out_t, inverse_scale, column_partials);
  else
    cast_kernel<__NV_E5M2><<<grid, kThreads, 0, s>>>(x, rows, cols, amax, history, 57344.f, out,
                                                     out_t, inverse_scale, column_partials);
  return launch_error();
}

}  // namespace

const char* cuda_amax(const uint16_t* x, int64_t n, float* amax, void* stream) {
  auto s = static_cast<cudaStream_t>(stream);
  const cudaError_t e = cudaMemsetAsync(amax, 0, sizeof(float), s);
  if (e != cudaSuccess) return cudaGetErrorString(e);
  const int64_t words = n / kLanes, wanted = (words + kThreads - 1) / kThreads;
  const int blocks = static_cast<int>(wanted < 1 ? 1 : wanted < kAmaxBlocks ? wanted : kAmaxBlocks);
  amax_kernel<<<blocks, kThreads, 0, s>>>(reinterpret_cast<const Bf16x8*>(x), words,
                                          reinterpret_cast<unsigned*>(amax));
  return launch_error();
}

const char* cuda_cast_to_fp8(const uint16_t* x, int64_t rows, int64_t cols, const float* amax,
                             Fp8Format format, uint8_t* out, uint8_t* out_t, float* inverse_scale,
                             float* column_partials, void* stream) {
  return launch_cast(x, rows, cols, amax, nullptr, format, out, out_t, inverse_scale,
                     column_partials, stream);
}

const char* cuda_cast_to_fp8_delayed(const uint16_t* x, int64_t rows, int64_t cols,
                                     unsigned* history, Fp8Format format, uint8_t* out,
                                     uint8_t* out_t, float* inverse_scale, float* column_partials,
                                     void* stream) {
  return launch_cast(x, rows, cols, nullptr, history, format, out, out_t, inverse_scale,
                     column_partials, stream);
}

const char* cuda_sum_column_partials(const float* column_partials, int64_t tile_rows, int64_t cols,
                                     uint16_t* out, bool accumulate, void* stream) {
  sum_partials_kernel<<<static_cast<unsigned>((cols + 31) / 32), dim3(32, kSumSlices), 0,
                        static_cast<cudaStream_t>(stream)>>>(column_partials, tile_rows, cols, out,
                                                             accumulate);
  return launch_error();
}

}  // namespace dshost_models
