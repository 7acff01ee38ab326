// An optional kernel for model plugins: a linear layer whose backward accumulates the
// weight's gradient straight into the buffer the strategy bound.
#pragma once

#include <dshost/torch.hpp>

#include <torch/autograd.h>

#include <cstdint>

namespace dshost {

// A bias's gradient from the output's gradient g [N, out]: g's column sums, in g's dtype (a
// plugin's own kernel for them; g.sum(0) where none is given).
using BiasGradient = at::Tensor (*)(const at::Tensor& g);

namespace detail {

// at::linear whose backward adds the weight's gradient into the weight's own (see linear).
// A layer without a bias applies it to (x, weight) alone: LibTorch's custom functions take
// no undefined tensor among their inputs.
struct LinearIntoGrad : torch::autograd::Function<LinearIntoGrad> {
  static at::Tensor column_sums(const at::Tensor& g) { return g.sum(0); }

  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                            const at::Tensor& weight, BiasGradient bias_gradient,
                            const at::Tensor& bias = {}) {
    ctx->save_for_backward({x});
    ctx->saved_data["weight"] = weight;  // the parameter itself, whose grad is the bound buffer
    ctx->saved_data["bias"] = bias.defined();
    ctx->saved_data["bias_gradient"] = static_cast<int64_t>(
        reinterpret_cast<intptr_t>(bias_gradient != nullptr ? bias_gradient : column_sums));
    return at::linear(x, weight, bias);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const at::Tensor x = ctx->get_saved_variables()[0];
    const at::Tensor weight = ctx->saved_data["weight"].toTensor();
    const at::Tensor g = grads[0].reshape({-1, grads[0].size(-1)});  // [N, out]
    weight.grad().addmm_(g.t(), x.reshape({-1, x.size(-1)}));        // [out, in] += g^T x
    torch::autograd::variable_list out{
        ctx->needs_input_grad(0) ? g.mm(weight).view(x.sizes()) : at::Tensor(), at::Tensor(),
        at::Tensor()};
    const auto bias_gradient = reinterpret_cast<BiasGradient>(
        static_cast<intptr_t>(ctx->saved_data["bias_gradient"].toInt()));
    if (ctx->saved_data["bias"].toBool()) out.push_back(bias_gradient(g));
    return out;
  }
};

}  // namespace detail

// y = x W^T + b, as ATen's linear (the bias fused into the GEMM). Where W's gradient is a
// buffer the strategy bound, of W's and x's dtype with no autocast cast between them (bf16
// parameters, or fp32 ones without autocast), backward's GEMM adds W's gradient straight
// into it, as Megatron's gradient-accumulation fusion does, where autograd would compute it
// into a fresh tensor and add that in a kernel of its own (5.6 ms a step at gpt 1.3B,
// bench/results/gpu_profiles.md). W's accumulator then receives no gradient, but its hooks
// run as before. For a weight used inside its own unit only: the gradient lands between
// that unit's pre_backward and grads_ready, whereas autograd sums a tied weight's uses
// before accumulating them. The bias's gradient is then bias_gradient's, where given.
inline at::Tensor linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias = {},
                         BiasGradient bias_gradient = nullptr) {
  const at::Tensor& grad = weight.grad();
  const bool into_grad = at::GradMode::is_enabled() && weight.requires_grad() && grad.defined() &&
                         grad.scalar_type() == weight.scalar_type() &&
                         x.scalar_type() == weight.scalar_type() &&
                         (weight.scalar_type() == at::kBFloat16 || !autocast_enabled(x.device()));
  if (!into_grad) return at::linear(x, weight, bias);
  return bias.defined() ? detail::LinearIntoGrad::apply(x, weight, bias_gradient, bias)
                        : detail::LinearIntoGrad::apply(x, weight, bias_gradient);
}

}  // namespace dshost
