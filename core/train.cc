#include <dshost/torch.hpp>  // first: ATen's DLPack for everything below
#include <dshost/process.hpp>  // status lines

#include "core/train.h"

#include "core/abi_adapters.h"
#include "core/checkpoint.h"
#include "core/comm.h"
#include "core/cuda_graph.h"
#include "core/dataset.h"
#include "core/error.h"
#include "core/input_pipeline.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/profiler.h"
#include "core/run_lock.h"
#include "core/safetensors.h"
#include "core/sampler.h"
#include "core/schedule.h"
#include "core/services.h"

#include <ATen/Parallel.h>
#include <ATen/CPUGeneratorImpl.h>
#if DSHOST_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAGeneratorImpl.h>
#include <c10/cuda/CUDAFunctions.h>
#endif
#include <nlohmann/json.hpp>
#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iomanip>
#include <thread>

namespace fs = std::filesystem;

namespace dshost {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

std::string duration_text(double seconds) {
  const int64_t s = static_cast<int64_t>(seconds + 0.5);
  return s >= 60 ? cat(s / 60, "m", std::setw(2), std::setfill('0'), s % 60, "s") : cat(s, "s");
}

// One device's peak dense TFLOP/s at this precision: the manifest's, or H100 / H200's
// (989 bf16, 495 tf32, SXM), or 0 when unknown (then no MFU is reported).
double peak_tflops(double configured, const at::Device& device, bool bf16) {
  if (configured > 0) return configured;
#if DSHOST_CUDA
  if (device.is_cuda()) {
    const std::string name = at::cuda::getDeviceProperties(device.index())->name;
    if (name.find("H100") != std::string::npos || name.find("H200") != std::string::npos)
      return bf16 ? 989.4 : 494.7;
  }
#endif
  (void)device;
  (void)bf16;
  return 0;
}

int64_t peak_rss_bytes() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<int64_t>(usage.ru_maxrss) * 1024;
}

// The GPU of local rank `local_rank`: its own, or, where the node's ranks outnumber its GPUs
// (two ranks on one GPU, for tests), shared round-robin; Comm then runs the ranks' CUDA
// collectives through gloo.
int8_t rank_gpu(int local_rank) {
#if DSHOST_CUDA
  const int gpus = c10::cuda::device_count();
  if (gpus > 0) return static_cast<int8_t>(local_rank % gpus);
#endif
  return static_cast<int8_t>(local_rank);
}

dshost_optimizer_config optimizer_config(const OptimizerConfig& o) {
  return {sizeof(dshost_optimizer_config), o.name == "sgd" ? DSHOST_SGD : DSHOST_ADAMW,
          o.beta1, o.beta2, o.eps, o.weight_decay, o.momentum};
}

class Worker {
 public:
  explicit Worker(const Job& job)
      : job_(job), cfg_(job.config), rv_(Rendezvous::from_env()),
        device_(cfg_.train.device == "cuda" ? at::Device(at::kCUDA, rank_gpu(rv_.local_rank))
                                            : at::Device(at::kCPU)) {
    log::init(rv_.rank, cfg_.run.log_all_ranks);
#if DSHOST_CUDA
    if (device_.is_cuda() && rv_.local_world_size > c10::cuda::device_count())
      log::warn(cat(rv_.local_world_size, " ranks share ", static_cast<int>(c10::cuda::device_count()),
                    " GPU(s) on this node: their collectives go through gloo and host memory, "
                    "much slower than NCCL (meant for tests)"));
#endif
    const int64_t threads =
        cfg_.train.threads > 0
            ? cfg_.train.threads
            : std::max<int64_t>(1, std::thread::hardware_concurrency() / rv_.local_world_size);
    at::set_num_threads(static_cast<int>(threads));
    info_ = RankInfo{rv_.rank, rv_.world_size, rv_.local_rank, rv_.local_world_size,
                     DLDevice{device_.is_cuda() ? kDLCUDA : kDLCPU, device_.is_cuda() ? device_.index() : 0},
                     cfg_.train.precision == "bf16" ? DSHOST_BF16 : DSHOST_FP32,
                     static_cast<uint64_t>(cfg_.run.seed), optimizer_config(cfg_.optimizer)};
    run_dir_ = cfg_.run.dir();
  }

  ~Worker() {
    strategy_.reset();  // plugin instances go before the services and comm they use
    model_.reset();
  }

  int run() {
    const auto start = Clock::now();
    // Rank 0 holds the run directory for the run's life, from before it looks for a checkpoint.
    if (rv_.rank == 0) {
      const char* launch = std::getenv(kLaunchIdVariable);
      run_lock_ = std::make_unique<RunDirectoryLock>(run_dir_.string(), launch ? launch : "");
    }
#if DSHOST_CUDA
    // The rank's device, and a stream of its own rather than the legacy default stream,
    // which synchronises with every other stream and cannot be captured (train.cuda_graph).
    if (device_.is_cuda()) {
      c10::cuda::set_device(device_.index());
      c10::cuda::setCurrentCUDAStream(c10::cuda::getStreamFromPool(false, device_.index()));
    }
#endif
    at::globalContext().setBenchmarkCuDNN(cfg_.train.cudnn_benchmark);
    comm_ = std::make_unique<Comm>(rv_, std::chrono::milliseconds(static_cast<int64_t>(
                                            cfg_.comm.timeout_s * 1000)), device_);
    build();
    plan_steps();
    position_ = resume();
    if (position_.step > 0 && position_.step >= plan_.total_steps) {
      log::info(cat("the run is already complete: its checkpoint is at step ", position_.step,
                    " of ", plan_.total_steps, "; nothing was changed (raise train.epochs or "
                    "train.max_steps to train further)"));
      return 0;
    }
    if (rv_.rank == 0) prepare_run_dir();
    train();
    write_summary(seconds_since(start));
    return 0;
  }

