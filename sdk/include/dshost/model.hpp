// Model plugins: derive from dshost::Model, add units in forward order, and export with
// DSHOST_MODEL_PLUGIN. The helper runs forward unit by unit, raising the unit events every
// strategy relies on, and implements the C table (dshost_model_api).
//
//   class Mlp : public dshost::Model {
//    public:
//     explicit Mlp(const dshost::Services& s) : Model(s) {
//       add_unit("hidden", torch::nn::Sequential(torch::nn::Linear(784, 64), torch::nn::ReLU()));
//       add_unit("head", torch::nn::Linear(64, 10));
//     }
//     std::vector<int64_t> input_shape() const override { return {1, 28, 28}; }
//   };
//   DSHOST_MODEL_PLUGIN(Mlp, "mlp", "1.0", "A two-layer perceptron", nullptr, 0)
#pragma once

#include <dshost/step_scalars.hpp>
#include <dshost/torch.hpp>

#include <dshost/ops/recompute.hpp>  // checkpoint_activations

#include <torch/autograd.h>
#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/nn/functional/loss.h>
#include <torch/nn/module.h>

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace dshost {

class Model : public torch::nn::Module {
 public:
  explicit Model(const Services& services) : services_(services) {}

  // Shape of one input sample, e.g. {1, 28, 28}; its dtype: float images or int64 tokens.
  virtual std::vector<int64_t> input_shape() const = 0;
  virtual at::ScalarType input_dtype() const { return at::kFloat; }
  // Shape of one sample's int64 target: {} for a class id, {T} for next-token targets.
  virtual std::vector<int64_t> target_shape() const { return {}; }
  // Forward FLOPs for one sample (multiply-add = 2), 0 if unknown; and those of one unit.
  virtual int64_t forward_flops_per_sample() const { return 0; }
  virtual int64_t unit_forward_flops(int /*unit*/) const { return 0; }
  // True: 4-D weights and inputs are kept channels-last (NHWC), which oneDNN's CPU and
  // cuDNN's convolutions run faster; the strategy's flat buffers keep that layout.
  virtual bool channels_last() const { return false; }
  // The name `dshost export` gives a parameter or buffer (named "unit.path"): override to
  // give torchvision's names where the model mirrors a torchvision one.
  virtual std::string export_name(const std::string& name) const { return name; }
  // Whether the 2-D parameter `name` is exported as its transpose (Hugging Face GPT-2's Conv1D
  // weights are [in, out] where a linear layer's are [out, in]).
  virtual bool export_transposed(const std::string& /*name*/) const { return false; }
  // The layers that run their matrix multiplies in fp8 when services().fp8() is set.
  virtual int fp8_layers() const { return 0; }
  // Default: the units in sequence. Override for other graphs; call run_unit for each unit.
  virtual at::Tensor forward(const at::Tensor& input) {
    at::Tensor x = input;
    for (size_t u = 0; u < units_.size(); ++u) x = run_unit(u, x);
    return x;
  }
  // Mean loss of a batch: cross entropy over class logits [batch, classes].
  virtual at::Tensor loss(const at::Tensor& output, const at::Tensor& target) {
    return torch::nn::functional::cross_entropy(output.to(at::kFloat), target);
  }

  struct Unit {
    std::string name;
    std::shared_ptr<torch::nn::Module> module;
    std::function<at::Tensor(const at::Tensor&)> forward;
  };
  const std::vector<Unit>& units() const { return units_; }
  const Services& services() const { return services_; }

 protected:
  // Registers `module` as the next unit. Its parameters belong to this unit alone.
  template <class M>
  M add_unit(const std::string& name, M module) {
    register_module(name, module);
    auto impl = module.ptr();
    units_.push_back(Unit{name, impl, [impl](const at::Tensor& x) { return impl->forward(x); }});
    return module;
  }

  // Takes `member`'s units as this model's next units, named PREFIX.UNIT: how an ensemble
  // runs member models through its own run_unit (and so its own unit events). Register the
  // member as submodule `prefix` first, so its parameters and buffers are named under it.
  void add_units_of(const std::string& prefix, const Model& member) {
    for (const Unit& u : member.units())
      units_.push_back(Unit{prefix + "." + u.name, u.module, u.forward});
  }

  // Activation checkpointing (Megatron's full recomputation): from here on, run_unit keeps
  // only the input of a unit whose input needs a gradient and runs the unit again in
  // backward, about a third more compute for the activations inside every unit. With
  // `replay_random`, the second run draws the random numbers the first drew (dropout's
  // masks), as PyTorch's checkpoint does with preserve_rng_state.
  void checkpoint_activations(bool replay_random) {
    recompute_ = true;
    replay_random_ = replay_random;
  }

  // Runs unit u on x, raising pre_forward / post_forward, and pre_backward when the
  // gradient of its output arrives. A recomputed unit runs again between its pre_backward
  // and grads_ready, from the parameters the strategy gathered for its backward.
  at::Tensor run_unit(size_t u, const at::Tensor& x) {
    const int unit = static_cast<int>(u);
    services_.unit_event(DSHOST_PRE_FORWARD, unit);
    at::Tensor y = recompute_ && x.requires_grad() && at::GradMode::is_enabled()
                       ? detail::Recomputed::apply(
                             x, detail::Recomputed::Unit::make(units_[u].forward, replay_random_))
                       : units_[u].forward(x);
    services_.unit_event(DSHOST_POST_FORWARD, unit);
    if (y.requires_grad()) {
      Services s = services_;
      y.register_hook([s, unit](const at::Tensor&) { s.unit_event(DSHOST_PRE_BACKWARD, unit); });
    }
    return y;
  }

 private:
  Services services_;
  std::vector<Unit> units_;
  bool recompute_ = false, replay_random_ = false;  // see checkpoint_activations
};

namespace detail {

// Runs after a parameter's gradient has been accumulated (as PyTorch's DDP reducer does).
struct AfterAccumulate : torch::autograd::FunctionPostHook {
  explicit AfterAccumulate(std::function<void()> fn) : fn(std::move(fn)) {}
  torch::autograd::variable_list operator()(const torch::autograd::variable_list& outputs,
                                            const torch::autograd::variable_list&) override {
    fn();
    return outputs;
  }
  std::function<void()> fn;
};

// Puts a module in eval mode for a scope, then back in training mode.
struct EvalMode {
  explicit EvalMode(torch::nn::Module& m) : module(m) { module.eval(); }
  ~EvalMode() { module.train(); }
  torch::nn::Module& module;
};

// One live model plugin instance: the module plus what the host bound to it.
template <class M>
class ModelInstance {
 public:
  explicit ModelInstance(const dshost_services* table) : services_(table) {
    model_ = std::make_shared<M>(services_);
    // Parameters stay in host memory: the strategy copies them into its own memory (sharded,
    // perhaps offloaded) and binds views, so the device never holds a second, whole copy of
    // the model. Buffers (batch-norm statistics) are the model's own and move now.
    for (auto& buffer : model_->buffers()) buffer.set_data(buffer.to(to_device(table->device)));
    if (model_->channels_last()) {
      // A fresh channels-last tensor, not contiguous(ChannelsLast): with a size-1 dimension
      // (conv1's [32, 1, 3, 3]) that returns the NCHW strides unchanged, which also pass as
      // channels-last, and the flat views copied from them would then tell the convolution
      // NCHW (a slow mixed-layout path, 30% of a CPU step).
      at::NoGradGuard no_grad;
      for (auto& p : model_->parameters())
        if (p.dim() == 4) {
          at::Tensor nhwc =
              at::empty(p.sizes(), p.options().memory_format(at::MemoryFormat::ChannelsLast));
          p.set_data(nhwc.copy_(p));
        }
    }
    for (const auto& unit : model_->units()) {
      std::vector<at::Tensor> params;
      std::vector<std::string> names;
      for (const auto& item : unit.module->named_parameters()) {
        params.push_back(item.value());
        names.push_back(unit.name + "." + item.key());
        export_names_[names.back()] = model_->export_name(names.back());
      }
      params_.push_back(std::move(params));
      names_.push_back(std::move(names));
    }
    for (const auto& item : model_->named_buffers()) {
      buffers_.push_back({item.key(), item.value()});
      export_names_[item.key()] = model_->export_name(item.key());
    }
    pending_ = std::make_unique<std::atomic<int>[]>(params_.size());
    for (const auto& unit : params_) trainable_.push_back(static_cast<int>(unit.size()));
  }

  void describe(dshost_model_info* out) const {
    *out = dshost_model_info{};
    out->struct_size = sizeof(dshost_model_info);
    out->unit_count = static_cast<int32_t>(params_.size());
    for (const auto& unit : params_)
      for (const auto& p : unit) out->parameter_count += p.numel();
    out->forward_flops_per_sample = model_->forward_flops_per_sample();
    out->input_ndim = copy_shape(model_->input_shape(), out->input_shape);
    out->input_dtype = detail::dl_dtype(model_->input_dtype());
    out->target_ndim = copy_shape(model_->target_shape(), out->target_shape);
    out->fp8_layers = model_->fp8_layers();
  }

  static int32_t copy_shape(const std::vector<int64_t>& shape, int64_t (&out)[8]) {
    if (shape.size() > 8) throw Error("a sample shape has more than 8 dimensions", DSHOST_INTERNAL);
    std::copy(shape.begin(), shape.end(), out);
    return static_cast<int32_t>(shape.size());
  }

  int param_count(int unit) const { return static_cast<int>(at_unit(unit).size()); }

  void param(int unit, int index, dshost_param_desc* out) const {
    const auto& p = at_param(unit, index);
    out->struct_size = sizeof(dshost_param_desc);
    out->name = names_[unit][index].c_str();
    out->value = to_dlpack(p.detach());
    out->export_name = export_names_.at(names_[unit][index]).c_str();
    out->export_transposed = model_->export_transposed(names_[unit][index]);
  }

  int64_t unit_flops(int unit) const {
    at_unit(unit);  // checks the index
    return model_->unit_forward_flops(unit);
  }

  int buffer_count() const { return static_cast<int>(buffers_.size()); }

  void buffer(int index, dshost_param_desc* out) const {
    if (index < 0 || index >= buffer_count())
      throw Error("buffer index " + std::to_string(index) + " out of range", DSHOST_INTERNAL);
    out->struct_size = sizeof(dshost_param_desc);
    out->name = buffers_[index].first.c_str();
    out->value = to_dlpack(buffers_[index].second);
    out->export_name = export_names_.at(buffers_[index].first).c_str();
    out->export_transposed = 0;
  }

  // An undefined `grad` freezes the parameter: no gradient, and its unit's grads_ready waits
  // for its other parameters only.
  void bind_param(int unit, int index, at::Tensor value, at::Tensor grad) {
    at::Tensor& p = at_param(unit, index);
    // The strategy picks the dtype (bf16 under mixed precision); shape and layout stay.
    const bool frozen = !grad.defined();
    const at::Tensor& laid_out = frozen ? value : grad;
    if (!value.sizes().equals(p.sizes()) || !laid_out.sizes().equals(p.sizes()) ||
        laid_out.scalar_type() != value.scalar_type() || !same_layout(laid_out, p))
      throw Error(
          "bind_param: " + names_[unit][index] + " got a view of another shape or memory layout",
          DSHOST_INTERNAL);
    {
      at::NoGradGuard no_grad;
      p.set_data(value);
    }
    if (frozen) {
      p.set_requires_grad(false);
      --trainable_[unit];
      return;
    }
    p.mutable_grad() = grad;
    // set_data can replace the accumulator, so hook it only now, and keep it alive.
    auto accumulator = torch::autograd::impl::grad_accumulator(p);
    accumulator->add_post_hook(std::make_unique<AfterAccumulate>([this, unit] {
      if (--pending_[unit] == 0) services_.unit_event(DSHOST_GRADS_READY, unit);
    }));
    accumulators_.push_back(std::move(accumulator));
  }

  void bind_batch(at::Tensor inputs, at::Tensor targets) {
    inputs_ = std::move(inputs);
    targets_ = std::move(targets);
  }

  // Returns the micro-batch's mean loss, still on the device.
  at::Tensor forward_backward(int64_t batch, double loss_scale) {
    check_batch(batch);
    for (size_t u = 0; u < params_.size(); ++u) pending_[u] = trainable_[u];
    at::Tensor loss;
    {
      AutocastScope autocast(to_device(services_.device()), services_.precision() == DSHOST_BF16);
      loss = model_->loss(model_->forward(rows(inputs_, batch)), targets_.narrow(0, 0, batch));
    }
    (loss * loss_scale).backward();
    return loss.detach();
  }

  at::Tensor predict(int64_t batch) {
    check_batch(batch);
    at::NoGradGuard no_grad;
    EvalMode eval_mode(*model_);
    AutocastScope autocast(to_device(services_.device()), services_.precision() == DSHOST_BF16);
    return model_->forward(rows(inputs_, batch)).to(at::kFloat);
  }

  void evaluate(int64_t batch, dshost_eval_result* out) {
    check_batch(batch);
    at::NoGradGuard no_grad;
    EvalMode eval_mode(*model_);  // dropout off, batch norm on its running statistics
    AutocastScope autocast(to_device(services_.device()), services_.precision() == DSHOST_BF16);
    const at::Tensor target = targets_.narrow(0, 0, batch);
    const at::Tensor output = model_->forward(rows(inputs_, batch));
    out->struct_size = sizeof(dshost_eval_result);
    const at::Tensor loss = model_->loss(output, target);
    out->loss_sum = loss.item<double>() * static_cast<double>(target.numel());
    out->correct = output.argmax(-1).eq(target).sum().item<int64_t>();
    out->count = target.numel();  // samples, or tokens
  }

 private:
  const std::vector<at::Tensor>& at_unit(int unit) const {
    if (unit < 0 || unit >= static_cast<int>(params_.size()))
      throw Error("unit index " + std::to_string(unit) + " out of range", DSHOST_INTERNAL);
    return params_[unit];
  }
  at::Tensor& at_param(int unit, int index) {
    return const_cast<at::Tensor&>(static_cast<const ModelInstance*>(this)->at_param(unit, index));
  }
  const at::Tensor& at_param(int unit, int index) const {
    const auto& ps = at_unit(unit);
    if (index < 0 || index >= static_cast<int>(ps.size()))
      throw Error("parameter index " + std::to_string(index) + " out of range", DSHOST_INTERNAL);
    return ps[index];
  }
  // Same strides wherever a dimension has more than one element (a size-1 dimension's
  // stride is arbitrary, and some DLPack producers, ATen's among them, normalise it).
  static bool same_layout(const at::Tensor& a, const at::Tensor& b) {
    for (int64_t d = 0; d < a.dim(); ++d)
      if (a.size(d) > 1 && a.stride(d) != b.stride(d)) return false;
    return true;
  }
  // The first `batch` input rows, in the model's preferred memory format.
  at::Tensor rows(const at::Tensor& t, int64_t batch) const {
    at::Tensor x = t.narrow(0, 0, batch);
    return model_->channels_last() && x.dim() == 4 ? x.contiguous(at::MemoryFormat::ChannelsLast)
                                                   : x;
  }
  void check_batch(int64_t batch) const {
    if (!inputs_.defined()) throw Error("bind_batch was not called", DSHOST_INTERNAL);
    if (batch <= 0 || batch > inputs_.size(0))
      throw Error("batch " + std::to_string(batch) + " outside the bound buffer", DSHOST_INTERNAL);
  }

  Services services_;
  std::shared_ptr<M> model_;
  std::vector<std::vector<at::Tensor>> params_;  // [unit][index], the module's own tensors
  std::vector<std::vector<std::string>> names_;
  std::vector<std::pair<std::string, at::Tensor>> buffers_;  // named as the module names them
  std::map<std::string, std::string> export_names_;          // of parameters and buffers
  std::vector<int> trainable_;                               // per unit: params not frozen
  std::unique_ptr<std::atomic<int>[]> pending_;              // per unit: params still without grads
  std::vector<std::shared_ptr<torch::autograd::Node>> accumulators_;
  at::Tensor inputs_, targets_;
};

template <class M>
ModelInstance<M>* as(dshost_model* m) {
  return reinterpret_cast<ModelInstance<M>*>(m);
}

}  // namespace detail

// The C table for model class M.
template <class M>
const dshost_model_api* model_api() {
  using detail::as;
  static const dshost_model_api api = {
      sizeof(dshost_model_api),
      [](const dshost_services* s, dshost_model** out, dshost_error* err) {
        return guarded(
            err, [&] { *out = reinterpret_cast<dshost_model*>(new detail::ModelInstance<M>(s)); });
      },
      [](dshost_model* m) { delete as<M>(m); },
      [](dshost_model* m, dshost_model_info* out, dshost_error* err) {
        return guarded(err, [&] { as<M>(m)->describe(out); });
      },
      [](dshost_model* m, int32_t unit, int32_t* out, dshost_error* err) {
        return guarded(err, [&] { *out = as<M>(m)->param_count(unit); });
      },
      [](dshost_model* m, int32_t unit, int32_t index, dshost_param_desc* out, dshost_error* err) {
        return guarded(err, [&] { as<M>(m)->param(unit, index, out); });
      },
      [](dshost_model* m, int32_t unit, int32_t index, DLManagedTensor* value,
         DLManagedTensor* grad, dshost_error* err) {
        return guarded(err, [&] {
          as<M>(m)->bind_param(unit, index, from_dlpack(value),
                               grad != nullptr ? from_dlpack(grad) : at::Tensor());
        });
      },
      [](dshost_model* m, DLManagedTensor* inputs, DLManagedTensor* targets, dshost_error* err) {
        return guarded(err,
                       [&] { as<M>(m)->bind_batch(from_dlpack(inputs), from_dlpack(targets)); });
      },
      [](dshost_model* m, int64_t batch, double loss_scale, dshost_step_result* out,
         dshost_error* err) {
        return guarded(err, [&] {
          out->loss = hand_loss(*out, as<M>(m)->forward_backward(batch, loss_scale));
          out->struct_size = sizeof(dshost_step_result);
        });
      },
      [](dshost_model* m, int64_t batch, dshost_eval_result* out, dshost_error* err) {
        return guarded(err, [&] { as<M>(m)->evaluate(batch, out); });
      },
      [](dshost_model* m, int64_t batch, DLManagedTensor** out, dshost_error* err) {
        return guarded(err, [&] { *out = to_dlpack(as<M>(m)->predict(batch)); });
      },
      [](dshost_model* m, int32_t* out, dshost_error* err) {
        return guarded(err, [&] { *out = as<M>(m)->buffer_count(); });
      },
      [](dshost_model* m, int32_t index, dshost_param_desc* out, dshost_error* err) {
        return guarded(err, [&] { as<M>(m)->buffer(index, out); });
      },
      [](dshost_model* m, int32_t unit, int64_t* out, dshost_error* err) {
        return guarded(err, [&] { *out = as<M>(m)->unit_flops(unit); });
      },
  };
  return &api;
}

}  // namespace dshost

#define DSHOST_MODEL_PLUGIN(CLASS, NAME, VERSION, DESCRIPTION, OPTIONS, OPTION_COUNT)       \
  DSHOST_DEFINE_PLUGIN(DSHOST_KIND_MODEL, NAME, VERSION, DESCRIPTION, DSHOST_TORCH_VERSION, \
                       OPTIONS, OPTION_COUNT, ::dshost::model_api<CLASS>())
