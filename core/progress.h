// Training progress as the user reads it: the rate of the last report's window and the steady
// rate (evaluation excluded), the time the steps left take, rank 0's progress bar and the log
// line of each report.
#pragma once

#include <chrono>
#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

namespace dshost {

// "42s", "3m07s".
std::string duration_text(double seconds);

// What the bar and the log line show of a run after `steps_done` optimizer steps.
struct ProgressFigures {
  int64_t steps_done = 0, total_steps = 0;
  int64_t epoch = 0, epochs = 0;                   // epoch: 0-based
  int64_t step_in_epoch = 0, steps_per_epoch = 0;  // step_in_epoch: 1-based
  double loss = 0, samples_per_second = 0, eta_seconds = 0;
};

// "[######..................] 25% step 6/24 epoch 1/2 loss 0.5000 100 samples/s eta 1m05s"
std::string progress_bar(const ProgressFigures& f);
// "epoch 1/2 step 6/12 loss 0.5000 lr 1.00e-03 grad_norm 0.250 100 samples/s eta 1m05s"
std::string progress_log_line(const ProgressFigures& f, double lr, double grad_norm);

// Samples trained in some seconds of training.
struct Span {
  int64_t samples = 0;
  double seconds = 0;
  double rate() const { return static_cast<double>(samples) / std::max(seconds, 1e-9); }
};

// The clock of a run's training: each epoch's training time, the samples trained, and the
// report windows. The first window (cuDNN's autotuning, CUDA graph capture, caches warming)
// is left out of the steady rate.
class TrainingClock {
 public:
  TrainingClock(int64_t total_steps, int64_t global_batch)
      : total_steps_(total_steps), global_batch_(global_batch) {}
  void begin_epoch();
  void end_epoch();
  void step_done() { samples_ += global_batch_; }
  // A report's window ends here.
  void window_done();
  // The last window's rate; before the first report, the rate so far.
  double window_samples_per_second() const;
  // After the first window, up to the end of the last; empty before a second window ended.
  Span steady() const {
    return {last_window_.samples - first_window_.samples,
            last_window_.seconds - first_window_.seconds};
  }
  // From the steady rate where there is one, else from the rate so far.
  double eta_seconds(int64_t steps_done) const;
  // Samples per second over the ended epochs: the run's figure once training is over.
  double trained_samples_per_second() const;
  double train_seconds() const { return train_seconds_; }
  const std::vector<double>& epoch_seconds() const { return epoch_seconds_; }
  // At most five times a second, and always for the last step.
  bool status_due(int64_t steps_done);

 private:
  using Clock = std::chrono::steady_clock;
  Span so_far() const;
  int64_t total_steps_, global_batch_;
  int64_t samples_ = 0;
  double train_seconds_ = 0;
  bool in_epoch_ = false;
  std::vector<double> epoch_seconds_;
  Span first_window_, last_window_, window_;  // the first two: training so far at their ends
  int windows_ = 0;
  Clock::time_point epoch_start_ = Clock::now(), last_status_{};
};

}  // namespace dshost