 private:
  // ---- set-up ------------------------------------------------------------------------
  void build() {
    mapi_ = job_.model.plugin.api<dshost_model_api>();
    sapi_ = job_.strategy.plugin.api<dshost_strategy_api>();
    model_host_ = std::make_unique<PluginHost>(job_.model.plugin.descriptor->name,
                                               job_.model.options, info_, comm_.get());
    strategy_host_ = std::make_unique<PluginHost>(job_.strategy.plugin.descriptor->name,
                                                  job_.strategy.options, info_, comm_.get());
    at::manual_seed(cfg_.run.seed);
    dshost_model* model = nullptr;
    call(mapi_->create(model_host_->table(), &model, &err_), "model create");
    model_ = Owned<dshost_model>(model, mapi_->destroy);
    call(mapi_->describe(model_.get(), &info_model_, &err_), "model describe");
    make_current(info_model_);
    load_data();

    dshost_strategy* strategy = nullptr;
    call(sapi_->create(strategy_host_->table(), &strategy, &err_), "strategy create");
    strategy_ = Owned<dshost_strategy>(strategy, sapi_->destroy);
    model_host_->set_unit_event_sink([this](dshost_unit_event e, int32_t u, dshost_error* err) {
      return sapi_->on_unit_event(strategy_.get(), e, u, err);
    });
    hand_parameters_to_strategy();
    bind_batch_buffers();
    step_values_ = at::zeros({2, cfg_.train.log_every}, at::TensorOptions().dtype(at::kDouble).device(device_));
    loss_slot_ = at::zeros({1}, at::TensorOptions().dtype(at::kFloat).device(device_));
    loss_out_ = lend(loss_slot_);
    if (cfg_.train.cuda_graph && can_capture()) graph_ = std::make_unique<MicroBatchGraph>(device_);
  }

  // train.cuda_graph falls back to eager steps, saying why, where the model or strategy
  // cannot be captured.
  bool can_capture() const {
    std::string why;
    int32_t capturable = 0;
    if (!device_.is_cuda()) why = "train.device is not cuda";
    else if (!writes_loss_on_device(*job_.model.plugin.descriptor))
      why = cat("model '", job_.model.plugin.descriptor->name, "' is built for an ABI before 1.3");
    else if (sapi_->capturable == nullptr)
      why = cat("strategy '", job_.strategy.plugin.descriptor->name, "' is built for an ABI before 1.3");
    else {
      call(sapi_->capturable(strategy_.get(), &capturable, &err_), "strategy capturable");
      if (!capturable)
        why = cat("strategy '", job_.strategy.plugin.descriptor->name,
                  "' communicates during backward with this configuration (ddp: overlap_comm = "
                  "false, or one rank, allows it; zero2: one rank with grad_accum_dtype the "
                  "model's precision)");
    }
    if (!why.empty()) log::warn(cat("train.cuda_graph: running eagerly: ", why));
    return why.empty();
  }

  // The dataset, asked for samples of the model's shape, and checked against what the
  // model takes: its dtype, its shape as presented (data.channels, data.image_size), and
  // its classes within the model's outputs.
  void load_data() {
    const std::vector<int64_t> want(info_model_.input_shape, info_model_.input_shape + info_model_.input_ndim);
    data_ = std::make_unique<DatasetPlugin>(job_, info_, want);
    const bool model_takes_tokens = info_model_.input_dtype.code == kDLInt;
    if (model_takes_tokens != data_->is_tokens())
      throw UserError(cat(job_.manifest.origin("data", "dataset"), ": error: model '",
                          job_.model.plugin.descriptor->name, "' takes ",
                          model_takes_tokens ? "token ids" : "images", " but dataset '", data_->name(),
                          "' gives ", data_->is_tokens() ? "token ids" : "images",
                          "; choose a dataset of that kind"));
    check_input_shape(want);
    check_classes();
    if (cfg_.train.eval && data_->size(DSHOST_TEST_SPLIT) == 0)
      log::warn("train.eval: there is no test split to evaluate (webdataset: set data.test_path)");
  }

  // Targets the model has no output for are named here, with the data they come from,
  // rather than met as the model's indexing error in the middle of a step. The range is
  // known where the model declares num_classes (image models) or vocab_size (token models).
  void check_classes() const {
    const std::string key = data_->is_tokens() ? "vocab_size" : "num_classes";
    const int64_t classes = data_->info().classes;
    if (job_.model.options.values.count(key) == 0 || job_.model.options.get_int(key) >= classes) return;
    throw UserError(cat(job_.manifest.origin("data", "dataset"), ": error: dataset '", data_->name(), "' has ",
                        classes, data_->is_tokens() ? " token ids (0 to " : " classes (labels 0 to ", classes - 1,
                        ") but model '", job_.model.plugin.descriptor->name, "' has ", key, " = ",
                        job_.model.options.get_int(key), " (", job_.model.options.at(key).origin, "); raise model.",
                        key, " or correct the data"));
  }

  // Images are presented at data.channels x data.image_size^2 where those are set.
  void check_input_shape(const std::vector<int64_t>& want) const {
    std::vector<int64_t> have = data_->input_shape();
    if (data_->is_images() && cfg_.data.channels > 0) have[0] = cfg_.data.channels;
    if (data_->is_images() && cfg_.data.image_size > 0) have[1] = have[2] = cfg_.data.image_size;
    if (data_->is_images() && have[0] != data_->input_shape()[0] && data_->input_shape()[0] != 1)
      throw UserError(cat(job_.manifest.origin("data", "channels"), ": error: data.channels = ", have[0],
                          " cannot be made from dataset '", data_->name(), "''s ", data_->input_shape()[0],
                          " channels (only grey images are repeated)"));
    if (have != want)
      throw UserError(cat(job_.manifest.origin("model", "plugin"), ": error: model '",
                          job_.model.plugin.descriptor->name, "' expects samples of shape ",
                          at::IntArrayRef(want), " but dataset '", data_->name(), "' gives ",
                          at::IntArrayRef(have), "; set the model's in_channels / image_size, or ",
                          "present the data as the model takes it with data.channels / ",
                          "data.image_size"));
  }

