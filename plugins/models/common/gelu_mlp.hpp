// A transformer's MLP with the residual stream added, residual + proj(GELU(fc(x))) with GPT-2's
// tanh GELU, in bf16 with GELU in fc's cuBLASLt epilogues (cuda_gelu_gemm.h), as Transformer
// Engine's LayerNormMLP does: forward's product writes GELU's output and its input, and
// backward's product through proj applies GELU's derivative, where ATen's GELU would take a
// pass of its own over [rows, 4 x width] matrices each way. proj's product adds the residual
// (beta = 1), where an add of its own would read both matrices again. Both layers' weight and
// bias gradients come from bf16_linear.hpp's linear_gradients (fc's bias gradient not from
// DGELU_BGRAD: at half DGELU's speed), added into bound buffers as dshost::linear's are.
//
// Taken for bf16 input and parameters on a GPU, both layers with a bias and every width a
// multiple of 8, in builds with cuBLASLt; elsewhere the two layers as dshost::linear and
// ATen's GELU between them.
#pragma once

#include "bf16_linear.hpp"
#include "bias_gradient.hpp"

#include <dshost/ops/linear.hpp>

#include <torch/nn/functional/activation.h>

#if DSHOST_CUDA_GELU_GEMM
#include "cuda_gelu_gemm.h"
#include "cuda_tensors.hpp"

#include <torch/autograd.h>
#endif

namespace dshost_models {

#if DSHOST_CUDA_GELU_GEMM
struct GeluMlp : torch::autograd::Function<GeluMlp> {
  static bool takes(const at::Tensor& x, const at::Tensor& residual, const at::Tensor& fc_weight,
                    const at::Tensor& fc_bias, const at::Tensor& proj_weight,
                    const at::Tensor& proj_bias) {
    return bf16_on_gpu(x) && bf16_on_gpu(fc_weight) && bf16_on_gpu(fc_bias) &&
           bf16_on_gpu(proj_weight) && bf16_on_gpu(proj_bias) && x.numel() > 0 &&
           fc_weight.dim() == 2 && proj_weight.dim() == 2 && x.size(-1) == fc_weight.size(1) &&
           proj_weight.size(1) == fc_weight.size(0) && x.size(-1) % 8 == 0 &&
           fc_weight.size(0) % 8 == 0 && proj_weight.size(0) % 8 == 0 &&
           (!residual.defined() || residual.numel() == 0 ||
            (bf16_on_gpu(residual) && residual.sizes() == output_shape(x, proj_weight)));
  }

  // x's shape with proj's output width last.
  static std::vector<int64_t> output_shape(const at::Tensor& x, const at::Tensor& proj_weight) {
    std::vector<int64_t> shape = x.sizes().vec();
    shape.back() = proj_weight.size(0);
    return shape;
  }

  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                            const at::Tensor& residual, const at::Tensor& fc_weight,
                            const at::Tensor& fc_bias, const at::Tensor& proj_weight,
                            const at::Tensor& proj_bias) {
    const at::Tensor rows = aligned16(x.reshape({-1, x.size(-1)}));
    const at::Tensor w = aligned16(fc_weight), b = aligned16(fc_bias);
    const int64_t m = rows.size(0), n = w.size(0), k = w.size(1);
    const at::Tensor pre = at::empty({m, n}, rows.options()),
                     act = at::empty({m, n}, rows.options());
    const at::Tensor workspace = gemm_workspace(rows);
    check_launch(
        cuda_gelu_linear(bf16_bits(rows), bf16_bits(w), bf16_bits(b), m, n, k, bf16_bits(act),
                         bf16_bits(pre), workspace.data_ptr(), stream_of(rows)),
        "GELU linear");
    ctx->save_for_backward({rows, pre, act});
    ctx->saved_data["fc_weight"] = fc_weight;  // the parameters, whose grads may be bound
    ctx->saved_data["proj_weight"] = proj_weight;
    const at::Tensor out = at::empty({m, proj_weight.size(0)}, rows.options());
    const bool added = residual.numel() > 0;  // no residual is an empty tensor
    const at::Tensor residual_rows = added ? aligned16(residual.reshape(out.sizes())) : out;
    check_launch(cuda_residual_linear(bf16_bits(act), bf16_bits(aligned16(proj_weight)),
                                      bf16_bits(aligned16(proj_bias)),
                                      added ? bf16_bits(residual_rows) : nullptr, m, out.size(1), n,
                                      bf16_bits(out), workspace.data_ptr(), stream_of(rows)),
                 "residual linear");
    return out.view(output_shape(x, proj_weight));
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &rows = saved[0], &pre = saved[1], &act = saved[2];
    const at::Tensor fc_weight = ctx->saved_data["fc_weight"].toTensor();
    const at::Tensor proj_weight = ctx->saved_data["proj_weight"].toTensor();
    const at::Tensor g = aligned16(grads[0].reshape({-1, grads[0].size(-1)}).to(at::kBFloat16));
    const at::Tensor w = aligned16(proj_weight);
    const int64_t m = g.size(0), n = pre.size(1), k = g.size(1);
    const at::Tensor d_pre = at::empty({m, n}, g.options());
    const at::Tensor workspace = gemm_workspace(g);
    check_launch(cuda_gelu_linear_backward(bf16_bits(g), bf16_bits(w), bf16_bits(pre), m, n, k,
                                           bf16_bits(d_pre), /*bias_gradient=*/nullptr,
                                           workspace.data_ptr(), stream_of(g)),
                 "GELU linear's backward");
    at::Tensor dx;
    if (ctx->needs_input_grad(0)) {
      std::vector<int64_t> shape = grads[0].sizes().vec();
      shape.back() = fc_weight.size(1);
      dx = d_pre.mm(fc_weight).view(shape);
    }
    const auto [d_fc_weight, d_fc_bias] = linear_gradients(
        fc_weight, ctx->needs_input_grad(2), ctx->needs_input_grad(3), d_pre, rows, workspace);
    const auto [d_proj_weight, d_proj_bias] = linear_gradients(
        proj_weight, ctx->needs_input_grad(4), ctx->needs_input_grad(5), g, act, workspace);
    const at::Tensor d_residual = ctx->needs_input_grad(1) ? grads[0] : at::Tensor();
    return {dx, d_residual, d_fc_weight, d_fc_bias, d_proj_weight, d_proj_bias};
  }
};
#endif

// residual + proj(GELU(fc(x))), or proj(GELU(fc(x))) where residual is undefined: GeluMlp where
// it takes the tensors, else the unfused layers.
inline at::Tensor gelu_mlp(const at::Tensor& x, const at::Tensor& fc_weight,
                           const at::Tensor& fc_bias, const at::Tensor& proj_weight,
                           const at::Tensor& proj_bias, const at::Tensor& residual = {}) {
#if DSHOST_CUDA_GELU_GEMM
  if (GeluMlp::takes(x, residual, fc_weight, fc_bias, proj_weight, proj_bias))
    // A custom Function takes no undefined tensor: no residual is an empty one.
    return GeluMlp::apply(x, residual.defined() ? residual : at::empty({0}, x.options()), fc_weight,
                          fc_bias, proj_weight, proj_bias);
#endif
  const at::Tensor act =
      torch::nn::functional::gelu(dshost::linear(x, fc_weight, fc_bias, bias_gradient),
                                  torch::nn::functional::GELUFuncOptions().approximate("tanh"));
  const at::Tensor out = dshost::linear(act, proj_weight, proj_bias, bias_gradient);
  return residual.defined() ? residual + out : out;
}

}  // namespace dshost_models
