// Batch norm with the activation after it, for the image models: BatchNorm2d's parameters
// and buffers under its names, its forward, and the activation. On a GPU in training, over
// channels-last bf16 activations, cuda_batch_norm.h's kernels do both in one pass each way;
// elsewhere (the CPU, evaluation, other dtypes or layouts) ATen's batch norm and
// activation, the same values up to rounding.
#pragma once

#include "activation.h"

#include <dshost/torch.hpp>

#include <torch/autograd.h>
#include <torch/nn/module.h>

#if DSHOST_CUDA_BATCH_NORM
#include "cuda_batch_norm.h"
#include "cuda_tensors.hpp"
#endif

namespace dshost_models {

inline at::Tensor activate(at::Tensor x, Act act) {
  switch (act) {
    case Act::relu:
      return x.relu_();
    case Act::relu6:
      return at::hardtanh_(x, 0, 6);
    case Act::silu:
      return at::silu(x);
    case Act::none:
      break;
  }
  return x;
}

#if DSHOST_CUDA_BATCH_NORM
// Inputs: x, weight, bias, running mean, running variance, batches tracked, momentum, eps,
// the activation. Gradients for x, weight and bias.
struct CudaBatchNormAct : torch::autograd::Function<CudaBatchNormAct> {
  static BatchNormShape shape_of(const at::Tensor& x) { return {x.numel() / x.size(1), x.size(1)}; }

  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x_in,
                            const at::Tensor& weight, const at::Tensor& bias,
                            const at::Tensor& running_mean, const at::Tensor& running_var,
                            const at::Tensor& batches_tracked, double momentum, double eps,
                            int64_t act) {
    const at::Tensor x = channels_last_aligned16(x_in), y = at::empty_like(x);
    const BatchNormShape shape = shape_of(x);
    const auto fp32 = x.options().dtype(at::kFloat);
    const at::Tensor stats = at::empty({4, shape.channels}, fp32),
                     scratch = at::empty({cuda_batch_norm_scratch(shape)}, fp32);
    // The counter is a long as BatchNorm2d has it, but Module::to(dtype) converts it too.
    const bool count_in_kernel = batches_tracked.scalar_type() == at::kLong;
    const BatchNormParams params{weight.data_ptr(),
                                 bias.data_ptr(),
                                 running_mean.data_ptr(),
                                 running_var.data_ptr(),
                                 count_in_kernel ? batches_tracked.data_ptr<int64_t>() : nullptr,
                                 weight.scalar_type() == at::kFloat,
                                 running_mean.scalar_type() == at::kFloat,
                                 static_cast<float>(momentum),
                                 static_cast<float>(eps)};
    if (!count_in_kernel) batches_tracked.add_(1);
    check_launch(
        cuda_batch_norm(bf16_bits(x), params, static_cast<Act>(act), bf16_bits(y),
                        stats.data_ptr<float>(), scratch.data_ptr<float>(), shape, stream_of(x)),
        "batch norm");
    ctx->save_for_backward({x, stats});
    // The parameters themselves, whose grads may be buffers the strategy bound.
    ctx->saved_data["weight"] = weight;
    ctx->saved_data["bias"] = bias;
    ctx->saved_data["act"] = act;
    return y;
  }

  // Where the strategy bound both parameters' gradients to buffers of their dtype, backward
  // adds into those (as dshost::linear does for its weight) and the accumulators get none,
  // sparing autograd an add kernel a parameter; else it returns fresh gradients.
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &stats = saved[1];
    const at::Tensor weight = ctx->saved_data["weight"].toTensor(),
                     bias = ctx->saved_data["bias"].toTensor();
    const bool into_bound =
        bound_gradient(weight, weight.scalar_type()) && bound_gradient(bias, bias.scalar_type());
    const at::Tensor dy = channels_last_aligned16(grads[0]), dx = at::empty_like(x),
                     dweight = into_bound ? weight.grad() : at::empty_like(weight),
                     dbias = into_bound ? bias.grad() : at::empty_like(bias);
    const BatchNormShape shape = shape_of(x);
    const at::Tensor scratch =
        at::empty({cuda_batch_norm_scratch(shape)}, x.options().dtype(at::kFloat));
    const BatchNormGrads into{dweight.data_ptr(), dbias.data_ptr(),
                              weight.scalar_type() == at::kFloat, into_bound};
    check_launch(
        cuda_batch_norm_backward(bf16_bits(dy), bf16_bits(x), stats.data_ptr<float>(),
                                 static_cast<Act>(ctx->saved_data["act"].toInt()), bf16_bits(dx),
                                 into, scratch.data_ptr<float>(), shape, stream_of(x)),
        "batch norm backward");
    if (into_bound) return {dx, {}, {}, {}, {}, {}, {}, {}, {}};
    return {dx, dweight, dbias, {}, {}, {}, {}, {}, {}};
  }
};
#endif

// BatchNorm2d's parameters, buffers, names, initial values and defaults (momentum 0.1, eps
// 1e-5), the activation applied after it.
struct BatchNormActImpl : torch::nn::Module {
  BatchNormActImpl(int64_t channels, Act act)
      : weight(register_parameter("weight", at::ones({channels}))),
        bias(register_parameter("bias", at::zeros({channels}))),
        running_mean(register_buffer("running_mean", at::zeros({channels}))),
        running_var(register_buffer("running_var", at::ones({channels}))),
        num_batches_tracked(register_buffer("num_batches_tracked", at::zeros({}, at::kLong))),
        act(act) {}

  at::Tensor forward(const at::Tensor& x) {
#if DSHOST_CUDA_BATCH_NORM
    if (kernels_take(x))
      return CudaBatchNormAct::apply(x, weight, bias, running_mean, running_var,
                                     num_batches_tracked, kMomentum, kEps,
                                     static_cast<int64_t>(act));
#endif
    if (is_training()) num_batches_tracked += 1;
    return activate(at::batch_norm(x, weight, bias, running_mean, running_var, is_training(),
                                   kMomentum, kEps, at::globalContext().userEnabledCuDNN()),
                    act);
  }

  static constexpr double kMomentum = 0.1, kEps = 1e-5;
  at::Tensor weight, bias, running_mean, running_var, num_batches_tracked;
  Act act;

 private:
#if DSHOST_CUDA_BATCH_NORM
  bool kernels_take(const at::Tensor& x) const {
    if (!is_training() || !bf16_on_gpu(x) || x.dim() != 4 ||
        !x.is_contiguous(at::MemoryFormat::ChannelsLast) ||
        !cuda_batch_norm_takes(CudaBatchNormAct::shape_of(x)))
      return false;
    const auto fp32_or_bf16_pair = [](const at::Tensor& a, const at::Tensor& b) {
      return a.is_cuda() && a.is_contiguous() && b.is_contiguous() &&
             (a.scalar_type() == at::kFloat || a.scalar_type() == at::kBFloat16) &&
             b.scalar_type() == a.scalar_type();
    };
    return fp32_or_bf16_pair(weight, bias) && fp32_or_bf16_pair(running_mean, running_var) &&
           num_batches_tracked.is_cuda();
  }
#endif
};
TORCH_MODULE(BatchNormAct);

}  // namespace dshost_models