  // The model's parameters move into memory the strategy owns; the model keeps views.
  void hand_parameters_to_strategy() {
    const int units = info_model_.unit_count;
    std::vector<std::vector<at::Tensor>> values(units);
    std::vector<std::vector<const DLTensor*>> dl(units);
    std::vector<std::vector<DLManagedTensor*>> managed(units);
    std::vector<std::string> names;
    std::vector<dshost_unit_params> unit_params;
    for (int u = 0; u < units; ++u) {
      int32_t count = 0;
      std::vector<TensorLayout> layouts;
      call(mapi_->param_count(model_.get(), u, &count, &err_), "model param_count");
      for (int i = 0; i < count; ++i) {
        dshost_param_desc desc{sizeof(dshost_param_desc)};
        call(mapi_->param(model_.get(), u, i, &desc, &err_), "model param");
        make_current(desc);
        managed[u].push_back(desc.value);
        dl[u].push_back(&desc.value->dl_tensor);
        layouts.push_back(TensorLayout::of(desc.name, borrow(&desc.value->dl_tensor), export_name(desc)));
      }
      param_layouts_.push_back(std::move(layouts));
      unit_params.push_back({sizeof(dshost_unit_params), "", count, dl[u].data()});
    }
    const dshost_status st = sapi_->setup(strategy_.get(), unit_params.data(), units, &err_);
    for (auto& unit : managed)
      for (auto* m : unit) m->deleter(m);
    call(st, "strategy setup");
    for (int u = 0; u < units; ++u)
      for (int i = 0; i < unit_params[u].count; ++i) {
        DLManagedTensor *value = nullptr, *grad = nullptr;
        call(sapi_->param_views(strategy_.get(), u, i, &value, &grad, &err_),
             "strategy param_views");
        call(mapi_->bind_param(model_.get(), u, i, value, grad, &err_), "model bind_param");
      }
  }

  void bind_batch_buffers() {
    const int64_t rows = std::max(cfg_.train.micro_batch_size, cfg_.train.eval_batch_size);
    std::vector<int64_t> shape{rows};
    shape.insert(shape.end(), info_model_.input_shape,
                 info_model_.input_shape + info_model_.input_ndim);
    const at::ScalarType input_dtype = info_model_.input_dtype.code == kDLInt ? at::kLong : at::kFloat;
    inputs_ = at::zeros(shape, at::TensorOptions().dtype(input_dtype).device(device_));
    std::vector<int64_t> target_shape{rows};
    target_shape.insert(target_shape.end(), info_model_.target_shape,
                        info_model_.target_shape + info_model_.target_ndim);
    targets_ = at::zeros(target_shape, at::TensorOptions().dtype(at::kLong).device(device_));
    call(mapi_->bind_batch(model_.get(), to_dlpack(inputs_), to_dlpack(targets_), &err_),
         "model bind_batch");
    const int workers = resolve_workers(cfg_.data.workers, device_.is_cuda(), rv_.local_world_size);
    pipeline_ = std::make_unique<InputPipeline>(*data_, rows, workers, static_cast<int>(cfg_.data.prefetch), device_,
                                                cfg_.data.decode == "gpu");
  }

  // The run directory and its metrics files (cut back to the checkpoint's step when resuming).
  void prepare_run_dir() {
    std::error_code ec;
    fs::create_directories(run_dir_, ec);
    if (ec)
      throw UserError(cat("cannot create the run directory ", run_dir_.string(), ": ",
                          ec.message(), "; check run.output_dir"), 1);
    metrics_ = std::make_unique<MetricsLog>(run_dir_, position_.step);
    last_report_ = Clock::now();
  }

  // ---- the loop ----------------------------------------------------------------------
  void plan_steps() {
    plan_ = dshost::plan_steps(data_->size(DSHOST_TRAIN_SPLIT), rv_.world_size, cfg_.train);
    if (plan_.steps_per_epoch == 0)
      throw UserError(cat(job_.manifest.origin("train", "micro_batch_size"),
                          ": error: train.micro_batch_size x grad_accum_steps = ", plan_.rank_batch,
                          " exceeds the ", plan_.rank_samples, " training samples each of ", rv_.world_size,
                          " ranks gets; lower them"));
  }

  void train() {
    const auto& t = cfg_.train;
    const auto& ck = cfg_.checkpoint;
    log::info(cat("training ", job_.model.plugin.descriptor->name, " (",
                  info_model_.parameter_count, " parameters) with ",
                  job_.strategy.plugin.descriptor->name, " on ", rv_.world_size, " rank(s), ",
                  device_.str(), ", ", t.precision, "; ", plan_.total_steps, " steps of ",
                  plan_.global_batch, " samples"));
    int64_t saved_step = position_.step;
    if (t.profile_steps > 0) start_profiler();
    for (int64_t epoch = position_.epoch; epoch < t.epochs && position_.step < plan_.total_steps; ++epoch) {
      const auto order = std::make_shared<const std::vector<int64_t>>(shard_indices(
          data_->size(DSHOST_TRAIN_SPLIT), rv_.rank, rv_.world_size, info_.seed, epoch, /*shuffle=*/true, /*pad=*/true));
      epoch_start_ = Clock::now();
      for (int64_t s = position_.step_in_epoch; s < plan_.steps_per_epoch && position_.step < plan_.total_steps;
           ++s) {
        if (profiler_) profiler_->begin_step(position_.step);
        train_step(order, s * plan_.rank_batch, epoch, position_.step);
        if (profiler_) profiler_->end_step(position_.step);
        position_ = {position_.step + 1, epoch, s + 1};
        if (ck.every_steps > 0 && position_.step % ck.every_steps == 0)
          saved_step = save_checkpoint();
      }
      epoch_seconds_.push_back(seconds_since(epoch_start_));
      train_seconds_ += epoch_seconds_.back();
      if (t.eval) evaluate(epoch);
      if (position_.step_in_epoch == plan_.steps_per_epoch) position_ = {position_.step, epoch + 1, 0};
      if (ck.at_epoch_end && position_.step_in_epoch == 0 && saved_step != position_.step)
        saved_step = save_checkpoint();
    }
    if (t.eval && !evaluated_) evaluate(-1);  // stopped by max_steps inside the first epoch
    if (ck.enabled() && saved_step != position_.step) save_checkpoint();  // the final state
  }

