#include <dshost/torch.hpp>    // first: ATen's DLPack for everything below
#include <dshost/process.hpp>  // status lines

#include "core/train.h"

#include "core/cuda_graph.h"
#include "core/dataset.h"
#include "core/error.h"
#include "core/evaluation.h"
#include "core/input_pipeline.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/plugin_handles.h"
#include "core/profiler.h"
#include "core/progress.h"
#include "core/rank_setup.h"
#include "core/run_checkpoint.h"
#include "core/run_lock.h"
#include "core/safetensors.h"  // write_file_atomically
#include "core/sampler.h"
#include "core/step_reports.h"
#include "core/summary.h"

#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iomanip>

namespace fs = std::filesystem;

namespace dshost {
namespace {

int64_t peak_rss_bytes() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<int64_t>(usage.ru_maxrss) * 1024;
}

// One rank's run: its pieces set up (core/rank_setup.h), then the loop trains, reports,
// evaluates and saves.
class Worker {
 public:
  Worker(const Job& job, bool evaluate)
      : job_(job),
        evaluate_only_(evaluate),
        cfg_(job.config),
        rv_(Rendezvous::from_env()),
        device_(rank_device(cfg_.train, rv_)),
        run_dir_(cfg_.run.dir()) {
    log::init(rv_.rank, cfg_.run.log_all_ranks);
  }

