#include <dshost/torch.hpp>    // first: ATen's DLPack for everything below
#include <dshost/process.hpp>  // status lines

#include "core/train.h"

#include "core/comm.h"
#include "core/cuda_graph.h"
#include "core/data_fit.h"
#include "core/dataset.h"
#include "core/error.h"
#include "core/input_pipeline.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/plugin_handles.h"
#include "core/profiler.h"
#include "core/progress.h"
#include "core/run_checkpoint.h"
#include "core/run_lock.h"
#include "core/safetensors.h"  // write_file_atomically
#include "core/sampler.h"
#include "core/schedule.h"
#include "core/services.h"
#include "core/step_reports.h"
#include "core/summary.h"

#include <ATen/Parallel.h>
#if DSHOST_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAFunctions.h>
#endif
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iomanip>
#include <thread>

namespace fs = std::filesystem;

namespace dshost {
namespace {

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

RankInfo rank_info(const Rendezvous& rv, const at::Device& device, const Config& cfg) {
  const OptimizerConfig& o = cfg.optimizer;
  return {rv.rank, rv.world_size, rv.local_rank, rv.local_world_size,
          DLDevice{device.is_cuda() ? kDLCUDA : kDLCPU, device.is_cuda() ? device.index() : 0},
          cfg.train.precision == "bf16" ? DSHOST_BF16 : DSHOST_FP32, static_cast<uint64_t>(cfg.run.seed),
          {sizeof(dshost_optimizer_config), o.name == "sgd" ? DSHOST_SGD : DSHOST_ADAMW, o.beta1, o.beta2, o.eps,
           o.weight_decay, o.momentum}};
}

// The rank's compute threads: train.threads, or the node's cores shared by its ranks.
void set_threads(const TrainConfig& t, int local_world_size) {
  const int64_t threads = t.threads > 0 ? t.threads
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

// One rank's run: the pieces it composes are set up in the order they depend on each other,
// then the loop trains, reports, evaluates and saves.
class Worker {
 public:
  explicit Worker(const Job& job)
      : job_(job), cfg_(job.config), rv_(Rendezvous::from_env()),
        device_(cfg_.train.device == "cuda" ? at::Device(at::kCUDA, rank_gpu(rv_.local_rank)) : at::Device(at::kCPU)),
        info_(rank_info(rv_, device_, cfg_)), run_dir_(cfg_.run.dir()) {
    log::init(rv_.rank, cfg_.run.log_all_ranks);
    set_threads(cfg_.train, rv_.local_world_size);
  }

  int run() {
    const auto start = std::chrono::steady_clock::now();
    // Rank 0 holds the run directory for the run's life, from before it looks for a checkpoint.
    if (rv_.rank == 0) {
      const char* launch = std::getenv(kLaunchIdVariable);
      run_lock_ = std::make_unique<RunDirectoryLock>(run_dir_.string(), launch ? launch : "");
    }
    use_device(device_, rv_.local_world_size);
    at::globalContext().setBenchmarkCuDNN(cfg_.train.cudnn_benchmark);
    comm_ = std::make_unique<Comm>(rv_, std::chrono::milliseconds(static_cast<int64_t>(cfg_.comm.timeout_s * 1000)),
                                   device_);
    status_ = std::make_unique<CallStatus>(rv_.rank, comm_.get());
    build();
    position_ = checkpoints_->resume();
    if (position_.step > 0 && position_.step >= plan_.total_steps) {
      log::info(cat("the run is already complete: its checkpoint is at step ", position_.step, " of ",
                    plan_.total_steps, "; nothing was changed (raise train.epochs or train.max_steps to train further)"));
      return 0;
    }
    if (rv_.rank == 0) prepare_run_dir();
    train();
    write_summary(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    return 0;
  }

 private:
  // ---- set-up ------------------------------------------------------------------------
  void build() {
    model_host_ = std::make_unique<PluginHost>(job_.model.plugin.descriptor->name, job_.model.options, info_, comm_.get());
    strategy_host_ =
        std::make_unique<PluginHost>(job_.strategy.plugin.descriptor->name, job_.strategy.options, info_, comm_.get());
    at::manual_seed(cfg_.run.seed);
    model_ = std::make_unique<ModelHandle>(job_.model.plugin, model_host_->table(), *status_);
    load_data();
    strategy_ = std::make_unique<StrategyHandle>(job_.strategy.plugin, strategy_host_->table(), *status_);
    model_host_->set_unit_event_sink([this](dshost_unit_event e, int32_t u, dshost_error* err) {
      return strategy_->on_unit_event(e, u, err);
    });
    param_layouts_ = strategy_->take_parameters(*model_);
    bind_batch_buffers();
    reports_ = std::make_unique<StepReports>(cfg_.train.log_every, device_);
    if (cfg_.train.cuda_graph && can_capture()) graph_ = std::make_unique<MicroBatchGraph>(device_);
    checkpoints_ = std::make_unique<RunCheckpoints>(job_, rv_.rank, rv_.world_size, device_, *comm_, *model_,
                                                    *strategy_, param_layouts_, plan_);
  }

  // The dataset, asked for samples of the model's shape and checked against it; the step plan.
  void load_data() {
    const dshost_model_info& m = model_->info();
    data_ = std::make_unique<DatasetPlugin>(job_, info_, std::vector<int64_t>(m.input_shape, m.input_shape + m.input_ndim));
    check_data_fits_model(job_, *data_, m);
    if (cfg_.train.eval && data_->size(DSHOST_TEST_SPLIT) == 0)
      log::warn("train.eval: there is no test split to evaluate (webdataset: set data.test_path)");
    plan_ = plan_steps(data_->size(DSHOST_TRAIN_SPLIT), rv_.world_size, cfg_.train);
    if (plan_.steps_per_epoch == 0)
      throw UserError(cat(job_.manifest.origin("train", "micro_batch_size"),
                          ": error: train.micro_batch_size x grad_accum_steps = ", plan_.rank_batch,
                          " exceeds the ", plan_.rank_samples, " training samples each of ", rv_.world_size,
                          " ranks gets; lower them"));
    clock_ = std::make_unique<TrainingClock>(plan_.total_steps, plan_.global_batch);
  }

  // train.cuda_graph falls back to eager steps, saying why, where the model or strategy
  // cannot be captured.
  bool can_capture() const {
    std::string why;
    if (!device_.is_cuda()) why = "train.device is not cuda";
    else if (!model_->writes_loss_on_device()) why = cat("model '", model_->name(), "' is built for an ABI before 1.3");
    else why = strategy_->why_not_capturable();
    if (!why.empty()) log::warn(cat("train.cuda_graph: running eagerly: ", why));
    return why.empty();
  }

  void bind_batch_buffers() {
    const dshost_model_info& m = model_->info();
    const int64_t rows = std::max(cfg_.train.micro_batch_size, cfg_.train.eval_batch_size);
    std::vector<int64_t> shape{rows}, target_shape{rows};
    shape.insert(shape.end(), m.input_shape, m.input_shape + m.input_ndim);
    target_shape.insert(target_shape.end(), m.target_shape, m.target_shape + m.target_ndim);
    const at::ScalarType input_dtype = m.input_dtype.code == kDLInt ? at::kLong : at::kFloat;
    inputs_ = at::zeros(shape, at::TensorOptions().dtype(input_dtype).device(device_));
    targets_ = at::zeros(target_shape, at::TensorOptions().dtype(at::kLong).device(device_));
    loss_ = at::zeros({1}, at::TensorOptions().dtype(at::kFloat).device(device_));
    model_->bind_batch(inputs_, targets_, loss_);
    const int workers = resolve_workers(cfg_.data.workers, device_.is_cuda(), rv_.local_world_size);
    pipeline_ = std::make_unique<InputPipeline>(*data_, rows, workers, static_cast<int>(cfg_.data.prefetch), device_,
                                                cfg_.data.decode == "gpu");
  }

  // The run directory and its metrics files (cut back to the checkpoint's step when resuming).
  void prepare_run_dir() {
    std::error_code ec;
    fs::create_directories(run_dir_, ec);
    if (ec)
      throw UserError(cat("cannot create the run directory ", run_dir_.string(), ": ", ec.message(),
                          "; check run.output_dir"), 1);
    metrics_ = std::make_unique<MetricsLog>(run_dir_, position_.step);
    last_report_ = std::chrono::steady_clock::now();
  }

  // ---- the loop ----------------------------------------------------------------------
  void train() {
    const auto& t = cfg_.train;
    const auto& ck = cfg_.checkpoint;
    log::info(cat("training ", model_->name(), " (", model_->info().parameter_count, " parameters) with ",
                  strategy_->name(), " on ", rv_.world_size, " rank(s), ", device_.str(), ", ", t.precision, "; ",
                  plan_.total_steps, " steps of ", plan_.global_batch, " samples"));
    int64_t saved_step = position_.step;
    if (t.profile_steps > 0) start_profiler();
    for (int64_t epoch = position_.epoch; epoch < t.epochs && position_.step < plan_.total_steps; ++epoch) {
      const auto order = std::make_shared<const std::vector<int64_t>>(
          shard_indices(data_->size(DSHOST_TRAIN_SPLIT), rv_.rank, rv_.world_size, info_.seed, epoch,
                        /*shuffle=*/true, /*pad=*/true));
      clock_->begin_epoch();
      for (int64_t s = position_.step_in_epoch; s < plan_.steps_per_epoch && position_.step < plan_.total_steps; ++s) {
        if (profiler_) profiler_->begin_step(position_.step);
        train_step(order, s * plan_.rank_batch, epoch, position_.step);
        if (profiler_) profiler_->end_step(position_.step);
        position_ = {position_.step + 1, epoch, s + 1};
        if (ck.every_steps > 0 && position_.step % ck.every_steps == 0) saved_step = save_checkpoint();
      }
      clock_->end_epoch();
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

  void train_step(const std::shared_ptr<const std::vector<int64_t>>& order, int64_t first, int64_t epoch,
                  int64_t step) {
    const auto& t = cfg_.train;
    const at::Tensor step_loss = reports_->next_loss();
    const auto micro_batches = static_cast<int32_t>(t.grad_accum_steps);
    for (int32_t m = 0; m < micro_batches; ++m) {
      const uint64_t augment_seed = info_.seed * 1000003 + static_cast<uint64_t>(epoch) + 1;
      pipeline_->load(DSHOST_TRAIN_SPLIT, order, first + m * t.micro_batch_size, t.micro_batch_size, augment_seed,
                      inputs_, targets_);
      strategy_->begin_micro_batch(m, micro_batches);
      const auto forward_backward = [&] { model_->forward_backward(t.micro_batch_size, 1.0 / micro_batches); };
      if (graph_) graph_->run(forward_backward);
      else forward_backward();
      step_loss.add_(loss_.to(at::kDouble).div_(static_cast<double>(micro_batches)));
    }
    const double lr = learning_rate(cfg_.optimizer, cfg_.scheduler, step, plan_.total_steps);
    const at::Tensor step_norm = reports_->next_norm();
    const Owned<DLManagedTensor> norm_out = lend(step_norm);
    strategy_->step({sizeof(dshost_step_args), lr, t.grad_clip, &norm_out->dl_tensor, t.nonfinite == "skip"},
                    step_norm);
    clock_->step_done();
    reports_->add(step, epoch, lr);
    if (status_lines_ && clock_->status_due(step + 1)) show_status(step + 1, epoch, step_loss.item<double>());
    const bool last_of_epoch = (step + 1) % plan_.steps_per_epoch == 0 || step + 1 == plan_.total_steps;
    if ((step + 1) % t.log_every == 0 || last_of_epoch) report();
  }

  // Collective: every rank reports at the same steps. Rank 0 appends the steps to
  // metrics.jsonl and logs the last.
  void report() {
    const std::vector<StepRecord> steps = reports_->collect(
        [this](const std::vector<double>& v) { return comm_->sum(v); }, rv_.rank, rv_.world_size, nonfinite_);
    last_loss_ = steps.back().loss;
    if (rv_.rank == 0) {
      const auto now = std::chrono::steady_clock::now();
      const double rate = static_cast<double>(steps.size() * plan_.global_batch) /
                          std::max(std::chrono::duration<double>(now - last_report_).count(), 1e-9);
      const int64_t peak_host = peak_rss_bytes(), peak_device = allocated_on(device_).peak;
      for (const auto& s : steps)
        metrics_->step({s.step + 1, s.epoch + 1, s.loss, s.lr, s.grad_norm, rate, peak_host, peak_device});
      metrics_->flush();
      const StepRecord& last = steps.back();
      log::info(progress_log_line(figures(last.step + 1, last.epoch, last.loss), last.lr, last.grad_norm));
    }
    last_report_ = std::chrono::steady_clock::now();
  }

  ProgressFigures figures(int64_t steps_done, int64_t epoch, double loss) const {
    return {steps_done, plan_.total_steps, epoch, cfg_.train.epochs, (steps_done - 1) % plan_.steps_per_epoch + 1,
            plan_.steps_per_epoch, loss, clock_->samples_per_second(), clock_->eta_seconds(steps_done)};
  }

  // Rank 0's progress bar on the launcher's terminal (a status line, see dshost/process.hpp);
  // the loss is rank 0's own. An empty status line clears it.
  void show_status(int64_t steps_done, int64_t epoch, double loss) const {
    const bool last = steps_done == plan_.total_steps;
    std::fprintf(stderr, "\r%s\n", last ? "" : progress_bar(figures(steps_done, epoch, loss)).c_str());
    std::fflush(stderr);
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
      const dshost_eval_result r = model_->evaluate(n);
      loss_sum += r.loss_sum;
      correct += static_cast<double>(r.correct);
      count += static_cast<double>(r.count);
    }
    const auto totals = comm_->sum({loss_sum, correct, count});
    test_loss_ = totals[0] / totals[2];
    test_accuracy_ = totals[1] / totals[2];
    evaluated_ = true;
    if (rv_.rank == 0) metrics_->evaluation(position_.step, test_accuracy_, test_loss_);
    last_report_ = std::chrono::steady_clock::now();  // throughput counts training time only
    log::info(cat(epoch >= 0 ? cat("epoch ", epoch + 1, " ") : std::string(), "test accuracy ", std::fixed,
                  std::setprecision(4), test_accuracy_, " loss ", test_loss_, " (", static_cast<int64_t>(totals[2]),
                  " samples)"));
  }

  // Collective. metrics.jsonl reaches the checkpoint's step first. Returns the step saved.
  int64_t save_checkpoint() {
    if (reports_->pending() > 0) report();
    checkpoints_->save(position_);
    return position_.step;
  }

  // ---- summary -----------------------------------------------------------------------
  void write_summary(double wall_seconds) {
    RunSummary s;
    s.memory = strategy_->memory();
    s.peak_host_memory_bytes = static_cast<int64_t>(comm_->max(static_cast<double>(peak_rss_bytes())));
    s.peak_device_memory_bytes = static_cast<int64_t>(comm_->max(static_cast<double>(allocated_on(device_).peak)));
    s.skipped_files = static_cast<int64_t>(comm_->sum({static_cast<double>(data_->skipped())})[0]);
    if (rv_.rank != 0) return;
    if (s.skipped_files > 0)
      log::warn(cat(s.skipped_files, " sample(s) could not be made and were skipped (each rank counts its "
                    "own); the warnings above name them"));
    s.run = cfg_.run.name;
    s.model = model_->name();
    s.strategy = strategy_->name();
    s.world_size = rv_.world_size;
    s.device = device_.str();
    s.on_gpu = device_.is_cuda();
    s.precision = cfg_.train.precision;
    s.parameters = model_->info().parameter_count;
    s.steps = plan_.total_steps;
    s.evaluated = evaluated_;
    s.test_accuracy = test_accuracy_;
    s.test_loss = test_loss_;
    s.final_train_loss = last_loss_;
    s.samples_per_second = clock_->trained_samples_per_second();
    s.skipped_steps = nonfinite_.skipped_steps();
    s.train_time_s = clock_->train_seconds();
    s.epoch_times_s = clock_->epoch_seconds();
    s.wall_time_s = wall_seconds;
    s.forward_flops_per_sample = model_->info().forward_flops_per_sample;
    s.units = unit_figures();
    s.peak_tflops =
        device_peak_tflops(cfg_.train.peak_tflops, device_, cfg_.train.precision == "bf16") * rv_.world_size;
    write_file_atomically((run_dir_ / "summary.json").string(), summary_json(s).dump(2) + "\n");
    for (const std::string& line : summary_lines(s)) log::info(line);
    log::info(cat("summary written to ", (run_dir_ / "summary.json").string()));
  }

  std::vector<UnitFigures> unit_figures() const {
    std::vector<UnitFigures> units;
    for (size_t u = 0; u < param_layouts_.size(); ++u) {
      const std::string first = param_layouts_[u].empty() ? "" : param_layouts_[u][0].name;
      UnitFigures f{first.substr(0, first.find('.')), 0, model_->unit_flops(static_cast<int32_t>(u))};
      for (const auto& p : param_layouts_[u]) f.parameters += p.numel();
      units.push_back(f);
    }
    return units;
  }

  const Job& job_;
  const Config& cfg_;
  Rendezvous rv_;
  at::Device device_;
  RankInfo info_;
  fs::path run_dir_;
  std::unique_ptr<RunDirectoryLock> run_lock_;  // rank 0's
  std::unique_ptr<Comm> comm_;
  std::unique_ptr<CallStatus> status_;
  // The plugins' services, then their instances: destroyed in the opposite order.
  std::unique_ptr<PluginHost> model_host_, strategy_host_;
  std::unique_ptr<ModelHandle> model_;
  std::unique_ptr<DatasetPlugin> data_;
  std::unique_ptr<StrategyHandle> strategy_;
  std::vector<std::vector<TensorLayout>> param_layouts_;  // [unit][index]
  StepPlan plan_;
  Position position_;
  at::Tensor inputs_, targets_, loss_;  // bound to the model; loss_: a micro-batch's mean, on the device
  std::unique_ptr<InputPipeline> pipeline_;  // after the data: its workers read data_
  std::unique_ptr<StepReports> reports_;
  NonfiniteGuard nonfinite_{cfg_.train.nonfinite, rv_.rank};
  std::unique_ptr<MicroBatchGraph> graph_;             // train.cuda_graph
  std::unique_ptr<StepProfiler> profiler_;             // train.profile_steps
  std::unique_ptr<RunCheckpoints> checkpoints_;
  std::unique_ptr<MetricsLog> metrics_;  // rank 0's
  std::unique_ptr<TrainingClock> clock_;
  std::chrono::steady_clock::time_point last_report_;
  const bool status_lines_ = rv_.rank == 0 && std::getenv(kStatusLinesVariable) != nullptr;
  double last_loss_ = 0, test_loss_ = 0, test_accuracy_ = 0;
  bool evaluated_ = false;
};

}  // namespace

int run_worker(const Job& job) { return Worker(job).run(); }

}  // namespace dshost