  // train.profile_steps: the window after profile_after steps, cut at the last step.
  void start_profiler() {
    const auto& t = cfg_.train;
    const int64_t first = position_.step + t.profile_after;
    const int64_t last = std::min(first + t.profile_steps, plan_.total_steps) - 1;
    if (first > last) {
      log::warn(cat("train.profile_after = ", t.profile_after, " skips past the last of ", plan_.total_steps,
                    " steps: nothing is profiled; lower it"));
      return;
    }
    profiler_ = std::make_unique<StepProfiler>(run_dir_ / "profile" / cat("rank", rv_.rank, ".pt.trace.json"),
                                               device_, first, last);
  }

  void train_step(const std::shared_ptr<const std::vector<int64_t>>& order, int64_t first,
                  int64_t epoch, int64_t step) {
    const auto& t = cfg_.train;
    const int64_t slot = static_cast<int64_t>(unreported_.size());
    const at::Tensor step_loss = step_values_[0].narrow(0, slot, 1);
    for (int m = 0; m < t.grad_accum_steps; ++m) {
      const int64_t begin = first + m * t.micro_batch_size;
      const uint64_t augment_seed = info_.seed * 1000003 + static_cast<uint64_t>(epoch) + 1;
      pipeline_->load(DSHOST_TRAIN_SPLIT, order, begin, t.micro_batch_size, augment_seed, inputs_, targets_);
      call(sapi_->begin_micro_batch(strategy_.get(), m, static_cast<int32_t>(t.grad_accum_steps),
                                    &err_), "strategy begin_micro_batch");
      if (graph_) graph_->run([&] { forward_backward(); });
      else forward_backward();
      step_loss.add_(loss_slot_.to(at::kDouble).div_(static_cast<double>(t.grad_accum_steps)));
    }
    const double lr = learning_rate(cfg_.optimizer, cfg_.scheduler, step, plan_.total_steps);
    const at::Tensor step_norm = step_values_[1].narrow(0, slot, 1);
    const Owned<DLManagedTensor> norm_out = lend(step_norm);
    const dshost_step_args args{sizeof(dshost_step_args), lr, t.grad_clip, &norm_out->dl_tensor,
                                t.nonfinite == "skip"};
    dshost_step_stats stats{sizeof(dshost_step_stats)};
    call(sapi_->step(strategy_.get(), &args, &stats, &err_), "strategy step");
    if (!std::isnan(stats.grad_norm)) step_norm.fill_(stats.grad_norm);  // a host value
    samples_ += plan_.global_batch;
    unreported_.push_back({step, epoch, 0.0, lr, 0.0});  // loss and norm: read at report()
    if (status_lines_) show_status(step + 1, epoch, step_loss);
    const bool last_of_epoch = (step + 1) % plan_.steps_per_epoch == 0 || step + 1 == plan_.total_steps;
    if ((step + 1) % t.log_every == 0 || last_of_epoch) report();
  }

  // One micro-batch's forward and backward: the mean loss lands in loss_slot_ on the
  // device (models before ABI 1.3 return it to the host, which writes it there).
  void forward_backward() {
    const auto& t = cfg_.train;
    dshost_step_result r{sizeof(dshost_step_result)};
    r.loss_out = &loss_out_->dl_tensor;
    call(mapi_->forward_backward(model_.get(), t.micro_batch_size, 1.0 / t.grad_accum_steps,
                                 &r, &err_), "model forward_backward");
    if (!writes_loss_on_device(*job_.model.plugin.descriptor)) loss_slot_.fill_(r.loss);
  }

  // Averages the losses of the steps since the last report over ranks (one collective for
  // all of them, rather than a synchronisation every step), reads their gradient norms,
  // appends them to metrics.jsonl and logs progress. Collective: every rank calls it at the
  // same steps.
  void report() {
    const int64_t n = static_cast<int64_t>(unreported_.size());
    const at::Tensor held =
        step_values_.narrow(1, 0, n).to(at::kCPU, /*non_blocking=*/false, /*copy=*/true).contiguous();
    step_values_.zero_();
    const auto value = held.accessor<double, 2>();  // [loss, norm][step]
    // One collective: the steps' losses, then each rank's first step (+ 1) with a
    // non-finite loss, 0 where it had none.
    std::vector<double> sums(n + rv_.world_size, 0.0);
    for (int64_t i = 0; i < n; ++i) sums[i] = value[0][i];
    for (int64_t i = 0; i < n && sums[n + rv_.rank] == 0; ++i)
      if (!std::isfinite(value[0][i])) sums[n + rv_.rank] = static_cast<double>(i + 1);
    sums = comm_->sum(sums);
    for (int64_t i = 0; i < n; ++i) {
      unreported_[i].loss = sums[i] / rv_.world_size;
      unreported_[i].grad_norm = value[1][i];
    }
    if (cfg_.train.nonfinite == "stop") stop_at_nonfinite(sums, n);
    if (cfg_.train.nonfinite == "skip") count_skipped_steps();
    const StepRecord last = unreported_.back();
    last_loss_ = last.loss;
    if (rv_.rank == 0) {
      const double rate = static_cast<double>(unreported_.size() * plan_.global_batch) /
                          std::max(seconds_since(last_report_), 1e-9);
      const int64_t peak_host = peak_rss_bytes(), peak_device = allocated_on(device_).peak;
      for (const auto& s : unreported_)
        metrics_->step({s.step + 1, s.epoch + 1, s.loss, s.lr, s.grad_norm, rate, peak_host, peak_device});
      metrics_->flush();
      log_progress(last);
    }
    unreported_.clear();
    last_report_ = Clock::now();
  }

  struct StepRecord {
    int64_t step, epoch;
    double loss, lr, grad_norm;
  };

