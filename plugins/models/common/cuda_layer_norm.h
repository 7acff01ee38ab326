// Layer norm over bf16 rows on a GPU (CUDA builds only), with the residual add before it
// fused in: forward reads x and the residual once, writes their sum and its normalized
// rows; backward writes the sum's whole gradient (the normalized rows' part plus the
// gradient the sum received directly) and the weight's and bias's gradients from one pass,
// where the unfused ops (add, layer norm, its input and weight gradients, the gradients'
// add) read and write each row several times more. Plain C++ on this side: the kernels'
// file includes no LibTorch.
#pragma once

#include <cstdint>

namespace dshost_models {

// rows (at least one) x width bf16 matrices, row-major, contiguous, starting 16-byte
// aligned; weight and bias bf16 [width], any alignment.
struct LayerNormShape {
  int64_t rows, width;
};

// The widths the kernels take: multiples of 8, up to 8192.
bool cuda_layer_norm_takes(int64_t width);

// sum = bf16(x + residual) (where residual is not null; else the rows of x are normalized
// and sum is not written), y = bf16((sum - mean) * rstd * weight + bias) with mean and
// rstd = 1 / sqrt(variance + eps) of each row in fp32, kept in mean and rstd [rows].
// Enqueued on `stream` (a cudaStream_t); returns the launch's error text, or null.
const char* cuda_layer_norm(const uint16_t* x, const uint16_t* residual, const uint16_t* weight,
                            const uint16_t* bias, float eps, uint16_t* sum, uint16_t* y,
                            float* mean, float* rstd, const LayerNormShape& s, void* stream);

// Floats of scratch cuda_layer_norm_backward needs for a shape.
int64_t cuda_layer_norm_scratch(const LayerNormShape& s);

// From dy (the normalized rows' gradient), dsum (the sum's own gradient, or null), the
// normalized rows' input `sum`, mean and rstd: dsum_total = bf16(dsum + the layer norm's
// input gradient), dweight and dbias in bf16, summed in fp32 in an order fixed by the shape
// (and added to what dweight and dbias hold where `accumulate`: bound gradient buffers).
const char* cuda_layer_norm_backward(const uint16_t* dy, const uint16_t* dsum, const uint16_t* sum,
                                     const float* mean, const float* rstd, const uint16_t* weight,
                                     uint16_t* dsum_total, uint16_t* dweight, uint16_t* dbias,
                                     bool accumulate, float* scratch, const LayerNormShape& s,
                                     void* stream);

}  // namespace dshost_models