  int run() {
    const auto start = std::chrono::steady_clock::now();
    // Rank 0 holds the run directory for the run's life, from before it looks for a checkpoint.
    if (rv_.rank == 0) {
      const char* launch = std::getenv(kLaunchIdVariable);
      run_lock_ = std::make_unique<RunDirectoryLock>(run_dir_.string(), launch ? launch : "");
    }
    s_ = std::make_unique<RankSetup>(job_, rv_, device_, rank_info(rv_, device_, cfg_));
    reports_ = std::make_unique<StepReports>(cfg_.train.log_every, device_);
    clock_ = std::make_unique<TrainingClock>(plan().total_steps, plan().global_batch);
    position_ = s_->checkpoints->resume(/*training=*/!evaluate_only_);
    if (evaluate_only_) return evaluate_checkpoint();
    if (position_.step > 0 && position_.step >= plan().total_steps) {
      log::info(cat("the run is already complete: its checkpoint is at step ", position_.step,
                    " of ", plan().total_steps,
                    "; nothing was changed (raise train.epochs or train.max_steps to train "
                    "further)"));
      return 0;
    }
    if (rv_.rank == 0) prepare_run_dir();
    train();
    write_summary(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    return 0;
  }

 private:
  // The run directory and its metrics files (cut back to the checkpoint's step when resuming).
  void prepare_run_dir() {
    std::error_code ec;
    fs::create_directories(run_dir_, ec);
    if (ec)
      throw UserError(cat("cannot create the run directory ", run_dir_.string(), ": ", ec.message(),
                          "; check run.output_dir"),
                      1);
    metrics_ = std::make_unique<MetricsLog>(run_dir_, position_.step);
  }

  // ---- the loop ----------------------------------------------------------------------
  void train() {
    const auto& t = cfg_.train;
    const auto& ck = cfg_.checkpoint;
    log::info(cat("training ", s_->model->name(), " (", s_->model->info().parameter_count,
                  " parameters) with ", s_->strategy->name(), " on ", rv_.world_size, " rank(s), ",
                  device_.str(), ", ", choice_name(t.precision), "; ", plan().total_steps,
                  " steps of ", plan().global_batch, " samples"));
    int64_t saved_step = position_.step;
    if (t.profile_steps > 0)
      profiler_ =
          profile_window(run_dir_ / "profile" / cat("rank", rv_.rank, ".pt.trace.json"), device_,
                         position_.step, t.profile_after, t.profile_steps, plan().total_steps);
    for (int64_t epoch = position_.epoch; epoch < t.epochs && position_.step < plan().total_steps;
         ++epoch) {
      const auto order = std::make_shared<const std::vector<int64_t>>(
          shard_indices(s_->data->size(DSHOST_TRAIN_SPLIT), rv_.rank, rv_.world_size, seed(), epoch,
                        /*shuffle=*/true, /*pad=*/true));
      clock_->begin_epoch();
      for (int64_t s = position_.step_in_epoch;
           s < plan().steps_per_epoch && position_.step < plan().total_steps; ++s) {
        if (profiler_) profiler_->begin_step(position_.step);
        train_step(order, s * plan().rank_batch, epoch, position_.step);
        if (profiler_) profiler_->end_step(position_.step);
        position_ = {position_.step + 1, epoch, s + 1};
        if (ck.every_steps > 0 && position_.step % ck.every_steps == 0)
          saved_step = save_checkpoint();
      }
      clock_->end_epoch();
      if (t.eval) evaluate(epoch);
      if (position_.step_in_epoch == plan().steps_per_epoch)
        position_ = {position_.step, epoch + 1, 0};
      if (ck.at_epoch_end && position_.step_in_epoch == 0 && saved_step != position_.step)
        saved_step = save_checkpoint();
    }
    if (t.eval && test_.samples == 0) evaluate(-1);  // stopped by max_steps inside the first epoch
    if (ck.enabled() && saved_step != position_.step) save_checkpoint();  // the final state
  }

  void train_step(const std::shared_ptr<const std::vector<int64_t>>& order, int64_t first,
                  int64_t epoch, int64_t step) {
    const auto& t = cfg_.train;
    const at::Tensor step_loss = reports_->next_loss();
    const auto micro_batches = static_cast<int32_t>(t.grad_accum_steps);
    const uint64_t augment_seed = seed() * 1000003 + static_cast<uint64_t>(epoch) + 1;
    for (int32_t m = 0; m < micro_batches; ++m) {
      s_->pipeline->load(DSHOST_TRAIN_SPLIT, order, first + m * t.micro_batch_size,
                         t.micro_batch_size, augment_seed, s_->inputs, s_->targets);
      s_->strategy->begin_micro_batch(m, micro_batches);
      const auto forward_backward = [&] {
        s_->model->forward_backward(t.micro_batch_size, 1.0 / micro_batches);
      };
      if (s_->graph)
        s_->graph->run(forward_backward);
      else
        forward_backward();
      step_loss.add_(s_->loss.to(at::kDouble).div_(static_cast<double>(micro_batches)));
    }
    const double lr = learning_rate(cfg_.optimizer, cfg_.scheduler, step, plan().total_steps);
    s_->strategy->step(lr, t.grad_clip, t.nonfinite == Nonfinite::skip, reports_->next_norm());
    clock_->step_done();
    reports_->add(step, epoch, lr);
    if (status_lines_ && clock_->status_due(step + 1))
      show_status(step + 1, epoch, step_loss.item<double>());
    const bool last_of_epoch =
        (step + 1) % plan().steps_per_epoch == 0 || step + 1 == plan().total_steps;
    if ((step + 1) % t.log_every == 0 || last_of_epoch) report();
  }

  // Collective: every rank reports at the same steps. Rank 0 appends the steps to
  // metrics.jsonl and logs the last.
  void report() {
    const std::vector<StepRecord> steps =
        reports_->collect([this](const std::vector<double>& v) { return s_->comm->sum(v); },
                          rv_.rank, rv_.world_size, nonfinite_);
    clock_->window_done();  // after the collective: the window's work is done on the device
    last_loss_ = steps.back().loss;
    if (rv_.rank == 0) {
      const double rate = clock_->window_samples_per_second();
      const int64_t peak_host = peak_rss_bytes(), peak_device = allocated_on(device_).peak;
      for (const auto& s : steps)
        metrics_->step(
            {s.step + 1, s.epoch + 1, s.loss, s.lr, s.grad_norm, rate, peak_host, peak_device});
      metrics_->flush();
      const StepRecord& last = steps.back();
      log::info(progress_log_line(figures(last.step + 1, last.epoch, last.loss), last.lr,
                                  last.grad_norm));
    }
  }

  ProgressFigures figures(int64_t steps_done, int64_t epoch, double loss) const {
    return {steps_done,
            plan().total_steps,
            epoch,
            cfg_.train.epochs,
            (steps_done - 1) % plan().steps_per_epoch + 1,
            plan().steps_per_epoch,
            loss,
            clock_->window_samples_per_second(),
            clock_->eta_seconds(steps_done)};
  }

  // Rank 0's progress bar on the launcher's terminal (a status line, see dshost/process.hpp);
  // the loss is rank 0's own. An empty status line clears it.
  void show_status(int64_t steps_done, int64_t epoch, double loss) const {
    const bool last = steps_done == plan().total_steps;
    std::fprintf(stderr, "\r%s\n",
                 last ? "" : progress_bar(figures(steps_done, epoch, loss)).c_str());
    std::fflush(stderr);
  }

  void evaluate(int64_t epoch) {
    const Evaluation e = evaluate_test_split(*s_, rv_, cfg_.train.eval_batch_size);
    if (e.samples == 0) return;  // (load_data said so)
    test_ = e;
    if (rv_.rank == 0) metrics_->evaluation(position_.step, e.accuracy, e.loss);
    log::info(cat(epoch >= 0 ? cat("epoch ", epoch + 1, " ") : std::string(), "test accuracy ",
                  std::fixed, std::setprecision(4), e.accuracy, " loss ", e.loss, " (", e.samples,
                  " samples)"));
  }

  // dshost eval: the checkpoint the ranks resumed from, on the test split.
  int evaluate_checkpoint() {
    const Evaluation e = evaluate_test_split(*s_, rv_, cfg_.train.eval_batch_size);
    if (e.samples == 0)
      throw UserError(cat("dataset '", job_.dataset.plugin.descriptor->name,
                          "' has no test split: there is nothing to evaluate on"));
    if (rv_.rank == 0) write_evaluation(run_dir_, cfg_.checkpoint.resume, position_.step, e);
    return 0;
  }

  // Collective. metrics.jsonl reaches the checkpoint's step first. Returns the step saved.
  int64_t save_checkpoint() {
    if (reports_->pending() > 0) report();
    s_->checkpoints->save(position_);
    return position_.step;
  }

  // ---- summary -----------------------------------------------------------------------
  void write_summary(double wall_seconds) {
    RunSummary sum;
    sum.memory = s_->strategy->memory();
    for (const ModelBuffer& p : s_->frozen)  // model.freeze's, on the device, held by the host
      sum.memory.param_device += static_cast<int64_t>(p.value.nbytes());
    sum.peak_host_memory_bytes =
        static_cast<int64_t>(s_->comm->max(static_cast<double>(peak_rss_bytes())));
    sum.peak_device_memory_bytes =
        static_cast<int64_t>(s_->comm->max(static_cast<double>(allocated_on(device_).peak)));
    sum.skipped_files =
        static_cast<int64_t>(s_->comm->sum({static_cast<double>(s_->data->skipped())})[0]);
    if (rv_.rank != 0) return;
    if (sum.skipped_files > 0)
      log::warn(cat(sum.skipped_files,
                    " sample(s) could not be made and were skipped (each rank counts its "
                    "own); the warnings above name them"));
    sum.run = cfg_.run.name;
    sum.model = s_->model->name();
    sum.strategy = s_->strategy->name();
    sum.world_size = rv_.world_size;
    sum.device = device_.str();
    sum.on_gpu = device_.is_cuda();
    sum.precision = choice_name(cfg_.train.precision);
    sum.parameters = s_->model->info().parameter_count;
    sum.steps = plan().total_steps;
    sum.evaluated = test_.samples > 0;
    sum.test_accuracy = test_.accuracy;
    sum.test_loss = test_.loss;
    sum.final_train_loss = last_loss_;
    sum.samples_per_second = clock_->trained_samples_per_second();
    sum.steady = clock_->steady();
    sum.skipped_steps = nonfinite_.skipped_steps();
    sum.train_time_s = clock_->train_seconds();
    sum.epoch_times_s = clock_->epoch_seconds();
    sum.wall_time_s = wall_seconds;
    sum.forward_flops_per_sample = s_->model->info().forward_flops_per_sample;
    sum.units =
        unit_figures(s_->model_params, [this](int32_t u) { return s_->model->unit_flops(u); });
    for (size_t u = 0; u < sum.units.size(); ++u)
      sum.units[u].trained = s_->placement.strategy_unit.at(u) >= 0;
    sum.peak_tflops = device_peak_tflops(cfg_.train.peak_tflops, device_,
                                         cfg_.train.precision != Precision::fp32) *
                      rv_.world_size;
    write_file_atomically((run_dir_ / "summary.json").string(), summary_json(sum).dump(2) + "\n");
    metrics_->rates(position_.step, sum.samples_per_second, sum.steady.rate());
    metrics_->flush();
    for (const std::string& line : summary_lines(sum)) log::info(line);
    log::info(cat("summary written to ", (run_dir_ / "summary.json").string()));
  }

  const StepPlan& plan() const { return s_->plan; }
  uint64_t seed() const { return static_cast<uint64_t>(cfg_.run.seed); }

  const Job& job_;
  const bool evaluate_only_;  // dshost eval
  const Config& cfg_;
  Rendezvous rv_;
  at::Device device_;
  fs::path run_dir_;
  std::unique_ptr<RunDirectoryLock> run_lock_;  // rank 0's
  std::unique_ptr<RankSetup> s_;
  Position position_;
  std::unique_ptr<StepReports> reports_;
  NonfiniteGuard nonfinite_{cfg_.train.nonfinite, rv_.rank};
  std::unique_ptr<StepProfiler> profiler_;  // train.profile_steps
  std::unique_ptr<MetricsLog> metrics_;     // rank 0's
  std::unique_ptr<TrainingClock> clock_;
  const bool status_lines_ = rv_.rank == 0 && std::getenv(kStatusLinesVariable) != nullptr;
  double last_loss_ = 0;
  Evaluation test_;  // the last evaluation's
};

}  // namespace

int run_worker(Job job, bool evaluate) {
  const Rendezvous rv = Rendezvous::from_env();
  int64_t& accumulation = job.config.train.grad_accum_steps;
  const int64_t planned = accumulation;
  accumulation = kept_accumulation(job.config.train, rv.world_size, rv.full_world_size);
  Worker worker(job, evaluate);
  if (rv.rank == 0 && accumulation != planned)
    log::warn(cat(rv.world_size, " of the job's ", rv.full_world_size,
                  " ranks run (launcher.min_nodes): train.grad_accum_steps ", planned, " -> ",
                  accumulation, " keeps the global batch"));
  // The error is printed here, before the worker's teardown (its communicator, plugins and
  // loader threads), which may wait, where main() would print it only after.
  try {
    return worker.run();
  } catch (const std::exception& e) {
    return report_error(e);
  }
}

}  // namespace dshost
