// Activation checkpointing's autograd function (Model::checkpoint_activations): a unit's
// forward run again in backward instead of keeping its activations.
#pragma once

#include <dshost/torch.hpp>

#include <ATen/Context.h>
#include <torch/autograd.h>
#if DSHOST_TORCH_CUDA
#include <c10/cuda/CUDAGraphsC10Utils.h>  // the current stream's capture status
#endif

#include <functional>
#include <mutex>

namespace dshost {
namespace detail {

// A unit run without keeping its activations (see Model::checkpoint_activations): forward
// keeps its input, and backward runs the unit again from it with autograd on, the autocast
// of the first run and, if asked, its random numbers, then backpropagates through that run.
struct Recomputed : torch::autograd::Function<Recomputed> {
  struct Unit : torch::CustomClassHolder {
    std::function<at::Tensor(const at::Tensor&)> forward;
    bool replay_random = false;
    static c10::intrusive_ptr<Unit> make(std::function<at::Tensor(const at::Tensor&)> f,
                                         bool replay) {
      auto unit = c10::make_intrusive<Unit>();
      unit->forward = std::move(f);
      unit->replay_random = replay;
      return unit;
    }
  };

  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                            const c10::intrusive_ptr<Unit>& unit) {
    ctx->save_for_backward({x});
    ctx->saved_data["unit"] = at::IValue::make_capsule(unit);
    ctx->saved_data["autocast"] = autocast_enabled(x.device());
    if (unit->replay_random) {
      refuse_capture(x.device());
      ctx->saved_data["random"] = random_state(x.device());
    }
    return unit->forward(x);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto* unit = static_cast<const Unit*>(ctx->saved_data["unit"].toCapsule().get());
    const at::Tensor x = ctx->get_saved_variables()[0].detach().requires_grad_(true);
    at::Tensor y;
    {
      const at::Tensor after = unit->replay_random ? random_state(x.device()) : at::Tensor();
      if (after.defined()) set_random_state(x.device(), ctx->saved_data["random"].toTensor());
      at::AutoGradMode grad_mode(true);
      AutocastScope autocast(x.device(), ctx->saved_data["autocast"].toBool());
      y = unit->forward(x);
      if (after.defined()) set_random_state(x.device(), after);
    }
    torch::autograd::backward({y}, {grads[0]});
    return {x.grad(), at::Tensor()};
  }

  // Inside a CUDA graph's capture the recorded kernels' random numbers do not follow the
  // generator's state, so the second run would draw new dropout masks: refused (where the
  // plugin was built by dshost_add_plugin against a CUDA LibTorch, which says so).
  static void refuse_capture(at::Device device) {
#if DSHOST_TORCH_CUDA
    if (device.is_cuda() &&
        c10::cuda::currentStreamCaptureStatusMayInitCtx() != c10::cuda::CaptureStatus::None)
      throw Error(
          "activation checkpointing with dropout cannot run inside a CUDA graph: the recomputation "
          "would draw new dropout masks. Set train.cuda_graph = false, or the model's dropout to "
          "0.",
          DSHOST_INVALID_ARGUMENT);
#else
    (void)device;
#endif
  }

  // The state of `device`'s default random generator, and setting it.
  static at::Tensor random_state(at::Device device) {
    at::Generator generator = at::globalContext().defaultGenerator(device);
    std::lock_guard<std::mutex> lock(generator.mutex());
    return generator.get_state();
  }
  static void set_random_state(at::Device device, const at::Tensor& state) {
    at::Generator generator = at::globalContext().defaultGenerator(device);
    std::lock_guard<std::mutex> lock(generator.mutex());
    generator.set_state(state);
  }
};

}  // namespace detail

}  // namespace dshost
