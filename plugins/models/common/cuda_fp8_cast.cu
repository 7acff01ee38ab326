// The kernels of cuda_fp8_cast.h, for matrices whose sides are multiples of 8 and whose
// data starts 16-byte aligned (fp8_linear.hpp checks both), read 8 bf16 (16 bytes) at a time.
// The largest magnitude is a maximum over the bit patterns of |x| as unsigned integers,
// which order non-negative floats as their values (infinity and NaN above every finite
// one), so a NaN is kept where fmaxf would drop it. A block casts a 64 x 128 tile: each thread
// issues its four loads before it converts any, writes x's layout 8 bytes at a time and the
// tile into shared memory, then transposes 8 rows by 4 columns of it in registers, so that
// the transposed layout is also written 8 bytes at a time along its rows; the tile's column
// sums, where asked for, come from the same reads. GELU and its gradient (fp8_mlp.hpp's
// sources) are computed on the way, from the values read.
#include "cuda_fp8_cast.h"

#include "cuda_bf16.cuh"

#include <cuda_fp8.h>

#include <type_traits>

namespace dshost_models {
namespace {

using namespace kernels;  // kLanes: bf16 in 16 bytes, fp8 in 8

constexpr int kTileRows = static_cast<int>(kFp8CastTileRows);  // 256 threads cast 64 x 128
constexpr int kTileCols = 128;
constexpr int kThreads = 256;
constexpr int kGroupsPerRow = kTileCols / kLanes;      // 16 loads of 8 elements a row
constexpr int kRowStep = kThreads / kGroupsPerRow;     // 16 rows read at a time
constexpr int kLoadsPerThread = kTileRows / kRowStep;  // 4
constexpr int kTileWords = kTileCols / 4 + 1;  // a shared row: 32 words of fp8 and one apart,
                                               // so rows 8 apart fall in different banks
constexpr int kAmaxBlocks = 1024;

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

// GELU, GPT-2's tanh approximation, and its derivative, in fp32 through the logistic
// function s = 0.5 (1 + tanh(u)) = 1 / (1 + exp(-2u)) and its complement 1 - s =
// exp(-2u) s: GELU(v) = v s, GELU'(v) = s + 2 v s (1 - s) u'. Neither 1 + tanh(u) (negative
// u) nor 1 - s (positive) is formed, so nothing cancels, and an element takes two of the
// GPU's special-function instructions (exponential, reciprocal) where tanhf takes a branch
// and a longer series.
constexpr float kSqrt2OverPi = 0.7978845608028654f, kCubic = 0.044715f;
struct Logistic {
  float s, complement;
};
__device__ Logistic gelu_logistic(float v) {
  const float e = __expf(-2.f * kSqrt2OverPi * (v + kCubic * v * v * v));
  const float s = __fdividef(1.f, 1.f + e);  // 0 where e overflows
  return {s, fminf(e * s, 1.f)};             // 1 there (e s is then inf x 0)
}
__device__ float gelu(float v) { return v * gelu_logistic(v).s; }
__device__ float gelu_derivative(float v) {
  const Logistic l = gelu_logistic(v);
  return l.s + 2.f * v * l.s * l.complement * kSqrt2OverPi * (1.f + 3.f * kCubic * v * v);
}

// Eight of the input's values from its words x and (gelu_gradient's) at.
template <Fp8Source kSource>
__device__ void source_values(const Bf16x8& x, const Bf16x8& at, float (&v)[kLanes]) {
  for (int k = 0; k < kLanes; ++k) {
    const float value = to_float(x.v[k]);
    if constexpr (kSource == Fp8Source::plain || kSource == Fp8Source::stacked) v[k] = value;
    if constexpr (kSource == Fp8Source::gelu) v[k] = gelu(value);
    if constexpr (kSource == Fp8Source::gelu_gradient)
      v[k] = value * gelu_derivative(to_float(at.v[k]));
  }
}

// 16 bytes through the read-only cache (the inputs are not written while a cast reads them).
__device__ Bf16x8 read16(const uint16_t* p) {
  const uint4 bits = __ldg(reinterpret_cast<const uint4*>(p));
  Bf16x8 w;
  static_assert(sizeof w == sizeof bits);
  memcpy(&w, &bits, sizeof w);
  return w;
}

// The input's eight values at row r, columns col .. col + 7: x's, or where a stacked input's
// part holds them.
template <Fp8Source kSource>
__device__ Bf16x8 load(const Fp8CastInput& in, int64_t r, int64_t col) {
  if constexpr (kSource != Fp8Source::stacked) {
    return read16(in.x + r * in.cols + col);
  } else {
    // In 32 bits (the host checks that rows and columns fit): unsigned division is far
    // cheaper than 64-bit.
    const Fp8Stack& s = in.stack;
    const unsigned width = static_cast<unsigned>(in.cols) / 3, column = static_cast<unsigned>(col);
    const unsigned part = column / width, within = column - part * width;
    const unsigned steps = static_cast<unsigned>(s.steps), row = static_cast<unsigned>(r);
    const unsigned head_dim = static_cast<unsigned>(s.head_dim), batch = row / steps;
    const unsigned head = within / head_dim;
    // The part chosen by value: indexing parts by `part` would copy them to local memory.
    const uint16_t* base = part == 0 ? s.parts[0] : part == 1 ? s.parts[1] : s.parts[2];
    return read16(base + batch * s.stride_batch + (row - batch * steps) * s.stride_step +
                  head * s.stride_head + (within - head * head_dim));
  }
}

// gelu_gradient's point matrix at the same place (an unused zero elsewhere).
template <Fp8Source kSource>
__device__ Bf16x8 load_at(const Fp8CastInput& in, int64_t r, int64_t col) {
  if constexpr (kSource == Fp8Source::gelu_gradient) return read16(in.at + r * in.cols + col);
  return Bf16x8{};
}

template <Fp8Source kSource>
__global__ void amax_kernel(const Fp8CastInput in, unsigned* amax_bits) {
  const int64_t words = in.rows * in.cols / kLanes;
  unsigned best = 0;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < words;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    // Row and column only where a stacked input needs them: the others are read in order.
    const int64_t r = kSource == Fp8Source::stacked ? i * kLanes / in.cols : 0;
    const int64_t col = kSource == Fp8Source::stacked ? i * kLanes - r * in.cols : i * kLanes;
    float v[kLanes];
    source_values<kSource>(load<kSource>(in, r, col), load_at<kSource>(in, r, col), v);
    for (int k = 0; k < kLanes; ++k) best = max(best, __float_as_uint(fabsf(v[k])));
  }
  best = block_max(best);
  if (threadIdx.x == 0) atomicMax(amax_bits, best);
}

// The tile's column sums, from each thread's sums over its rows in the 8 columns it read,
// added in a fixed order (the same bits every run) into column_partials[tile_row, col0 ...].
__device__ void sum_columns(const float (&sums)[kLanes], int64_t tile_row, int64_t col0,
                            int64_t cols, float* column_partials) {
  __shared__ float partial[kRowStep][kTileCols + 1];
  const int c = (threadIdx.x % kGroupsPerRow) * kLanes;
  for (int k = 0; k < kLanes; ++k) partial[threadIdx.x / kGroupsPerRow][c + k] = sums[k];
  __syncthreads();
  if (threadIdx.x >= kTileCols || col0 + threadIdx.x >= cols) return;
  float total = 0.f;
  for (int r = 0; r < kRowStep; ++r) total += partial[r][threadIdx.x];
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

// Four fp8 values, one from each of four words (rows), taken byte j of each: out[j] holds
// column j of the 4 x 4 bytes in rows' order.
__device__ void transpose_4x4(const uint32_t (&rows)[4], uint32_t (&out)[4]) {
  const uint32_t low01 = __byte_perm(rows[0], rows[1], 0x5140);   // r0b0 r1b0 r0b1 r1b1
  const uint32_t high01 = __byte_perm(rows[0], rows[1], 0x7362);  // r0b2 r1b2 r0b3 r1b3
  const uint32_t low23 = __byte_perm(rows[2], rows[3], 0x5140);
  const uint32_t high23 = __byte_perm(rows[2], rows[3], 0x7362);
  out[0] = __byte_perm(low01, low23, 0x5410);
  out[1] = __byte_perm(low01, low23, 0x7632);
  out[2] = __byte_perm(high01, high23, 0x5410);
  out[3] = __byte_perm(high01, high23, 0x7632);
}

// Four values scaled and rounded to fp8, two at a time, the first in the low byte. A NaN or
// infinite element is cast to NaN, so the products are NaN where bf16's would be.
template <__nv_fp8_interpretation_t kFormat>
__device__ uint32_t to_fp8x4(const float* v, float scale) {
  uint32_t packed = 0;
  for (int k = 0; k < 4; k += 2) {
    const float2 scaled{isinf(v[k]) ? NAN : v[k] * scale, isinf(v[k + 1]) ? NAN : v[k + 1] * scale};
    packed |= uint32_t{__nv_cvt_float2_to_fp8x2(scaled, __NV_SATFINITE, kFormat)} << (8 * k);
  }
  return packed;
}

// Cast with the scale from *amax (current scaling) or from `history` (delayed, where not
// null; the values' largest magnitude is then recorded in it).
template <__nv_fp8_interpretation_t kFormat, Fp8Source kSource>
__global__ void __launch_bounds__(kThreads, 4)
    cast_kernel(const Fp8CastInput in, const float* amax, unsigned* history, float format_max,
                uint8_t* __restrict__ out, uint8_t* __restrict__ out_t, float* inverse_scale,
                float* column_partials) {
  const int64_t rows = in.rows, cols = in.cols;
  __shared__ uint32_t tile[kTileRows][kTileWords];
  const int64_t row0 = static_cast<int64_t>(blockIdx.y) * kTileRows;
  const int64_t col0 = static_cast<int64_t>(blockIdx.x) * kTileCols;
  // x's rows: thread t reads 8 columns, group t % 16, of rows t / 16 + 16 i (a warp reads two
  // rows' 256 bytes at once).
  const int c = (threadIdx.x % kGroupsPerRow) * kLanes, r0 = threadIdx.x / kGroupsPerRow;
  Bf16x8 words[kLoadsPerThread], words_at[kLoadsPerThread];
  for (int i = 0; i < kLoadsPerThread; ++i) {
    const int64_t r = row0 + r0 + i * kRowStep;
    if (r >= rows || col0 + c >= cols) continue;
    words[i] = load<kSource>(in, r, col0 + c);
    words_at[i] = load_at<kSource>(in, r, col0 + c);
  }
  // An amax of 0 (all zeros) leaves a finite scale.
  const float scale =
      history != nullptr ? history_scale(history, format_max) : format_max / fmaxf(*amax, 1e-30f);
  if (blockIdx.x == 0 && blockIdx.y == 0 && threadIdx.x == 0) *inverse_scale = 1.f / scale;
  unsigned best = 0;  // the largest |x| this thread reads, as bits
  float sums[kLanes] = {};
  for (int i = 0; i < kLoadsPerThread; ++i) {
    const int r = r0 + i * kRowStep;
    if (row0 + r >= rows || col0 + c >= cols) continue;
    float v[kLanes];
    source_values<kSource>(words[i], words_at[i], v);
    for (int k = 0; k < kLanes; ++k) {
      sums[k] += v[k];
      best = max(best, __float_as_uint(fabsf(v[k])));
    }
    const uint32_t low = to_fp8x4<kFormat>(v, scale), high = to_fp8x4<kFormat>(v + 4, scale);
    *reinterpret_cast<uint2*>(out + (row0 + r) * cols + col0 + c) = make_uint2(low, high);
    tile[r][c / 4] = low;
    tile[r][c / 4 + 1] = high;
  }
  if (column_partials != nullptr) sum_columns(sums, row0 / kTileRows, col0, cols, column_partials);
  __syncthreads();
  // out_t's rows (x's columns): thread t takes rows 8 g .. 8 g + 7 of columns 4 h .. 4 h + 3,
  // a warp four g by eight h, so that its 32 shared reads fall in 32 banks.
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = (warp % 2) * 4 + lane / 8, h = (warp / 2) * 8 + lane % 8;
  const int64_t r = row0 + 8 * g, col = col0 + 4 * h;
  if (r < rows && col < cols) {
    uint32_t upper[4], lower[4], upper_t[4], lower_t[4];
    for (int k = 0; k < 4; ++k) {
      upper[k] = tile[8 * g + k][h];
      lower[k] = tile[8 * g + 4 + k][h];
    }
    transpose_4x4(upper, upper_t);
    transpose_4x4(lower, lower_t);
    for (int j = 0; j < 4; ++j)
      *reinterpret_cast<uint2*>(out_t + (col + j) * rows + r) = make_uint2(upper_t[j], lower_t[j]);
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

// Calls launch with `source` as a compile-time constant (std::integral_constant), for the
// kernels templated on it.
template <typename Launch>
void with_source(Fp8Source source, Launch launch) {
  using std::integral_constant;
  switch (source) {
    case Fp8Source::plain:
      return launch(integral_constant<Fp8Source, Fp8Source::plain>{});
    case Fp8Source::gelu:
      return launch(integral_constant<Fp8Source, Fp8Source::gelu>{});
    case Fp8Source::gelu_gradient:
      return launch(integral_constant<Fp8Source, Fp8Source::gelu_gradient>{});
    case Fp8Source::stacked:
      return launch(integral_constant<Fp8Source, Fp8Source::stacked>{});
  }
}

const char* launch_cast(const Fp8CastInput& in, const float* amax, unsigned* history,
                        Fp8Format format, uint8_t* out, uint8_t* out_t, float* inverse_scale,
                        float* column_partials, void* stream) {
  const int64_t tile_rows = (in.rows + kTileRows - 1) / kTileRows;
  const int64_t tile_cols = (in.cols + kTileCols - 1) / kTileCols;
  if (tile_rows > 65535 || tile_cols > 2147483647)
    return "a matrix of over 4 million rows is not cast to fp8 here";
  const dim3 grid(static_cast<unsigned>(tile_cols), static_cast<unsigned>(tile_rows));
  auto s = static_cast<cudaStream_t>(stream);
  with_source(in.source, [&](auto source) {
    constexpr Fp8Source kSource = decltype(source)::value;
    if (format == Fp8Format::e4m3)
      cast_kernel<__NV_E4M3, kSource><<<grid, kThreads, 0, s>>>(
          in, amax, history, 448.f, out, out_t, inverse_scale, column_partials);
    else
      cast_kernel<__NV_E5M2, kSource><<<grid, kThreads, 0, s>>>(
          in, amax, history, 57344.f, out, out_t, inverse_scale, column_partials);
  });
  return launch_error();
}

}  // namespace

const char* cuda_amax(const Fp8CastInput& in, float* amax, void* stream) {
  auto s = static_cast<cudaStream_t>(stream);
  const cudaError_t e = cudaMemsetAsync(amax, 0, sizeof(float), s);
  if (e != cudaSuccess) return cudaGetErrorString(e);
  const int64_t words = in.rows * in.cols / kLanes, wanted = (words + kThreads - 1) / kThreads;
  const int blocks = static_cast<int>(wanted < 1 ? 1 : wanted < kAmaxBlocks ? wanted : kAmaxBlocks);
  auto* bits = reinterpret_cast<unsigned*>(amax);
  with_source(in.source, [&](auto source) {
    amax_kernel<decltype(source)::value><<<blocks, kThreads, 0, s>>>(in, bits);
  });
  return launch_error();
}

const char* cuda_cast_to_fp8(const Fp8CastInput& in, const float* amax, Fp8Format format,
                             uint8_t* out, uint8_t* out_t, float* inverse_scale,
                             float* column_partials, void* stream) {
  return launch_cast(in, amax, nullptr, format, out, out_t, inverse_scale, column_partials, stream);
}

const char* cuda_cast_to_fp8_delayed(const Fp8CastInput& in, unsigned* history, Fp8Format format,
                                     uint8_t* out, uint8_t* out_t, float* inverse_scale,
                                     float* column_partials, void* stream) {
  return launch_cast(in, nullptr, history, format, out, out_t, inverse_scale, column_partials,
                     stream);
}

const char* cuda_sum_column_partials(const float* column_partials, int64_t tile_rows, int64_t cols,
                                     uint16_t* out, bool accumulate, void* stream) {
  sum_partials_kernel<<<static_cast<unsigned>((cols + 31) / 32), dim3(32, kSumSlices), 0,
                        static_cast<cudaStream_t>(stream)>>>(column_partials, tile_rows, cols, out,
                                                             accumulate);
  return launch_error();
}

}  // namespace dshost_models
