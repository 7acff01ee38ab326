// Layer norm for gpt, alone and with the residual add before it: on a GPU with bf16 rows,
// cuda_layer_norm.h's kernels; elsewhere (the CPU, other dtypes, widths the kernels do not
// take) dshost::layer_norm after ATen's add, the same values up to rounding.
#pragma once

#include <dshost/ops/layer_norm.hpp>

#include <torch/autograd.h>

#if DSHOST_CUDA_LAYER_NORM
#include "cuda_layer_norm.h"
#include "cuda_tensors.hpp"
#endif

#include <array>
#include <utility>

namespace dshost_models {

#if DSHOST_CUDA_LAYER_NORM
// Whether the kernels take these tensors (residual: undefined for a layer norm alone).
inline bool cuda_layer_norm_takes(const at::Tensor& x, const at::Tensor& residual,
                                  const at::Tensor& weight, const at::Tensor& bias) {
  const auto bf16_vector = [&](const at::Tensor& t) {
    return bf16_on_gpu(t) && t.dim() == 1 && t.is_contiguous() && t.size(0) == x.size(-1);
  };
  return bf16_on_gpu(x) && x.dim() >= 1 && x.numel() > 0 && cuda_layer_norm_takes(x.size(-1)) &&
         bf16_vector(weight) && bf16_vector(bias) &&
         (!residual.defined() ||
          (residual.scalar_type() == at::kBFloat16 && residual.sizes() == x.sizes()));
}

inline LayerNormShape layer_norm_shape(const at::Tensor& t) {
  return {t.numel() / t.size(-1), t.size(-1)};
}

// The forward kernel: (x + residual, or x where residual is undefined; its layer norm).
// Keeps the normalized input and each row's mean and 1 / standard deviation ([rows] fp32)
// in ctx for layer_norm_backward.
inline std::pair<at::Tensor, at::Tensor> layer_norm_forward(torch::autograd::AutogradContext* ctx,
                                                            const at::Tensor& x,
                                                            const at::Tensor& residual,
                                                            const at::Tensor& weight,
                                                            const at::Tensor& bias, double eps) {
  const at::Tensor input = aligned16(x);
  const bool add = residual.defined();
  const at::Tensor other = add ? aligned16(residual) : at::Tensor();
  const at::Tensor sum = add ? at::empty_like(input) : input, y = at::empty_like(input);
  const LayerNormShape shape = layer_norm_shape(input);
  const auto fp32 = input.options().dtype(at::kFloat);
  const at::Tensor mean = at::empty({shape.rows}, fp32), rstd = at::empty({shape.rows}, fp32);
  check_launch(cuda_layer_norm(bf16_bits(input), add ? bf16_bits(other) : nullptr,
                               bf16_bits(weight), bf16_bits(bias), static_cast<float>(eps),
                               add ? bf16_bits(sum) : nullptr, bf16_bits(y), mean.data_ptr<float>(),
                               rstd.data_ptr<float>(), shape, stream_of(input)),
               "layer norm");
  ctx->save_for_backward({sum, mean, rstd});
  // The parameters themselves, whose grads may be buffers the strategy bound.
  ctx->saved_data["weight"] = weight;
  ctx->saved_data["bias"] = bias;
  return {sum, y};
}

// The backward kernel from dy and dsum (either undefined where no gradient came):
// {the normalized input's whole gradient, the weight's, the bias's}. Where the strategy
// bound both parameters' gradients to bf16 buffers, the kernel adds into those (as
// dshost::linear does for its weight) and the two returned are undefined: the accumulators
// get none, sparing autograd an add kernel a parameter.
inline std::array<at::Tensor, 3> layer_norm_backward(torch::autograd::AutogradContext* ctx,
                                                     const at::Tensor& dy, const at::Tensor& dsum) {
  const auto saved = ctx->get_saved_variables();
  const at::Tensor &sum = saved[0], &mean = saved[1], &rstd = saved[2];
  const at::Tensor weight = ctx->saved_data["weight"].toTensor(),
                   bias = ctx->saved_data["bias"].toTensor();
  const bool into_bound =
      bound_gradient(weight, at::kBFloat16) && bound_gradient(bias, at::kBFloat16);
  const at::Tensor g = dy.defined() ? aligned16(dy) : at::zeros_like(sum);
  const at::Tensor direct = dsum.defined() ? aligned16(dsum) : at::Tensor();
  const LayerNormShape shape = layer_norm_shape(sum);
  const at::Tensor dsum_total = at::empty_like(sum),
                   dweight = into_bound ? weight.grad() : at::empty_like(weight),
                   dbias = into_bound ? bias.grad() : at::empty_like(bias),
                   scratch =
                       at::empty({cuda_layer_norm_scratch(shape)}, sum.options().dtype(at::kFloat));
  check_launch(cuda_layer_norm_backward(
                   bf16_bits(g), direct.defined() ? bf16_bits(direct) : nullptr, bf16_bits(sum),
                   mean.data_ptr<float>(), rstd.data_ptr<float>(), bf16_bits(weight),
                   bf16_bits(dsum_total), bf16_bits(dweight), bf16_bits(dbias), into_bound,
                   scratch.data_ptr<float>(), shape, stream_of(sum)),
               "layer norm backward");
  if (into_bound) return {dsum_total, at::Tensor(), at::Tensor()};
  return {dsum_total, dweight, dbias};
}

// The kernels as autograd functions. (LibTorch's custom functions take no undefined tensor
// among their inputs, hence one for the layer norm alone and one with the add.)
struct CudaLayerNorm : torch::autograd::Function<CudaLayerNorm> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                            const at::Tensor& weight, const at::Tensor& bias, double eps) {
    return layer_norm_forward(ctx, x, at::Tensor(), weight, bias, eps).second;
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto [dx, dweight, dbias] = layer_norm_backward(ctx, grads[0], at::Tensor());
    return {dx, dweight, dbias, at::Tensor()};
  }
};

