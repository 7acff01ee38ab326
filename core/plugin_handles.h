// The model and strategy plugins' C tables wrapped once. A handle owns its plugin instance,
// makes each call, turns a failed status into the error the user reads (rank, host, the call,
// the plugin's message, what to change when memory ran out) and makes what the plugin fills
// current (core/abi_adapters), so the rest of the host calls C++ functions that throw.
#pragma once

#include <dshost/torch.hpp>  // first: ATen's DLPack

#include "core/checkpoint.h"
#include "core/plugin_loader.h"

#include <memory>
#include <string>
#include <vector>

namespace dshost {

class Comm;

// A plugin call's error slot and the translation of its status.
class CallStatus {
 public:
  CallStatus(int rank, const Comm* comm) : rank_(rank), comm_(comm) {}
  dshost_error* err() const { return &err_; }
  const char* message() const { return err_.message; }
  // Returns for DSHOST_OK. Otherwise throws: for a collective's failure, the error of the rank
  // that failed first where Comm knows one; else a UserError "rank R on HOST: WHAT failed:
  // MESSAGE", exit code 2 for DSHOST_INVALID_ARGUMENT and 1 for the rest.
  void check(dshost_status status, const std::string& what) const;

 private:
  int rank_;
  const Comm* comm_;
  mutable dshost_error err_{sizeof(dshost_error), {}};
};

// What a user can change when an allocation in a plugin failed with `message`, in the
// manifest's terms; "" for other failures.
std::string out_of_memory_advice(const char* message);

template <class T>
using Owned = std::unique_ptr<T, void (*)(T*)>;

// A parameter's place in the model: unit and index within it.
struct ParamRef {
  int32_t unit, index;
};

// A model's buffer (batch-norm statistics), or a parameter the host holds (model.freeze), as a
// named view of its memory.
struct ModelBuffer {
  std::string name, export_name;
  at::Tensor value;
  bool export_transposed = false;  // see TensorLayout
};

class ModelHandle {
 public:
  // Creates the instance on `services` and reads what it describes.
  ModelHandle(const LoadedPlugin& plugin, const dshost_services* services,
              const CallStatus& status);
  const char* name() const { return plugin_.descriptor->name; }
  const dshost_model_info& info() const { return info_; }

  int32_t param_count(int32_t unit) const;
  // The caller owns the descriptor's value.
  dshost_param_desc param(int32_t unit, int32_t index) const;
  // `grad` null: the parameter is frozen (a model built for ABI 1.8 or later).
  void bind_param(int32_t unit, int32_t index, DLManagedTensor* value, DLManagedTensor* grad) const;
  // Every parameter's layout and names, [unit][index].
  std::vector<std::vector<TensorLayout>> param_layouts() const;
  // The batch buffers, and the float scalar on the device a micro-batch's mean loss goes to.
  void bind_batch(const at::Tensor& inputs, const at::Tensor& targets, const at::Tensor& loss);
  // One micro-batch of the bound batch's first `rows` rows, gradients scaled by `scale`; its
  // mean loss lands in the bound loss scalar (written by the host for models before ABI 1.3,
  // which return it).
  void forward_backward(int64_t rows, double scale);
  dshost_eval_result evaluate(int64_t rows) const;
  std::vector<ModelBuffer> buffers() const;  // none before ABI 1.2
  int64_t unit_flops(int32_t unit) const;    // 0 where the model does not say
  bool writes_loss_on_device() const;

 private:
  const LoadedPlugin& plugin_;
  const dshost_model_api* api_;
  const CallStatus& status_;
  Owned<dshost_model> instance_{nullptr, nullptr};
  dshost_model_info info_{sizeof(dshost_model_info)};
  at::Tensor loss_;
  Owned<DLManagedTensor> loss_out_{nullptr, nullptr};
};

class StrategyHandle {
 public:
  StrategyHandle(const LoadedPlugin& plugin, const dshost_services* services,
                 const CallStatus& status);
  const char* name() const { return plugin_.descriptor->name; }

  // Why the strategy's steps cannot be captured in a CUDA graph with this configuration;
  // "" where they can.
  std::string why_not_capturable() const;
  dshost_status on_unit_event(dshost_unit_event event, int32_t unit, dshost_error* err) const;
  void begin_micro_batch(int32_t index, int32_t count) const;
  // One optimizer step at learning rate `lr`, clipping at `max_grad_norm` (<= 0: none); with
  // `skip_nonfinite` a step whose norm is not finite leaves everything as it was. The global
  // gradient norm lands in `norm` (a double scalar on the device, lent as args.grad_norm_out).
  void step(double lr, double max_grad_norm, bool skip_nonfinite, const at::Tensor& norm) const;
  dshost_memory_report memory() const;
  // Checkpoints: strategies built for ABI 1.0 / 1.1 have neither entry (`what`: "save" or
  // "load", for the error).
  void require_checkpoints(const char* what) const;
  void save(const dshost_state_io* io) const;  // throws "strategy save failed: MESSAGE"
  void load(const dshost_state_io* io) const;

  // The model's parameters `trained` ([strategy unit][index]: their places in the model) moved
  // into memory the strategy owns; the model keeps views.
  void take_parameters(const ModelHandle& model, const std::vector<std::vector<ParamRef>>& trained);

 private:
  const LoadedPlugin& plugin_;
  const dshost_strategy_api* api_;
  const CallStatus& status_;
  Owned<dshost_strategy> instance_{nullptr, nullptr};
};

// A parameter's or buffer's name in `dshost export`'s file (plugins before ABI 1.2 give
// none: their own name).
std::string export_name(const dshost_param_desc& desc);

}  // namespace dshost
