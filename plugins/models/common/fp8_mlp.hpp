// A transformer's MLP, proj(GELU(fc(x))) with GPT-2's tanh GELU, with both layers in fp8 as
// fp8_linear.hpp's and GELU inside their casts: forward casts GELU(fc's output) straight to
// e4m3 as proj's input, and backward casts (proj's input gradient x GELU'(fc's output))
// straight to e5m2 as fc's output gradient, fc's bias gradient summed in the same pass. The
// two bf16 [rows, 4 x width] matrices that ATen's GELU and its gradient would write and read
// again are never made; fc's bf16 output is kept for backward, as ATen's GELU keeps it.
//
// Taken where both layers take fp8 (Fp8Linear::takes) and have biases; elsewhere the layers
// as fp8_linear and ATen's GELU between them.
#pragma once

#include "fp8_linear.hpp"

#include <torch/nn/functional/activation.h>

namespace dshost_models {

// The two layers' delayed-scaling states (null: the current scaling).
struct Fp8MlpScaling {
  Fp8Scaling* fc = nullptr;
  Fp8Scaling* proj = nullptr;
};

#if DSHOST_CUDA_FP8
struct Fp8GeluMlp : torch::autograd::Function<Fp8GeluMlp> {
  static bool takes(const at::Tensor& x, const at::Tensor& fc_weight, const at::Tensor& fc_bias,
                    const at::Tensor& proj_weight, const at::Tensor& proj_bias) {
    return Fp8Linear::takes(x, fc_weight, fc_bias) && fc_bias.defined() && proj_bias.defined() &&
           proj_weight.dim() == 2 && proj_weight.size(1) == fc_weight.size(0) &&
           proj_weight.size(0) % 16 == 0 && proj_weight.scalar_type() == at::kBFloat16 &&
           proj_bias.scalar_type() == at::kBFloat16;
  }

  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                            const at::Tensor& fc_weight, const at::Tensor& fc_bias,
                            const at::Tensor& proj_weight, const at::Tensor& proj_bias,
                            Fp8MlpScaling scaling) {
    const Fp8Forward fc = fp8_forward(x.reshape({-1, x.size(-1)}), fc_weight, fc_bias, scaling.fc);
    const Fp8Forward proj =
        fp8_forward(fc.output, proj_weight, proj_bias, scaling.proj, Fp8Source::gelu);
    ctx->save_for_backward({fc.input.columns, fc.input.inverse_scale, fc.weight.columns,
                            fc.weight.inverse_scale, fc.output, proj.input.columns,
                            proj.input.inverse_scale, proj.weight.columns,
                            proj.weight.inverse_scale});
    keep_scaling(ctx, "fc_scaling", scaling.fc);
    keep_scaling(ctx, "proj_scaling", scaling.proj);
    // the parameters themselves, whose grads may be bound
    ctx->saved_data["fc_weight"] = fc_weight;
    ctx->saved_data["fc_bias"] = fc_bias;
    ctx->saved_data["proj_weight"] = proj_weight;
    ctx->saved_data["proj_bias"] = proj_bias;
    return unflatten_rows(proj.output, x.sizes());
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto parameter = [&](const char* name) { return ctx->saved_data[name].toTensor(); };
    Fp8Scaling* fc_scaling = kept_scaling(ctx, "fc_scaling");
    Fp8Scaling* proj_scaling = kept_scaling(ctx, "proj_scaling");
    const at::Tensor g = grads[0].reshape({-1, grads[0].size(-1)}).to(at::kBFloat16);
    const Fp8Matrix gq = to_fp8(g, Fp8Format::e5m2, /*column_sums=*/true,
                                proj_scaling != nullptr ? &proj_scaling->grad : nullptr);
    const Fp8Gradients proj = fp8_backward(
        gq, {{}, saved[5], saved[6], {}}, {{}, saved[7], saved[8], {}}, parameter("proj_weight"),
        parameter("proj_bias"), {true, ctx->needs_input_grad(3), /*weight_into_buffer=*/true});
    const at::Tensor& fc_output = saved[4];
    const Fp8Matrix hq = to_fp8(proj.input, Fp8Format::e5m2, /*column_sums=*/true,
                                fc_scaling != nullptr ? &fc_scaling->grad : nullptr,
                                Fp8Source::gelu_gradient, fc_output);
    const Fp8Gradients fc = fp8_backward(
        hq, {{}, saved[0], saved[1], {}}, {{}, saved[2], saved[3], {}}, parameter("fc_weight"),
        parameter("fc_bias"), {ctx->needs_input_grad(0), ctx->needs_input_grad(1), true});
    return {
        unflatten_rows(fc.input, grads[0].sizes()), fc.weight, fc.bias, proj.weight, proj.bias, {}};
  }
};
#endif

// proj(GELU(fc(x))): Fp8GeluMlp where it takes the tensors, else the layers as fp8_linear.
inline at::Tensor fp8_gelu_mlp(const at::Tensor& x, const at::Tensor& fc_weight,
                               const at::Tensor& fc_bias, const at::Tensor& proj_weight,
                               const at::Tensor& proj_bias, Fp8MlpScaling scaling = {}) {
#if DSHOST_CUDA_FP8
  if (Fp8GeluMlp::takes(x, fc_weight, fc_bias, proj_weight, proj_bias))
    return Fp8GeluMlp::apply(x, fc_weight, fc_bias, proj_weight, proj_bias, scaling);
#endif
  const at::Tensor act =
      torch::nn::functional::gelu(fp8_linear(x, fc_weight, fc_bias, {scaling.fc}),
                                  torch::nn::functional::GELUFuncOptions().approximate("tanh"));
  return fp8_linear(act, proj_weight, proj_bias, {scaling.proj});
}

}  // namespace dshost_models
