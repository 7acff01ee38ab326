// A bf16 linear layer whose bias gradient is summed inside its weight-gradient product
// (cuBLASLt's BGRADB epilogue, cuda_gelu_gemm.h) where the layer is narrower than
// kBiasColumnSumsFrom, and by bias_gradient.hpp's column sums, a pass of their own, where it is
// as wide or wider: the epilogue's cost grows faster with the width than the pass's. The
// weight's gradient is added into its bound buffer (none is then returned), as dshost::linear's
// is, else made fresh.
//
// Taken for bf16 input and parameters on a GPU, with a bias and both widths multiples of 8,
// in builds with cuBLASLt; elsewhere dshost::linear with bias_gradient.hpp's column sums.
#pragma once

#include "bias_gradient.hpp"

#include <dshost/ops/linear.hpp>

#if DSHOST_CUDA_GELU_GEMM
#include "cuda_gelu_gemm.h"
#include "cuda_tensors.hpp"

#include <torch/autograd.h>

#include <utility>
#endif

namespace dshost_models {

#if DSHOST_CUDA_GELU_GEMM
// The device memory a bf16 cuBLASLt product of cuda_gelu_gemm.h may use, on `like`'s device.
inline at::Tensor gemm_workspace(const at::Tensor& like) {
  return at::empty({static_cast<int64_t>(kGeluGemmWorkspaceBytes)},
                   like.options().dtype(at::kByte));
}

// Layers from this output width on take their bias gradient from column sums.
constexpr int64_t kBiasColumnSumsFrom = 4096;

// The gradients of a layer's `weight` [n, k] and bias, each where asked for, from the output's
// gradient g [m, n] and the input x [m, k] (bf16, contiguous, 16-byte aligned), in `workspace`
// (gemm_workspace's): the weight's is left undefined where it was added into the bound buffer.
inline std::pair<at::Tensor, at::Tensor> linear_gradients(const at::Tensor& weight,
                                                          bool weight_asked, bool bias_asked,
                                                          const at::Tensor& g, const at::Tensor& x,
                                                          const at::Tensor& workspace) {
  if (!weight_asked) return {at::Tensor(), bias_asked ? bias_gradient(g) : at::Tensor()};
  const bool bound = bound_gradient(weight, at::kBFloat16);
  const bool in_product = bias_asked && g.size(1) < kBiasColumnSumsFrom;
  const at::Tensor w_grad = bound ? weight.grad() : at::empty(weight.sizes(), g.options());
  const at::Tensor b_grad = in_product ? at::empty({g.size(1)}, g.options()) : at::Tensor();
  check_launch(cuda_weight_gradient(bf16_bits(g), bf16_bits(x), g.size(0), g.size(1), x.size(1),
                                    /*accumulate=*/bound, bf16_bits(w_grad),
                                    in_product ? bf16_bits(b_grad) : nullptr, workspace.data_ptr(),
                                    stream_of(g)),
               "weight gradient");
  return {bound ? at::Tensor() : w_grad, bias_asked && !in_product ? bias_gradient(g) : b_grad};
}

struct Bf16Linear : torch::autograd::Function<Bf16Linear> {
  static bool takes(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
    return bf16_on_gpu(x) && bf16_on_gpu(weight) && bf16_on_gpu(bias) && x.numel() > 0 &&
           weight.dim() == 2 && x.size(-1) == weight.size(1) && weight.size(0) % 8 == 0 &&
           weight.size(1) % 8 == 0;
  }

  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                            const at::Tensor& weight, const at::Tensor& bias) {
    ctx->save_for_backward({aligned16(x.reshape({-1, x.size(-1)}))});
    ctx->saved_data["weight"] = weight;  // the parameter, whose grad may be bound
    return at::linear(x, weight, bias);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const at::Tensor rows = ctx->get_saved_variables()[0];
    const at::Tensor weight = ctx->saved_data["weight"].toTensor();
    const at::Tensor g = aligned16(grads[0].reshape({-1, grads[0].size(-1)}).to(at::kBFloat16));
    at::Tensor dx, d_weight, d_bias;
    if (ctx->needs_input_grad(0)) {
      std::vector<int64_t> shape = grads[0].sizes().vec();
      shape.back() = weight.size(1);
      dx = g.mm(weight).view(shape);
    }
    std::tie(d_weight, d_bias) = linear_gradients(
        weight, ctx->needs_input_grad(1), ctx->needs_input_grad(2), g, rows, gemm_workspace(g));
    return {dx, d_weight, d_bias};
  }
};
#endif

// x weight^T + bias: Bf16Linear where it takes the tensors, else dshost::linear.
inline at::Tensor bf16_linear(const at::Tensor& x, const at::Tensor& weight,
                              const at::Tensor& bias) {
#if DSHOST_CUDA_GELU_GEMM
  if (Bf16Linear::takes(x, weight, bias)) return Bf16Linear::apply(x, weight, bias);
#endif
  return dshost::linear(x, weight, bias, bias_gradient);
}

}  // namespace dshost_models