  // train.nonfinite = "stop": ends the run, every rank alike, at the first unreported step
  // whose loss (on some rank) or global gradient norm is NaN or infinite. It runs before the
  // metrics are written and before any save, so no checkpoint holds that state.
  // `first_bad[n + r]`: rank r's first such step among the n unreported, + 1; 0: none.
  void stop_at_nonfinite(const std::vector<double>& first_bad, int64_t n) const {
    int64_t step = n;
    for (int r = 0; r < rv_.world_size; ++r)
      if (first_bad[n + r] > 0) step = std::min(step, static_cast<int64_t>(first_bad[n + r]) - 1);
    for (int64_t i = 0; i < step; ++i)
      if (!std::isfinite(unreported_[i].grad_norm)) step = i;
    if (step == n) return;
    std::vector<std::string> ranks;
    for (int r = 0; r < rv_.world_size; ++r)
      if (first_bad[n + r] == static_cast<double>(step + 1)) ranks.push_back(std::to_string(r));
    const StepRecord& s = unreported_[step];
    const std::string what = ranks.empty()
        ? cat("the gradient norm is ", s.grad_norm)
        : cat("the loss of rank", ranks.size() > 1 ? "s " : " ", join(ranks), " is not finite");
    throw UserError(cat("step ", s.step + 1, " (epoch ", s.epoch + 1, "): ", what,
                        "; the run stopped (train.nonfinite = \"stop\") without saving that state. "
                        "Lower optimizer.lr, set train.grad_clip, or resume from the last checkpoint; "
                        "train.nonfinite = \"ignore\" trains on"), 1);
  }

  // train.nonfinite = "skip": the strategy dropped the update of each step whose gradient
  // norm is not finite (the same norm on every rank, so every rank dropped the same steps).
  // Counts and names them; kMostSkipsInARow in a row end the run, which has stopped learning.
  void count_skipped_steps() {
    constexpr int64_t kMostSkipsInARow = 10;
    for (const StepRecord& s : unreported_) {
      if (std::isfinite(s.grad_norm)) {
        skips_in_a_row_ = 0;
        continue;
      }
      ++skipped_steps_;
      if (rv_.rank == 0)
        log::warn(cat("step ", s.step + 1, ": the gradient norm is ", s.grad_norm,
                      "; its update was skipped (train.nonfinite = \"skip\")"));
      if (++skips_in_a_row_ == kMostSkipsInARow)
        throw UserError(cat("steps ", s.step + 2 - kMostSkipsInARow, " to ", s.step + 1, " (epoch ", s.epoch + 1,
                            "): ", kMostSkipsInARow, " steps in a row had a non-finite gradient norm and "
                            "were skipped (train.nonfinite = \"skip\"); the run stopped. Lower "
                            "optimizer.lr, set train.grad_clip, check the data, or resume from the last "
                            "checkpoint"), 1);
    }
  }

  // Rank 0's progress bar on the launcher's terminal (a status line, see dshost/process.hpp),
  // at most 5 times a second; the loss is rank 0's own. An empty status line clears it.
  void show_status(int64_t steps_done, int64_t epoch, const at::Tensor& step_loss) {
    const bool last = steps_done == plan_.total_steps;
    if (!last && seconds_since(last_status_) < 0.2) return;
    const double loss = step_loss.item<double>();  // waits for the step: 5 times a second
    last_status_ = Clock::now();
    const auto [rate, eta] = rate_and_eta(steps_done);
    constexpr int kWidth = 24;
    const int filled = static_cast<int>(kWidth * steps_done / std::max<int64_t>(plan_.total_steps, 1));
    const std::string bar = cat("[", std::string(filled, '#'), std::string(kWidth - filled, '.'), "] ",
                                100 * steps_done / std::max<int64_t>(plan_.total_steps, 1), "% step ",
                                steps_done, "/", plan_.total_steps, " epoch ", epoch + 1, "/",
                                cfg_.train.epochs, " loss ", std::fixed, std::setprecision(4), loss,
                                " ", std::setprecision(0), rate, " samples/s eta ", duration_text(eta));
    std::fprintf(stderr, "\r%s\n", last ? "" : bar.c_str());
    std::fflush(stderr);
  }

  // Samples per second of this process's training so far, and the time the steps left take.
  std::pair<double, double> rate_and_eta(int64_t steps_done) const {
    const double rate = samples_ / std::max(train_seconds_ + seconds_since(epoch_start_), 1e-9);
    return {rate, static_cast<double>((plan_.total_steps - steps_done) * plan_.global_batch) / std::max(rate, 1e-9)};
  }

  void log_progress(const StepRecord& s) {
    const auto [rate, eta] = rate_and_eta(s.step + 1);
    log::info(cat("epoch ", s.epoch + 1, "/", cfg_.train.epochs, " step ",
                  s.step % plan_.steps_per_epoch + 1, "/", plan_.steps_per_epoch, " loss ", std::fixed,
                  std::setprecision(4), s.loss, " lr ", std::scientific, std::setprecision(2),
                  s.lr, " grad_norm ", std::fixed, std::setprecision(3), s.grad_norm, " ",
                  std::setprecision(0), rate, " samples/s eta ", duration_text(eta)));
  }

  void evaluate(int64_t epoch) {
    const int64_t size = data_->size(DSHOST_TEST_SPLIT);
    if (size == 0) return;  // (load_data said so)
    const auto order = std::make_shared<const std::vector<int64_t>>(
        shard_indices(size, rv_.rank, rv_.world_size, 0, 0, /*shuffle=*/false, /*pad=*/false));
    double loss_sum = 0, correct = 0, count = 0;
    for (size_t first = 0; first < order->size(); first += cfg_.train.eval_batch_size) {
      const int64_t n = std::min<int64_t>(cfg_.train.eval_batch_size, order->size() - first);
      pipeline_->load(DSHOST_TEST_SPLIT, order, first, n, 0, inputs_, targets_);
      dshost_eval_result r{sizeof(dshost_eval_result)};
      call(mapi_->evaluate(model_.get(), n, &r, &err_), "model evaluate");
      loss_sum += r.loss_sum;
      correct += static_cast<double>(r.correct);
      count += static_cast<double>(r.count);
    }
    const auto totals = comm_->sum({loss_sum, correct, count});
    test_loss_ = totals[0] / totals[2];
    test_accuracy_ = totals[1] / totals[2];
    evaluated_ = true;
    if (rv_.rank == 0) metrics_->evaluation(position_.step, test_accuracy_, test_loss_);
    last_report_ = Clock::now();  // throughput counts training time only
    log::info(cat(epoch >= 0 ? cat("epoch ", epoch + 1, " ") : std::string(), "test accuracy ",
                  std::fixed, std::setprecision(4), test_accuracy_, " loss ", test_loss_, " (",
                  static_cast<int64_t>(totals[2]), " samples)"));
  }

