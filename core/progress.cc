#include "core/progress.h"

#include <dshost/plugin.hpp>  // cat()

#include <algorithm>
#include <iomanip>

namespace dshost {
namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

std::string duration_text(double seconds) {
  const int64_t s = static_cast<int64_t>(seconds + 0.5);
  return s >= 60 ? cat(s / 60, "m", std::setw(2), std::setfill('0'), s % 60, "s") : cat(s, "s");
}

std::string progress_bar(const ProgressFigures& f) {
  constexpr int kWidth = 24;
  const int64_t total = std::max<int64_t>(f.total_steps, 1);
  const int filled = static_cast<int>(kWidth * f.steps_done / total);
  return cat("[", std::string(filled, '#'), std::string(kWidth - filled, '.'), "] ",
             100 * f.steps_done / total, "% step ", f.steps_done, "/", f.total_steps, " epoch ",
             f.epoch + 1, "/", f.epochs, " loss ", std::fixed, std::setprecision(4), f.loss, " ",
             std::setprecision(0), f.samples_per_second, " samples/s eta ",
             duration_text(f.eta_seconds));
}

std::string progress_log_line(const ProgressFigures& f, double lr, double grad_norm) {
  return cat("epoch ", f.epoch + 1, "/", f.epochs, " step ", f.step_in_epoch, "/",
             f.steps_per_epoch, " loss ", std::fixed, std::setprecision(4), f.loss, " lr ",
             std::scientific, std::setprecision(2), lr, " grad_norm ", std::fixed,
             std::setprecision(3), grad_norm, " ", std::setprecision(0), f.samples_per_second,
             " samples/s eta ", duration_text(f.eta_seconds));
}

void TrainingClock::begin_epoch() {
  epoch_start_ = Clock::now();
  in_epoch_ = true;
}

void TrainingClock::end_epoch() {
  epoch_seconds_.push_back(seconds_since(epoch_start_));
  train_seconds_ += epoch_seconds_.back();
  in_epoch_ = false;
}

Span TrainingClock::so_far() const {
  return {samples_, train_seconds_ + (in_epoch_ ? seconds_since(epoch_start_) : 0.0)};
}

void TrainingClock::window_done() {
  const Span now = so_far();
  window_ = {now.samples - last_window_.samples, now.seconds - last_window_.seconds};
  if (++windows_ == 1) first_window_ = now;
  last_window_ = now;
}

double TrainingClock::window_samples_per_second() const {
  return windows_ == 0 ? so_far().rate() : window_.rate();
}

double TrainingClock::trained_samples_per_second() const {
  return static_cast<double>(samples_) / std::max(train_seconds_, 1e-9);
}

double TrainingClock::eta_seconds(int64_t steps_done) const {
  const double rate = steady().samples > 0 ? steady().rate() : so_far().rate();
  return static_cast<double>((total_steps_ - steps_done) * global_batch_) / std::max(rate, 1e-9);
}

bool TrainingClock::status_due(int64_t steps_done) {
  if (steps_done != total_steps_ && seconds_since(last_status_) < 0.2) return false;
  last_status_ = Clock::now();
  return true;
}

}  // namespace dshost
