// c_attn's output gradient from attention's q, k and v gradients (CUDA builds only): the
// three [B, T, heads, head_dim] gradients, each with strides of its own (as attention's
// backward leaves them), stacked into the [B * T, 3 * heads * head_dim] bf16 matrix c_attn's
// products read, and in the same pass that matrix's column sums, c_attn's bias gradient,
// which would otherwise take a read of the matrix of its own. Plain C++ on this side.
#pragma once

#include <cstdint>

namespace dshost_models {

struct QkvShape {
  int64_t batch, time, heads, head_dim;
};

// One of the three gradients: bf16 at `data`, element (b, t, h, d) at b * batch + t * time +
// h * head + d (head_dim contiguous); `data` and the three strides 16-byte aligned.
struct QkvPart {
  const uint16_t* data;
  int64_t batch, time, head;
};

// Whether the kernels take a shape: head_dim a multiple of 8.
bool cuda_qkv_gradient_takes(const QkvShape& s);

// Floats of scratch cuda_stack_qkv_gradient needs for a shape.
int64_t cuda_qkv_gradient_scratch(const QkvShape& s);

// stacked [B * T, 3 C] = (q | k | v) row by row (C = heads * head_dim, each part's columns
// head by head), and dbias [3 C] = its column sums in fp32, summed in an order fixed by the
// shape, rounded to bf16 (added to what dbias holds where `accumulate`). Enqueued on `stream`
// (a cudaStream_t); returns the launch's error text, or null.
const char* cuda_stack_qkv_gradient(const QkvPart (&parts)[3], const QkvShape& s, uint16_t* stacked,
                                    uint16_t* dbias, bool accumulate, float* scratch, void* stream);

}  // namespace dshost_models