  // ---- checkpoints -------------------------------------------------------------------
  // Saves the state after position_.step steps (see core/checkpoint.h for the protocol):
  // every rank writes its file into the staging directory, then rank 0 publishes it.
  // Collective. Returns the step saved.
  int64_t save_checkpoint() {
    const auto start = Clock::now();
    if (!unreported_.empty()) report();  // metrics.jsonl reaches the checkpoint's step
    const std::string& dir = cfg_.checkpoint.dir;
    const std::string staging = (fs::path(dir) / (step_dir_name(position_.step) + ".tmp")).string();
    if (rv_.rank == 0) {
      std::error_code ec;
      remove_tree(staging);  // a save killed earlier
      fs::create_directories(staging, ec);
      if (ec) throw UserError(cat("cannot create ", staging, ": ", ec.message(), "; check checkpoint.dir"), 1);
    }
    comm_->sum({0.0});  // the staging directory exists, empty, before anyone writes
    std::string failure;
    try {
      write_rank_file(rank_checkpoint_file(staging, rv_.rank));
    } catch (const UserError& e) {
      failure = cat("rank ", rv_.rank, " on ", host_name(), ": checkpoint not saved: ", e.what());
    }
    const double failures = comm_->sum({failure.empty() ? 0.0 : 1.0})[0];
    if (!failure.empty()) throw UserError(failure, 1);
    if (failures > 0) throw UserError("checkpoint not saved: another rank could not write its part", 1);
    if (rv_.rank == 0) {
      const nlohmann::json about{
          {"step", position_.step}, {"epoch", position_.epoch},
          {"step_in_epoch", position_.step_in_epoch}, {"global_batch", plan_.global_batch},
          {"model", job_.model.plugin.descriptor->name},
          {"strategy", job_.strategy.plugin.descriptor->name}, {"world_size", rv_.world_size},
          {"optimizer", cfg_.optimizer.name}, {"seed", cfg_.run.seed}};
      publish_checkpoint(dir, staging, position_.step,
                         build_index(staging, rv_.world_size, about), cfg_.checkpoint.keep);
      log::info(cat("checkpoint saved: ", (fs::path(dir) / step_dir_name(position_.step)).string(),
                    " (", std::fixed, std::setprecision(2), seconds_since(start), " s)"));
    }
    return position_.step;
  }

  // This rank's file: the strategy's slices, the model's buffers (rank 0's; PyTorch's DDP
  // also makes rank 0's the truth) and this rank's random number generators.
  void write_rank_file(const std::string& path) {
    CheckpointWriter writer(param_layouts_);
    require_checkpoint_support("save");
    if (sapi_->save(strategy_.get(), writer.io(), &err_) != DSHOST_OK)
      throw UserError(cat("strategy save failed: ", err_.message), 1);
    if (rv_.rank == 0)
      for (const Buffer& b : model_buffers()) writer.add_whole(b.name, b.value, b.export_name);
    for (const auto& [name, state] : rng_states()) writer.add_whole(name, state);
    writer.write(path);
  }

  // Strategies built for ABI 1.0 / 1.1 have no save or load entry (`what`: "save" | "load").
  void require_checkpoint_support(const char* what) const {
    if (sapi_->save == nullptr || sapi_->load == nullptr)
      throw UserError(cat("strategy '", job_.strategy.plugin.descriptor->name, "' cannot ", what,
                          " checkpoints (built for an ABI before 1.2)"));
  }

  // The checkpoint to resume from (checkpoint.resume), loaded; the position to go on from.
  // A run that would save over checkpoints it did not resume from is refused.
  Position resume() {
    const auto& ck = cfg_.checkpoint;
    std::string note;
    if (ck.resume == "never") {
      const std::string existing = latest_checkpoint(ck.dir);
      if (ck.enabled() && !existing.empty())
        throw UserError(cat(job_.manifest.origin("checkpoint", "resume"),
                            ": error: checkpoint.resume = \"never\" but ", ck.dir,
                            " already holds checkpoints (the newest ", existing,
                            "), which this run's saves would replace; resume from them "
                            "(checkpoint.resume = \"auto\"), or choose another run.name or "
                            "checkpoint.dir"));
      return {};
    }
    std::string path = ck.resume == "auto" ? latest_checkpoint(ck.dir, &note) : ck.resume;
    if (path.empty()) return {};
    if (!fs::exists(fs::path(path) / "index.json") && fs::exists(fs::path(path) / "latest"))
      path = latest_checkpoint(path, &note);
    if (!note.empty()) log::warn(note);
    try {
      const CheckpointReader reader(path, param_layouts_);
      reader.check_model(job_.model.plugin.descriptor->name);
      require_checkpoint_support("load");
      call(sapi_->load(strategy_.get(), reader.io(), &err_), "strategy load");
      load_buffers_and_rng(reader);
      return position_from(reader.index(), path);
    } catch (const UserError& e) {  // a damaged checkpoint, or one of another model: bad input
      throw UserError(cat(job_.manifest.origin("checkpoint", "resume"), ": error: cannot resume: ",
                          e.what()), 2);
    }
  }

  void load_buffers_and_rng(const CheckpointReader& reader) {
    at::NoGradGuard no_grad;
    for (const Buffer& b : model_buffers()) b.value.copy_(reader.whole(b.name));
    for (auto& [name, state] : rng_states()) {
      if (!reader.has(name)) {  // a rank the saving run did not have
        log::info(cat(name, " is not in the checkpoint (saved by ", reader.index()["world_size"],
                      " ranks): this rank's random numbers restart from the seed"));
        continue;
      }
      set_rng_state(name, reader.whole(name));
    }
  }

