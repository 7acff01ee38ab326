#include "core/rank_setup.h"

#include "core/cuda_graph.h"
#include "core/data_fit.h"
#include "core/dataset.h"
#include "core/error.h"
#include "core/fp8_support.h"
#include "core/init_from.h"
#include "core/input_pipeline.h"
#include "core/log.h"
#include "core/plugin_handles.h"
#include "core/run_checkpoint.h"

#include <ATen/Parallel.h>
#if DSHOST_CUDA
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAStream.h>
#endif

#include <cstdlib>
#include <thread>

namespace dshost {
namespace {

// The rank's compute threads: train.threads, or the node's cores shared by its ranks.
void set_threads(const TrainConfig& t, int local_world_size) {
  const int64_t threads =
      t.threads > 0 ? t.threads
                    : std::max<int64_t>(1, std::thread::hardware_concurrency() / local_world_size);
  at::set_num_threads(static_cast<int>(threads));
}

// The rank's device, and a stream of its own rather than the legacy default stream, which
// synchronises with every other stream and cannot be captured (train.cuda_graph).
void use_device(const at::Device& device, int local_world_size) {
#if DSHOST_CUDA
  if (!device.is_cuda()) return;
  if (local_world_size > c10::cuda::device_count())
    log::warn(cat(local_world_size, " ranks share ", static_cast<int>(c10::cuda::device_count()),
                  " GPU(s) on this node: their collectives go through gloo and host memory, "
                  "much slower than NCCL (meant for tests)"));
  c10::cuda::set_device(device.index());
  c10::cuda::setCurrentCUDAStream(c10::cuda::getStreamFromPool(false, device.index()));
#endif
  (void)device;
  (void)local_world_size;
}

// Why a rank that asked for a GPU has none, and what to do.
std::string why_no_gpu() {
#if DSHOST_CUDA
  const char* visible = std::getenv("CUDA_VISIBLE_DEVICES");
  return cat(" sees no GPU", visible ? cat(" (CUDA_VISIBLE_DEVICES=\"", visible, "\")") : "",
             "; run it where `nvidia-smi` lists one, or set train.device = \"cpu\"");
#else
  return " runs a dshost built without CUDA; set train.device = \"cpu\"";
#endif
}

}  // namespace

at::Device rank_device(const TrainConfig& train, const Rendezvous& rv) {
  if (train.device != DeviceKind::cuda) return at::kCPU;
#if DSHOST_CUDA
  const int gpus = c10::cuda::device_count();
  if (gpus > 0) return {at::kCUDA, static_cast<int8_t>(rv.local_rank % gpus)};
#endif
  throw UserError(
      cat("train.device = \"cuda\", but rank ", rv.rank, " on ", hostname(), why_no_gpu()));
}

RankInfo rank_info(const Rendezvous& rv, const at::Device& device, const Config& cfg) {
  const OptimizerConfig& o = cfg.optimizer;
  return {
      rv.rank,
      rv.world_size,
      rv.local_rank,
      rv.local_world_size,
      DLDevice{device.is_cuda() ? kDLCUDA : kDLCPU, device.is_cuda() ? device.index() : 0},
      cfg.train.precision == Precision::fp32 ? DSHOST_FP32 : DSHOST_BF16,
      cfg.train.precision == Precision::fp8,
      static_cast<uint64_t>(cfg.run.seed),
      {sizeof(dshost_optimizer_config), o.name == OptimizerKind::sgd ? DSHOST_SGD : DSHOST_ADAMW,
       o.beta1, o.beta2, o.eps, o.weight_decay, o.momentum}};
}

RankSetup::RankSetup(const Job& job, const Rendezvous& rv, const at::Device& device,
                     const RankInfo& info) {
  const Config& cfg = job.config;
  set_threads(cfg.train, rv.local_world_size);
  use_device(device, rv.local_world_size);
  at::globalContext().setBenchmarkCuDNN(cfg.train.cudnn_benchmark);
  comm = std::make_unique<Comm>(
      rv, std::chrono::milliseconds(static_cast<int64_t>(cfg.comm.timeout_s * 1000)), device);
  status = std::make_unique<CallStatus>(rv.rank, comm.get());
  model_host = std::make_unique<PluginHost>(job.model.plugin.descriptor->name, job.model.options,
                                            info, comm.get());
  strategy_host = std::make_unique<PluginHost>(job.strategy.plugin.descriptor->name,
                                               job.strategy.options, info, comm.get());
  at::manual_seed(cfg.run.seed);
  model = std::make_unique<ModelHandle>(job.model.plugin, model_host->table(), *status);
  check_fp8_rank(job.manifest, cfg, device, job.model.plugin.descriptor->name, model->info());
  if (!cfg.model.init_from.empty()) init_model(job, rv);
  load_data(job, rv, info);
  strategy = std::make_unique<StrategyHandle>(job.strategy.plugin, strategy_host->table(), *status);
  hand_parameters(job, rv, device);
  bind_batch(cfg, rv, device);
  if (cfg.train.cuda_graph && can_capture(device))
    graph = std::make_unique<MicroBatchGraph>(device);
  checkpoints = std::make_unique<RunCheckpoints>(job, rv.rank, rv.world_size, device, *comm, *model,
                                                 *strategy, strategy_params, frozen, plan);
}

RankSetup::~RankSetup() = default;

// model.init_from, on every rank before the strategy takes the parameters.
void RankSetup::init_model(const Job& job, const Rendezvous& rv) {
  const ModelConfig& m = job.config.model;
  const InitResult r = init_model_from(
      m.init_from, m.init_skip, job.manifest.origin("model", "init_from"), named_tensors(*model));
  if (rv.rank != 0) return;
  log::info(cat("model.init_from: ", r.loaded, " tensors from ", m.init_from,
                r.prefix.empty() ? "" : cat(" (their names read without \"", r.prefix, "\")")));
  if (!r.kept.empty()) log::info(cat("model.init_from: kept their initialisation: ", join(r.kept)));
}

// The parameters model.freeze leaves trainable go to the strategy, which sees only the units
// that hold them (their unit events renumbered, a frozen unit's dropped); the host binds the
// frozen ones.
void RankSetup::hand_parameters(const Job& job, const Rendezvous& rv, const at::Device& device) {
  model_params = model->param_layouts();
  placement =
      place_params(model_params, job.config.model.freeze, job.manifest.origin("model", "freeze"));
  model_host->set_unit_event_sink([this](dshost_unit_event e, int32_t u, dshost_error* err) {
    const int32_t s = placement.strategy_unit.at(u);
    return s < 0 ? DSHOST_OK : strategy->on_unit_event(e, s, err);
  });
  strategy->take_parameters(*model, placement.trained);
  strategy_params = trained_layouts(model_params, placement);
  frozen = bind_frozen(*model, model_params, placement.frozen, device);
  if (rv.rank != 0 || frozen.empty()) return;
  int64_t count = 0;
  for (const ModelBuffer& p : frozen) count += p.value.numel();
  log::info(cat("model.freeze: ", frozen.size(), " tensors (", count,
                " parameters) stay as they are; ", model->info().parameter_count - count,
                " parameters train"));
}

// The dataset, asked for samples of the model's shape and checked against it; the step plan.
void RankSetup::load_data(const Job& job, const Rendezvous& rv, const RankInfo& info) {
  const dshost_model_info& m = model->info();
  data = std::make_unique<DatasetPlugin>(
      job, info, std::vector<int64_t>(m.input_shape, m.input_shape + m.input_ndim));
  check_data_fits_model(job, *data, m);
  if (job.config.train.eval && data->size(DSHOST_TEST_SPLIT) == 0)
    log::warn("train.eval: there is no test split to evaluate (webdataset: set data.test_path)");
  plan = plan_steps(data->size(DSHOST_TRAIN_SPLIT), rv.world_size, job.config.train);
  if (plan.steps_per_epoch == 0)
    throw UserError(cat(job.manifest.origin("train", "micro_batch_size"),
                        ": error: train.micro_batch_size x grad_accum_steps = ", plan.rank_batch,
                        " exceeds the ", plan.rank_samples, " training samples each of ",
                        rv.world_size, " ranks gets; lower them"));
}

void RankSetup::bind_batch(const Config& cfg, const Rendezvous& rv, const at::Device& device) {
  const dshost_model_info& m = model->info();
  const int64_t rows = std::max(cfg.train.micro_batch_size, cfg.train.eval_batch_size);
  std::vector<int64_t> shape{rows}, target_shape{rows};
  shape.insert(shape.end(), m.input_shape, m.input_shape + m.input_ndim);
  target_shape.insert(target_shape.end(), m.target_shape, m.target_shape + m.target_ndim);
  const at::ScalarType input_dtype = m.input_dtype.code == kDLInt ? at::kLong : at::kFloat;
  inputs = at::zeros(shape, at::TensorOptions().dtype(input_dtype).device(device));
  targets = at::zeros(target_shape, at::TensorOptions().dtype(at::kLong).device(device));
  loss = at::zeros({1}, at::TensorOptions().dtype(at::kFloat).device(device));
  model->bind_batch(inputs, targets, loss);
  const int workers = resolve_workers(cfg.data.workers, device.is_cuda(), rv.local_world_size);
  pipeline =
      std::make_unique<InputPipeline>(*data, rows, workers, static_cast<int>(cfg.data.prefetch),
                                      device, cfg.data.decode == Decode::gpu);
}

// train.cuda_graph falls back to eager steps, saying why, where the model or strategy cannot
// be captured.
bool RankSetup::can_capture(const at::Device& device) const {
  std::string why;
  if (!device.is_cuda())
    why = "train.device is not cuda";
  else if (!model->writes_loss_on_device())
    why = cat("model '", model->name(), "' is built for an ABI before 1.3");
  else
    why = strategy->why_not_capturable();
  if (!why.empty()) log::warn(cat("train.cuda_graph: running eagerly: ", why));
  return why.empty();
}

}  // namespace dshost