struct CudaLayerNormWithInput : torch::autograd::Function<CudaLayerNormWithInput> {
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx,
                                                const at::Tensor& x, const at::Tensor& weight,
                                                const at::Tensor& bias, double eps) {
    const auto [input, y] = layer_norm_forward(ctx, x, at::Tensor(), weight, bias, eps);
    return {input, y};
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto [dx, dweight, dbias] = layer_norm_backward(ctx, grads[1], grads[0]);
    return {dx, dweight, dbias, at::Tensor()};
  }
};

struct CudaAddLayerNorm : torch::autograd::Function<CudaAddLayerNorm> {
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx,
                                                const at::Tensor& x, const at::Tensor& residual,
                                                const at::Tensor& weight, const at::Tensor& bias,
                                                double eps) {
    const auto [sum, y] = layer_norm_forward(ctx, x, residual, weight, bias, eps);
    return {sum, y};
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto [dsum, dweight, dbias] = layer_norm_backward(ctx, grads[1], grads[0]);
    return {dsum, dsum, dweight, dbias, at::Tensor()};
  }
};
#endif

// Layer norm over x's last dimension.
inline at::Tensor layer_norm(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                             double eps) {
#if DSHOST_CUDA_LAYER_NORM
  if (cuda_layer_norm_takes(x, at::Tensor(), weight, bias))
    return CudaLayerNorm::apply(x, weight, bias, eps);
#endif
  return dshost::layer_norm(x, weight, bias, eps);
}

// (x, its layer norm): x again for the input's other uses, so that the gradient those give
// it is added to the layer norm's in the backward kernel, where autograd would add the two
// in a pass of its own.
inline std::pair<at::Tensor, at::Tensor> layer_norm_with_input(const at::Tensor& x,
                                                               const at::Tensor& weight,
                                                               const at::Tensor& bias, double eps) {
#if DSHOST_CUDA_LAYER_NORM
  if (cuda_layer_norm_takes(x, at::Tensor(), weight, bias)) {
    const auto out = CudaLayerNormWithInput::apply(x, weight, bias, eps);
    return {out[0], out[1]};
  }
#endif
  return {x, dshost::layer_norm(x, weight, bias, eps)};
}

// (x + residual, the layer norm of that sum over its last dimension).
inline std::pair<at::Tensor, at::Tensor> add_layer_norm(const at::Tensor& x,
                                                        const at::Tensor& residual,
                                                        const at::Tensor& weight,
                                                        const at::Tensor& bias, double eps) {
#if DSHOST_CUDA_LAYER_NORM
  if (cuda_layer_norm_takes(x, residual, weight, bias)) {
    const auto out = CudaAddLayerNorm::apply(x, residual, weight, bias, eps);
    return {out[0], out[1]};
  }
#endif
  at::Tensor sum = x + residual;
  at::Tensor normed = dshost::layer_norm(sum, weight, bias, eps);
  return {std::move(sum), std::move(normed)};
}

}  // namespace dshost_models
