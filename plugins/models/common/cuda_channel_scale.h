// A per-sample, per-channel scale (squeeze-excitation's x * scale) over channels-last bf16
// tensors on a GPU (CUDA builds only): the product, with a per-sample, per-channel term
// added where backward needs one, in 16-byte vectors (ATen's broadcasting kernel for it is
// not vectorized), and the scale's gradient, for each sample and channel the sum over the
// image of dy * x, in one read of each (ATen writes the product and reads it back); and by
// the same passes a matrix's column sums. Plain C++ on this side: the kernels' file
// includes no LibTorch.
#pragma once

#include <cstdint>

namespace dshost_models {

// The image tensors as [samples, pixels, channels] bf16, contiguous, starting 16-byte
// aligned; per-sample, per-channel tensors [samples, channels], contiguous, also aligned.
struct ChannelScaleShape {
  int64_t samples, pixels, channels;
};

// The shapes the kernels take: channels a multiple of 8.
bool cuda_channel_scale_takes(const ChannelScaleShape& s);

// y = x * scale + shift (shift fp32, or null for none; scale bf16), elementwise with scale
// and shift broadcast over the pixels. Enqueued on `stream` (a cudaStream_t); returns the
// launch's error text, or null.
const char* cuda_channel_scale(const uint16_t* x, const uint16_t* scale, const float* shift,
                               uint16_t* y, const ChannelScaleShape& s, void* stream);

// Floats of scratch cuda_channel_dot needs for a shape.
int64_t cuda_channel_dot_scratch(const ChannelScaleShape& s);

// out [samples, channels] fp32 = the sums over pixels of dy * x, each added in an order fixed
// by the shape (the same bits every run). Enqueued on `stream` (a cudaStream_t); returns the
// launch's error text, or null.
const char* cuda_channel_dot(const uint16_t* dy, const uint16_t* x, float* out, float* scratch,
                             const ChannelScaleShape& s, void* stream);

// A [rows, cols] matrix as the image tensors above: one sample of `rows` pixels.
inline ChannelScaleShape column_shape(int64_t rows, int64_t cols) { return {1, rows, cols}; }

// out [cols] bf16 = the sums of x's columns (a linear layer's bias gradient), added in fp32 in
// an order fixed by the shape; x [rows, cols] as the image tensors above, scratch
// cuda_channel_dot_scratch(column_shape(rows, cols)) floats.
const char* cuda_column_sums(const uint16_t* x, int64_t rows, int64_t cols, uint16_t* out,
                             float* scratch, void* stream);

}  // namespace dshost_models
