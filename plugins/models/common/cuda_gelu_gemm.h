// A transformer MLP's products with their elementwise work in cuBLASLt's epilogues, bf16 (CUDA
// builds with cuBLASLt only), for gelu_mlp.hpp. The first layer's forward product writes
// GELU's output and, beside it, GELU's input for backward; backward's product through the
// next layer applies GELU's derivative and sums the bias's gradient, where ATen would run
// GELU and its gradient as passes of their own over [rows, 4 x width] matrices. The second
// layer's product adds the bias and the residual stream, where ATen would add the residual
// in a pass of its own. Any bf16 linear layer's weight-gradient product sums its bias's
// gradient too (bf16_linear.hpp), where a pass of its own would read the output's gradient
// again. GELU is GPT-2's tanh approximation. Plain C++ on this side: no LibTorch.
#pragma once

#include <cstddef>
#include <cstdint>

namespace dshost_models {

// Matrices are row-major bf16, 16-byte aligned, with sides that are multiples of 8; each call
// is enqueued on `stream` (a cudaStream_t) and returns null on success, else what failed.
// `workspace` is kGeluGemmWorkspaceBytes of device memory.

// pre [m, n] = x [m, k] w [n, k]^T + bias [n], out [m, n] = GELU(pre).
const char* cuda_gelu_linear(const uint16_t* x, const uint16_t* w, const uint16_t* bias, int64_t m,
                             int64_t n, int64_t k, uint16_t* out, uint16_t* pre, void* workspace,
                             void* stream);

// out [m, n] = x [m, k] w [n, k]^T + bias [n] + residual [m, n].
const char* cuda_residual_linear(const uint16_t* x, const uint16_t* w, const uint16_t* bias,
                                 const uint16_t* residual, int64_t m, int64_t n, int64_t k,
                                 uint16_t* out, void* workspace, void* stream);

// GELU's input gradient from its output's, that the product of the next layer's output
// gradient g [m, k] and weight w [k, n] gives: d_pre [m, n] = (g w) * GELU'(pre [m, n]), and
// (unless bias_gradient is null) bias_gradient [n] = d_pre's column sums (the first layer's
// bias gradient).
const char* cuda_gelu_linear_backward(const uint16_t* g, const uint16_t* w, const uint16_t* pre,
                                      int64_t m, int64_t n, int64_t k, uint16_t* d_pre,
                                      uint16_t* bias_gradient, void* workspace, void* stream);

// A linear layer's weight gradient from its output's gradient g [m, n] and input x [m, k]:
// w_grad [n, k] = g^T x, added to what w_grad holds where `accumulate`; and (unless
// bias_gradient is null) bias_gradient [n] = g's column sums, summed in the same product.
const char* cuda_weight_gradient(const uint16_t* g, const uint16_t* x, int64_t m, int64_t n,
                                 int64_t k, bool accumulate, uint16_t* w_grad,
                                 uint16_t* bias_gradient, void* workspace, void* stream);

constexpr size_t kGeluGemmWorkspaceBytes = size_t{32} << 20;

}  // namespace dshost_models
