// Squeeze-excitation, x * sigmoid(fc2(silu(fc1(mean over space of x)))) with fc1 and fc2 1x1
// convolutions, as one autograd function. Backward reads dy and x once for the scale's
// gradient, takes the small layers' gradients on [samples, channels] by hand, and writes
// dx = dy * scale + d(mean) / pixels in one pass, where autograd's graph of the same ops
// writes dy * x, dy * scale and the mean's gradient apart and then adds x's two paths. On a
// GPU over channels-last bf16, the scaling and the scale's gradient are
// cuda_channel_scale.h's kernels.
#pragma once

#include <dshost/torch.hpp>

#include <torch/autograd.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/conv.h>

#if DSHOST_CUDA_CHANNEL_SCALE
#include "cuda_channel_scale.h"
#include "cuda_tensors.hpp"
#endif

namespace dshost_models {

#if DSHOST_CUDA_CHANNEL_SCALE
inline ChannelScaleShape channel_scale_shape(const at::Tensor& x) {
  return {x.size(0), x.size(2) * x.size(3), x.size(1)};
}

inline bool channel_kernels_take(const at::Tensor& x, const at::Tensor& other) {
  return bf16_on_gpu(x) && other.scalar_type() == at::kBFloat16 &&
         cuda_channel_scale_takes(channel_scale_shape(x));
}
#endif

// x [N, C, H, W] * scale [N, C] (+ shift [N, C] where defined), scale and shift broadcast
// over H x W.
inline at::Tensor scale_channels(const at::Tensor& x, const at::Tensor& scale,
                                 const at::Tensor& shift) {
#if DSHOST_CUDA_CHANNEL_SCALE
  if (channel_kernels_take(x, scale)) {
    const at::Tensor in = channels_last_aligned16(x), factors = aligned16(scale),
                     y = at::empty_like(in);
    const at::Tensor terms = shift.defined() ? aligned16(shift.to(at::kFloat)) : at::Tensor();
    check_launch(cuda_channel_scale(bf16_bits(in), bf16_bits(factors),
                                    terms.defined() ? terms.data_ptr<float>() : nullptr,
                                    bf16_bits(y), channel_scale_shape(in), stream_of(in)),
                 "channel scale");
    return y;
  }
#endif
  const int64_t n = x.size(0), c = x.size(1);
  at::Tensor y = at::empty_like(x);
  if (shift.defined())
    at::addcmul_out(y, shift.view({n, c, 1, 1}), x, scale.view({n, c, 1, 1}));
  else
    at::mul_out(y, x, scale.view({n, c, 1, 1}));
  return y;
}

// For each sample and channel of dy and x [N, C, H, W], the sum over H x W of dy * x, [N, C]
// in fp32 (in x's dtype where that is wider).
inline at::Tensor channel_dot(const at::Tensor& dy, const at::Tensor& x) {
#if DSHOST_CUDA_CHANNEL_SCALE
  if (channel_kernels_take(x, dy)) {
    const at::Tensor a = channels_last_aligned16(dy), b = channels_last_aligned16(x);
    const ChannelScaleShape shape = channel_scale_shape(b);
    const auto fp32 = x.options().dtype(at::kFloat);
    const at::Tensor out = at::empty({shape.samples, shape.channels}, fp32),
                     scratch = at::empty({cuda_channel_dot_scratch(shape)}, fp32);
    check_launch(cuda_channel_dot(bf16_bits(a), bf16_bits(b), out.data_ptr<float>(),
                                  scratch.data_ptr<float>(), shape, stream_of(b)),
                 "channel dot");
    return out;
  }
#endif
  return (dy * x).sum({2, 3}, false, at::promote_types(x.scalar_type(), at::kFloat));
}

// Inputs: x [N, C, H, W], fc1's weight [S, C, 1, 1] and bias [S], fc2's weight [C, S, 1, 1]
// and bias [C].
struct SqueezeExcitationFunction : torch::autograd::Function<SqueezeExcitationFunction> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                            const at::Tensor& w1, const at::Tensor& b1, const at::Tensor& w2,
                            const at::Tensor& b2) {
    const at::Tensor pooled = x.mean({2, 3}), z1 = at::linear(pooled, w1.flatten(1), b1),
                     h = at::silu(z1), scale = at::linear(h, w2.flatten(1), b2).sigmoid();
    ctx->save_for_backward({x, pooled, z1, h, scale, w1, w2});
    return scale_channels(x, scale, {});
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &pooled = saved[1], &z1 = saved[2], &h = saved[3],
                     &scale = saved[4], &w1 = saved[5], &w2 = saved[6], &dy = grads[0];
    const at::Tensor dscale = channel_dot(dy, x).to(scale.scalar_type());
    const at::Tensor dz2 = at::sigmoid_backward(dscale, scale);
    const at::Tensor dz1 = at::silu_backward(dz2.mm(w2.flatten(1)), z1);
    const at::Tensor dpooled = dz1.mm(w1.flatten(1)) / (x.size(2) * x.size(3));
    const at::Tensor dx = scale_channels(dy, scale, dpooled);
    return {dx, dz1.t().mm(pooled).reshape(w1.sizes()), dz1.sum(0),
            dz2.t().mm(h).reshape(w2.sizes()), dz2.sum(0)};
  }
};

// The layer: fc1 and fc2 are 1x1 convolutions (their names, shapes and initialization as
// torchvision has them), `squeeze` channels in between.
struct SqueezeExcitationImpl : torch::nn::Module {
  SqueezeExcitationImpl(int64_t channels, int64_t squeeze)
      : fc1(register_module("fc1",
                            torch::nn::Conv2d(torch::nn::Conv2dOptions(channels, squeeze, 1)))),
        fc2(register_module("fc2",
                            torch::nn::Conv2d(torch::nn::Conv2dOptions(squeeze, channels, 1)))) {}
  at::Tensor forward(const at::Tensor& x) {
    return SqueezeExcitationFunction::apply(x, fc1->weight, fc1->bias, fc2->weight, fc2->bias);
  }
  torch::nn::Conv2d fc1, fc2;
};
TORCH_MODULE(SqueezeExcitation);

}  // namespace dshost_models