  // Where the checkpoint's run stood, in this run's steps: the same samples come next
  // when the global batch is the same (the sampler orders samples independently of ranks).
  Position position_from(const nlohmann::json& index, const std::string& path) const {
    const int64_t saved_batch = index.value("global_batch", plan_.global_batch);
    const Position saved{index.value("step", int64_t{0}), index.value("epoch", int64_t{0}),
                         index.value("step_in_epoch", int64_t{0})};
    if (saved_batch != plan_.global_batch)
      log::warn(cat("the checkpoint was trained with a global batch of ", saved_batch,
                    " samples and this run's is ", plan_.global_batch,
                    ": the epoch goes on from the nearest step"));
    const Position p = resumed_position(saved, saved_batch, plan_);
    log::info(cat("resumed from ", path, ": step ", p.step, ", epoch ", p.epoch + 1,
                  " (saved by ", index.value("strategy", "?"), " on ",
                  index.value("world_size", 0), " rank(s))"));
    return p;
  }

  // A parameter's or buffer's name in `dshost export`'s file (plugins before ABI 1.2 give
  // none: their own name).
  static std::string export_name(const dshost_param_desc& d) {
    return d.export_name != nullptr ? d.export_name : d.name;
  }

  struct Buffer {
    std::string name, export_name;
    at::Tensor value;
  };
  // The model's buffers (batch-norm statistics) as named views of its memory.
  std::vector<Buffer> model_buffers() {
    std::vector<Buffer> out;
    if (mapi_->buffer_count == nullptr || mapi_->buffer == nullptr) return out;  // ABI < 1.2
    int32_t count = 0;
    call(mapi_->buffer_count(model_.get(), &count, &err_), "model buffer_count");
    for (int32_t i = 0; i < count; ++i) {
      dshost_param_desc desc{sizeof(dshost_param_desc)};
      call(mapi_->buffer(model_.get(), i, &desc, &err_), "model buffer");
      make_current(desc);
      out.push_back({desc.name, export_name(desc), from_dlpack(desc.value)});
    }
    return out;
  }

  std::vector<std::pair<std::string, at::Tensor>> rng_states() const {
    std::vector<std::pair<std::string, at::Tensor>> out{
        {cat("rng.cpu.rank", rv_.rank), at::detail::getDefaultCPUGenerator().get_state()}};
#if DSHOST_CUDA
    if (device_.is_cuda())
      out.emplace_back(cat("rng.cuda.rank", rv_.rank),
                       at::cuda::detail::getDefaultCUDAGenerator(device_.index()).get_state());
#endif
    return out;
  }

  void set_rng_state(const std::string& name, const at::Tensor& state) const {
#if DSHOST_CUDA
    if (name.rfind("rng.cuda.", 0) == 0) {
      at::Generator cuda = at::cuda::detail::getDefaultCUDAGenerator(device_.index());
      cuda.set_state(state);
      return;
    }
#endif
    (void)name;
    at::Generator cpu = at::detail::getDefaultCPUGenerator();
    cpu.set_state(state);
  }

  // ---- summary -----------------------------------------------------------------------
  void write_summary(double wall_seconds) {
    dshost_memory_report mem{sizeof(dshost_memory_report)};
    call(sapi_->memory(strategy_.get(), &mem, &err_), "strategy memory");
    const double peak = comm_->max(static_cast<double>(peak_rss_bytes()));
    const double peak_device = comm_->max(static_cast<double>(allocated_on(device_).peak));
    const auto skipped = static_cast<int64_t>(comm_->sum({static_cast<double>(data_->skipped())})[0]);
    if (rv_.rank != 0) return;
    if (skipped > 0)
      log::warn(cat(skipped, " sample(s) could not be made and were skipped (each rank counts its "
                    "own); the warnings above name them"));
    const double rate = samples_ / std::max(train_seconds_, 1e-9);
    nlohmann::json summary{
        {"run", cfg_.run.name},
        {"model", job_.model.plugin.descriptor->name},
        {"strategy", job_.strategy.plugin.descriptor->name},
        {"world_size", rv_.world_size},
        {"device", device_.str()},
        {"precision", cfg_.train.precision},
        {"parameters", info_model_.parameter_count},
        {"steps", plan_.total_steps},
        {"test_accuracy", evaluated_ ? nlohmann::json(test_accuracy_) : nlohmann::json()},
        {"test_loss", evaluated_ ? nlohmann::json(test_loss_) : nlohmann::json()},
        {"final_train_loss", last_loss_},
        {"samples_per_second", rate},
        {"skipped_files", skipped},
        {"skipped_steps", skipped_steps_},
        {"train_time_s", train_seconds_},
        {"epoch_times_s", epoch_seconds_},
        {"wall_time_s", wall_seconds},
        {"peak_host_memory_bytes", static_cast<int64_t>(peak)},
        {"peak_device_memory_bytes", static_cast<int64_t>(peak_device)},
        {"memory_per_rank_bytes",
         {{"param_device", mem.param_device}, {"param_host", mem.param_host},
          {"grad_device", mem.grad_device}, {"grad_host", mem.grad_host},
          {"optim_device", mem.optim_device}, {"optim_host", mem.optim_host}}},
    };
    add_flops(summary, rate);
    write_file_atomically((run_dir_ / "summary.json").string(), summary.dump(2) + "\n");
    const auto mib = [](double b) { return cat(std::fixed, std::setprecision(1), b / 1048576.0, " MiB"); };
    const std::string test = evaluated_ ? cat("test accuracy ", std::fixed, std::setprecision(4),
                                              test_accuracy_, ", test loss ", test_loss_, ", ")
                                        : std::string("not evaluated (train.eval = false), ");
    log::info(cat("summary: ", test, "train loss ", std::fixed, std::setprecision(4), last_loss_, ", ",
                  std::setprecision(0), rate, " samples/s, wall time ", std::setprecision(1),
                  wall_seconds, " s, peak memory ", mib(peak),
                  device_.is_cuda() ? cat(" host, ", mib(peak_device), " GPU") : std::string(),
                  " per rank (parameters ",
                  mib(mem.param_device + mem.param_host), ", gradients ",
                  mib(mem.grad_device + mem.grad_host), ", optimizer ",
                  mib(mem.optim_device + mem.optim_host), ")"));
    log::info(cat("summary written to ", (run_dir_ / "summary.json").string()));
  }

