#include "core/plugin_handles.h"

#include "core/abi_adapters.h"
#include "core/comm.h"
#include "core/error.h"

#include <cmath>
#include <cstring>

namespace dshost {
namespace {

// A DLPack view of `t` for a plugin to write into during calls, freed by the host.
Owned<DLManagedTensor> lend(const at::Tensor& t) {
  return {to_dlpack(t), [](DLManagedTensor* m) { m->deleter(m); }};
}

}  // namespace

void CallStatus::check(dshost_status status, const std::string& what) const {
  if (status == DSHOST_OK) return;
  if (status == DSHOST_COMM_ERROR && comm_ != nullptr)
    throw comm_->stopped_by_another_rank(cat(what, " failed: ", err_.message));
  throw UserError(cat("rank ", rank_, " on ", hostname(), ": ", what, " failed: ", err_.message,
                      status == DSHOST_OUT_OF_MEMORY ? out_of_memory_advice(err_.message) : ""),
                  status == DSHOST_INVALID_ARGUMENT ? 2 : 1);
}

// A plugin's own out-of-memory refusal already says what to do: advice follows only the
// allocators' own messages (LibTorch's CUDA allocator, std::bad_alloc's through `guarded`).
std::string out_of_memory_advice(const char* message) {
  if (std::strstr(message, "CUDA out of memory"))
    return " The GPU's memory ran out: lower train.micro_batch_size (raise train.grad_accum_steps "
           "to keep the batch), or keep less on the GPU: strategy.plugin = \"zero2\", or "
           "\"zero3-offload\" with offload_param_device = \"cpu\" and offload_optimizer_ratio = 1.";
  if (std::strcmp(message, "out of memory") != 0) return "";
  return " The host's memory ran out: lower train.micro_batch_size, or spread the model over more "
         "nodes with strategy.plugin = \"zero2\" or \"zero3-offload\", which shard its state over "
         "ranks.";
}

std::string export_name(const dshost_param_desc& desc) {
  return desc.export_name != nullptr ? desc.export_name : desc.name;
}

// ---- model ---------------------------------------------------------------------------

ModelHandle::ModelHandle(const LoadedPlugin& plugin, const dshost_services* services,
                         const CallStatus& status)
    : plugin_(plugin), api_(plugin.api<dshost_model_api>()), status_(status) {
  dshost_model* model = nullptr;
  status_.check(api_->create(services, &model, status_.err()), "model create");
  instance_ = Owned<dshost_model>(model, api_->destroy);
  status_.check(api_->describe(model, &info_, status_.err()), "model describe");
  make_current(info_);
}

int32_t ModelHandle::param_count(int32_t unit) const {
  int32_t count = 0;
  status_.check(api_->param_count(instance_.get(), unit, &count, status_.err()),
                "model param_count");
  return count;
}

dshost_param_desc ModelHandle::param(int32_t unit, int32_t index) const {
  dshost_param_desc desc{sizeof(dshost_param_desc)};
  status_.check(api_->param(instance_.get(), unit, index, &desc, status_.err()), "model param");
  make_current(desc);
  return desc;
}

void ModelHandle::bind_param(int32_t unit, int32_t index, DLManagedTensor* value,
                             DLManagedTensor* grad) const {
  status_.check(api_->bind_param(instance_.get(), unit, index, value, grad, status_.err()),
                "model bind_param");
}

std::vector<std::vector<TensorLayout>> ModelHandle::param_layouts() const {
  std::vector<std::vector<TensorLayout>> layouts(info_.unit_count);
  for (int32_t u = 0; u < info_.unit_count; ++u)
    for (int32_t i = 0; i < param_count(u); ++i) {
      const dshost_param_desc desc = param(u, i);
      layouts[u].push_back(TensorLayout::of(desc.name, borrow(&desc.value->dl_tensor),
                                            export_name(desc), desc.export_transposed != 0));
      desc.value->deleter(desc.value);
    }
  return layouts;
}

void ModelHandle::bind_batch(const at::Tensor& inputs, const at::Tensor& targets,
                             const at::Tensor& loss) {
  status_.check(
      api_->bind_batch(instance_.get(), to_dlpack(inputs), to_dlpack(targets), status_.err()),
      "model bind_batch");
  loss_ = loss;
  loss_out_ = lend(loss);
}

void ModelHandle::forward_backward(int64_t rows, double scale) {
  dshost_step_result r{sizeof(dshost_step_result)};
  r.loss_out = &loss_out_->dl_tensor;
  status_.check(api_->forward_backward(instance_.get(), rows, scale, &r, status_.err()),
                "model forward_backward");
  if (!writes_loss_on_device()) loss_.fill_(r.loss);
}

dshost_eval_result ModelHandle::evaluate(int64_t rows) const {
  dshost_eval_result r{sizeof(dshost_eval_result)};
  status_.check(api_->evaluate(instance_.get(), rows, &r, status_.err()), "model evaluate");
  return r;
}

std::vector<ModelBuffer> ModelHandle::buffers() const {
  std::vector<ModelBuffer> out;
  if (api_->buffer_count == nullptr || api_->buffer == nullptr) return out;
  int32_t count = 0;
  status_.check(api_->buffer_count(instance_.get(), &count, status_.err()), "model buffer_count");
  for (int32_t i = 0; i < count; ++i) {
    dshost_param_desc desc{sizeof(dshost_param_desc)};
    status_.check(api_->buffer(instance_.get(), i, &desc, status_.err()), "model buffer");
    make_current(desc);
    out.push_back({desc.name, export_name(desc), from_dlpack(desc.value)});
  }
  return out;
}

int64_t ModelHandle::unit_flops(int32_t unit) const {
  int64_t flops = 0;
  if (api_->unit_flops != nullptr)
    status_.check(api_->unit_flops(instance_.get(), unit, &flops, status_.err()),
                  "model unit_flops");
  return flops;
}

bool ModelHandle::writes_loss_on_device() const {
  return dshost::writes_loss_on_device(*plugin_.descriptor);
}

// ---- strategy ------------------------------------------------------------------------

StrategyHandle::StrategyHandle(const LoadedPlugin& plugin, const dshost_services* services,
                               const CallStatus& status)
    : plugin_(plugin), api_(plugin.api<dshost_strategy_api>()), status_(status) {
  dshost_strategy* strategy = nullptr;
  status_.check(api_->create(services, &strategy, status_.err()), "strategy create");
  instance_ = Owned<dshost_strategy>(strategy, api_->destroy);
}

std::string StrategyHandle::why_not_capturable() const {
  if (api_->capturable == nullptr)
    return cat("strategy '", name(), "' is built for an ABI before 1.3");
  int32_t capturable = 0;
  status_.check(api_->capturable(instance_.get(), &capturable, status_.err()),
                "strategy capturable");
  if (capturable) return "";
  return cat("strategy '", name(),
             "' communicates during backward with this configuration (ddp: overlap_comm = "
             "false, or one rank, allows it; zero2: one rank with grad_accum_dtype the "
             "model's precision)");
}

dshost_status StrategyHandle::on_unit_event(dshost_unit_event event, int32_t unit,
                                            dshost_error* err) const {
  return api_->on_unit_event(instance_.get(), event, unit, err);
}

void StrategyHandle::begin_micro_batch(int32_t index, int32_t count) const {
  status_.check(api_->begin_micro_batch(instance_.get(), index, count, status_.err()),
                "strategy begin_micro_batch");
}

void StrategyHandle::step(double lr, double max_grad_norm, bool skip_nonfinite,
                          const at::Tensor& norm) const {
  const Owned<DLManagedTensor> norm_out = lend(norm);
  const dshost_step_args args{sizeof(dshost_step_args), lr, max_grad_norm, &norm_out->dl_tensor,
                              skip_nonfinite};
  dshost_step_stats stats{sizeof(dshost_step_stats)};
  status_.check(api_->step(instance_.get(), &args, &stats, status_.err()), "strategy step");
  if (!std::isnan(stats.grad_norm) || !may_write_norm_on_device(*plugin_.descriptor))
    norm.fill_(stats.grad_norm);
}

dshost_memory_report StrategyHandle::memory() const {
  dshost_memory_report mem{sizeof(dshost_memory_report)};
  status_.check(api_->memory(instance_.get(), &mem, status_.err()), "strategy memory");
  return mem;
}

void StrategyHandle::require_checkpoints(const char* what) const {
  if (api_->save == nullptr || api_->load == nullptr)
    throw UserError(
        cat("strategy '", name(), "' cannot ", what, " checkpoints (built for an ABI before 1.2)"));
}

void StrategyHandle::save(const dshost_state_io* io) const {
  require_checkpoints("save");
  if (api_->save(instance_.get(), io, status_.err()) != DSHOST_OK)
    throw UserError(cat("strategy save failed: ", status_.message()), 1);
}

void StrategyHandle::load(const dshost_state_io* io) const {
  require_checkpoints("load");
  status_.check(api_->load(instance_.get(), io, status_.err()), "strategy load");
}

void StrategyHandle::take_parameters(const ModelHandle& model,
                                     const std::vector<std::vector<ParamRef>>& trained) {
  const auto units = static_cast<int32_t>(trained.size());
  std::vector<std::vector<Owned<DLManagedTensor>>> values(units);
  std::vector<std::vector<const DLTensor*>> dl(units);
  std::vector<dshost_unit_params> unit_params;
  for (int32_t s = 0; s < units; ++s) {
    for (const ParamRef& p : trained[s]) {
      values[s].emplace_back(model.param(p.unit, p.index).value,
                             [](DLManagedTensor* m) { m->deleter(m); });
      dl[s].push_back(&values[s].back()->dl_tensor);
    }
    unit_params.push_back(
        {sizeof(dshost_unit_params), "", static_cast<int32_t>(dl[s].size()), dl[s].data()});
  }
  const dshost_status st = api_->setup(instance_.get(), unit_params.data(), units, status_.err());
  values.clear();
  status_.check(st, "strategy setup");
  for (int32_t s = 0; s < units; ++s)
    for (size_t i = 0; i < trained[s].size(); ++i) {
      DLManagedTensor *value = nullptr, *grad = nullptr;
      status_.check(api_->param_views(instance_.get(), s, static_cast<int32_t>(i), &value, &grad,
                                      status_.err()),
                    "strategy param_views");
      model.bind_param(trained[s][i].unit, trained[s][i].index, value, grad);
    }
}

}  // namespace dshost
