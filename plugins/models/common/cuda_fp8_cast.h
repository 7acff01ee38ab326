// bf16 matrices cast to fp8 for fp8_linear.hpp's and fp8_mlp.hpp's matrix multiplies (CUDA
// builds only), each
// scaled as a whole by its own largest magnitude, measured on the device when it is cast, or
// by the largest of its recent casts (delayed scaling).
// Plain C++ on this side: the kernels' file includes no LibTorch.
#pragma once

#include <cstdint>

namespace dshost_models {

enum class Fp8Format { e4m3, e5m2 };  // e4m3fn (max 448) and e5m2 (max 57344)

// Matrices here have sides that are multiples of 8 and data 16-byte aligned.

// Attention's three input gradients (of q, k and v), each [batches, steps, heads, head_dim]
// with head_dim contiguous and the three with the same strides (in elements, multiples of 8;
// head_dim a multiple of 8 too), read as the columns of the [batches x steps,
// 3 x heads x head_dim] matrix their stack would be, where they lie.
struct Fp8Stack {
  const uint16_t* parts[3];
  int64_t steps, head_dim, stride_batch, stride_step, stride_head;
};

// What a cast reads: x [rows, cols] as it is, GELU of it (GPT-2's tanh approximation), x
// times GELU's derivative at `at` (a matrix of x's shape), or `stack`'s parts as the stacked
// matrix [rows, cols] (x unused): what fp8_mlp.hpp's MLP casts in place of GELU's output and
// of its input's gradient, and fp8_linear.hpp's attention input projection in place of its
// stacked output gradient, so that none of these is written in bf16.
enum class Fp8Source { plain, gelu, gelu_gradient, stacked };
struct Fp8CastInput {
  const uint16_t* x;
  int64_t rows, cols;
  Fp8Source source = Fp8Source::plain;
  const uint16_t* at = nullptr;  // gelu_gradient's
  Fp8Stack stack = {};           // stacked's
};

// *amax = the largest magnitude of the input's values (NaN where one is NaN); amax is a
// float on the device. Enqueued on `stream` (a cudaStream_t); returns the launch's error
// text, or null.
const char* cuda_amax(const Fp8CastInput& in, float* amax, void* stream);

// The input's values v ([rows, cols], row-major) times scale = (format's max) / *amax,
// rounded to `format` and saturated at its largest finite value: into `out` in v's layout and
// into `out_t` transposed ([cols, rows] row-major). *inverse_scale = 1 / scale, the factor a
// matrix multiply of the fp8 values applies to give v's scale back. Unless column_partials is
// null, it also sums v's columns in fp32 by 64-row tiles into column_partials,
// [ceil(rows / 64), cols] (a bias's gradient: the sum of that column of partial sums).
const char* cuda_cast_to_fp8(const Fp8CastInput& in, const float* amax, Fp8Format format,
                             uint8_t* out, uint8_t* out_t, float* inverse_scale,
                             float* column_partials, void* stream);

constexpr int64_t kFp8CastTileRows = 64;

// out [cols] bf16 = the sums of column_partials [tile_rows, cols] (a cast's) over its rows in
// fp32, added to what out holds where `accumulate` (a bias's gradient buffer).
const char* cuda_sum_column_partials(const float* column_partials, int64_t tile_rows, int64_t cols,
                                     uint16_t* out, bool accumulate, void* stream);

// Delayed scaling, as Transformer Engine's recipe has it: an operand's largest magnitudes of
// its last kFp8History casts, kept on the device in kFp8HistoryWords unsigned words (the
// magnitudes' float bits, then the cast's running maximum, the next slot and a count of the
// cast's finished blocks), all zero before the first cast.
constexpr int64_t kFp8History = 16, kFp8HistoryWords = kFp8History + 3;

// The input cast as cuda_cast_to_fp8 does, scale = (format's max) / the largest magnitude in
// `history` (1 where it holds none above 0), so values past the format's range saturate;
// the values' own largest magnitude then replaces the oldest entry (left out where it is
// infinite or NaN: such elements are cast to NaN). One pass over the input, where the
// current scaling reads it twice.
const char* cuda_cast_to_fp8_delayed(const Fp8CastInput& in, unsigned* history, Fp8Format format,
                                     uint8_t* out, uint8_t* out_t, float* inverse_scale,
                                     float* column_partials, void* stream);

}  // namespace dshost_models