  // The FLOPs profile (per unit: parameters, forward FLOPs per sample, share) and what the
  // run achieved: training FLOPs as 3 x forward (backward costs two forwards), over all
  // ranks, and MFU against the devices' peak when it is known.
  void add_flops(nlohmann::json& summary, double samples_per_second) const {
    nlohmann::json units = nlohmann::json::array();
    const int64_t total = info_model_.forward_flops_per_sample;
    for (size_t u = 0; u < param_layouts_.size(); ++u) {
      int64_t params = 0, flops = 0;
      for (const auto& p : param_layouts_[u]) params += p.numel();
      if (mapi_->unit_flops != nullptr)
        call(mapi_->unit_flops(model_.get(), static_cast<int32_t>(u), &flops, &err_), "model unit_flops");
      const std::string first = param_layouts_[u].empty() ? "" : param_layouts_[u][0].name;
      units.push_back({{"unit", first.substr(0, first.find('.'))}, {"parameters", params},
                       {"forward_flops_per_sample", flops},
                       {"share", total > 0 ? static_cast<double>(flops) / static_cast<double>(total) : 0.0}});
    }
    const double achieved = 3.0 * static_cast<double>(total) * samples_per_second / 1e12;
    const double peak = peak_tflops(cfg_.train.peak_tflops, device_, cfg_.train.precision == "bf16") *
                        rv_.world_size;
    summary["forward_flops_per_sample"] = total;
    summary["flops_profile"] = units;
    summary["achieved_tflops"] = total > 0 ? nlohmann::json(achieved) : nlohmann::json();
    summary["mfu"] = total > 0 && peak > 0 ? nlohmann::json(achieved / peak) : nlohmann::json();
    if (total > 0)
      log::info(cat("FLOPs: ", std::fixed, std::setprecision(3), static_cast<double>(total) / 1e9,
                    " GFLOP forward per sample; achieved ", std::setprecision(2), achieved,
                    " TFLOP/s", peak > 0 ? cat(", MFU ", std::setprecision(1), 100 * achieved / peak, "%") : ""));
  }

  void call(dshost_status status, const std::string& what) const {
    if (status == DSHOST_OK) return;
    if (status == DSHOST_COMM_ERROR && comm_)
      throw comm_->stopped_by_another_rank(cat(what, " failed: ", err_.message));
    throw UserError(cat("rank ", rv_.rank, " on ", host_name(), ": ", what, " failed: ",
                        err_.message, status == DSHOST_OUT_OF_MEMORY ? out_of_memory_advice() : ""),
                    status == DSHOST_INVALID_ARGUMENT ? 2 : 1);
  }

  // What a user can change when an allocation in a plugin failed, in the manifest's terms
  // (a plugin's own out-of-memory refusal already says it).
  std::string out_of_memory_advice() const {
    if (std::strstr(err_.message, "CUDA out of memory"))
      return " The GPU's memory ran out: lower train.micro_batch_size (raise train.grad_accum_steps "
             "to keep the batch), or keep less on the GPU: strategy.plugin = \"zero2\", or "
             "\"zero3-offload\" with offload_param_device = \"cpu\" and offload_optimizer_ratio = 1.";
    if (std::strcmp(err_.message, "out of memory") != 0) return "";  // (std::bad_alloc's, from guarded)
    return " The host's memory ran out: lower train.micro_batch_size, or spread the model over more "
           "nodes with strategy.plugin = \"zero2\" or \"zero3-offload\", which shard its state over ranks.";
  }

  template <class T>
  using Owned = std::unique_ptr<T, void (*)(T*)>;

  // A DLPack view of `t` for a plugin to write into during a call, freed by the host.
  static Owned<DLManagedTensor> lend(const at::Tensor& t) {
    return {to_dlpack(t), [](DLManagedTensor* m) { m->deleter(m); }};
  }

  const Job& job_;
  const Config& cfg_;
  Rendezvous rv_;
  at::Device device_;
  RankInfo info_;
  fs::path run_dir_;
  std::unique_ptr<DatasetPlugin> data_;
  std::unique_ptr<Comm> comm_;
  std::unique_ptr<PluginHost> model_host_, strategy_host_;
  const dshost_model_api* mapi_ = nullptr;
  const dshost_strategy_api* sapi_ = nullptr;
  Owned<dshost_model> model_{nullptr, nullptr};
  Owned<dshost_strategy> strategy_{nullptr, nullptr};
  dshost_model_info info_model_{sizeof(dshost_model_info)};
  mutable dshost_error err_{sizeof(dshost_error), {}};
  at::Tensor inputs_, targets_;
  // Each unreported step's mean loss and gradient norm (double, [2, log_every]) and the slot
  // the model writes a micro-batch's loss into, all on the compute device: read at reports,
  // not every step.
  at::Tensor step_values_, loss_slot_;
  Owned<DLManagedTensor> loss_out_{nullptr, nullptr};
  int64_t skipped_steps_ = 0, skips_in_a_row_ = 0;  // train.nonfinite = "skip", this process's
  std::unique_ptr<MicroBatchGraph> graph_;  // train.cuda_graph
  std::unique_ptr<StepProfiler> profiler_;  // train.profile_steps
  std::unique_ptr<InputPipeline> pipeline_;  // last of the data: its workers read data_
  std::unique_ptr<MetricsLog> metrics_;  // rank 0's
  std::unique_ptr<RunDirectoryLock> run_lock_;  // rank 0's
  Clock::time_point last_report_, last_status_;
  const bool status_lines_ = rv_.rank == 0 && std::getenv(kStatusLinesVariable) != nullptr;

  int64_t samples_ = 0;
  double train_seconds_ = 0, last_loss_ = 0, test_loss_ = 0, test_accuracy_ = 0;
  bool evaluated_ = false;
  Clock::time_point epoch_start_;  // of the epoch being trained, for progress rates
  std::vector<StepRecord> unreported_;  // steps whose rank-averaged loss is not yet known
  std::vector<double> epoch_seconds_;  // training time of each epoch, evaluation excluded

  Position position_;
  StepPlan plan_;
  std::vector<std::vector<TensorLayout>> param_layouts_;  // [unit][index] for checkpoints
};

}  // namespace

int run_worker(const Job& job) { return Worker(job).run(); }

}  // namespace dshost
