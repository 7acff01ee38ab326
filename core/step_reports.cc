#include "core/step_reports.h"

#include "core/error.h"
#include "core/log.h"
#include "core/manifest.h"  // join

#include <ATen/ATen.h>

#include <cmath>

namespace dshost {

void NonfiniteGuard::check(const std::vector<StepRecord>& steps,
                           const std::vector<double>& first_bad) {
  if (policy_ == Nonfinite::stop) stop_at_first(steps, first_bad);
  if (policy_ == Nonfinite::skip) count_skips(steps);
}

// Runs before the metrics are written and before any save, so no checkpoint holds that state.
void NonfiniteGuard::stop_at_first(const std::vector<StepRecord>& steps,
                                   const std::vector<double>& first_bad) const {
  auto first = static_cast<int64_t>(steps.size());
  for (double bad : first_bad)
    if (bad > 0) first = std::min(first, static_cast<int64_t>(bad) - 1);
  for (int64_t i = 0; i < first; ++i)
    if (!std::isfinite(steps[i].grad_norm)) first = i;
  if (first == static_cast<int64_t>(steps.size())) return;
  std::vector<std::string> ranks;
  for (size_t r = 0; r < first_bad.size(); ++r)
    if (first_bad[r] == static_cast<double>(first + 1)) ranks.push_back(std::to_string(r));
  const StepRecord& s = steps[first];
  const std::string what = ranks.empty() ? cat("the gradient norm is ", s.grad_norm)
                                         : cat("the loss of rank", ranks.size() > 1 ? "s " : " ",
                                               join(ranks), " is not finite");
  throw UserError(
      cat("step ", s.step + 1, " (epoch ", s.epoch + 1, "): ", what,
          "; the run stopped (train.nonfinite = \"stop\") without saving that state. "
          "Lower optimizer.lr, set train.grad_clip, or resume from the last checkpoint; "
          "train.nonfinite = \"ignore\" trains on"),
      1);
}

// The strategy dropped the update of each step whose norm is not finite: the same norm on
// every rank, so every rank dropped the same steps. Many in a row: the run stopped learning.
void NonfiniteGuard::count_skips(const std::vector<StepRecord>& steps) {
  for (const StepRecord& s : steps) {
    if (std::isfinite(s.grad_norm)) {
      skips_in_a_row_ = 0;
      continue;
    }
    ++skipped_;
    if (rank_ == 0)
      log::warn(cat("step ", s.step + 1, ": the gradient norm is ", s.grad_norm,
                    "; its update was skipped (train.nonfinite = \"skip\")"));
    if (++skips_in_a_row_ == kMostSkipsInARow)
      throw UserError(
          cat("steps ", s.step + 2 - kMostSkipsInARow, " to ", s.step + 1, " (epoch ", s.epoch + 1,
              "): ", kMostSkipsInARow,
              " steps in a row had a non-finite gradient norm and "
              "were skipped (train.nonfinite = \"skip\"); the run stopped. Lower "
              "optimizer.lr, set train.grad_clip, check the data, or resume from the last "
              "checkpoint"),
          1);
  }
}

StepReports::StepReports(int64_t capacity, const at::Device& device)
    : values_(at::zeros({2, capacity}, at::TensorOptions().dtype(at::kDouble).device(device))) {}

// One collective carries the steps' losses, then each rank's first step (+ 1) whose loss
// was not finite.
std::vector<StepRecord> StepReports::collect(const SumOverRanks& sum_over_ranks, int rank,
                                             int world_size, NonfiniteGuard& guard) {
  const int64_t n = pending();
  const at::Tensor held =
      values_.narrow(1, 0, n).to(at::kCPU, /*non_blocking=*/false, /*copy=*/true).contiguous();
  values_.zero_();
  const auto value = held.accessor<double, 2>();  // [loss, norm][step]
  std::vector<double> sums(n + world_size, 0.0);
  for (int64_t i = 0; i < n; ++i) sums[i] = value[0][i];
  for (int64_t i = 0; i < n && sums[n + rank] == 0; ++i)
    if (!std::isfinite(value[0][i])) sums[n + rank] = static_cast<double>(i + 1);
  sums = sum_over_ranks(sums);
  std::vector<StepRecord> steps = std::move(steps_);
  steps_.clear();
  for (int64_t i = 0; i < n; ++i) {
    steps[i].loss = sums[i] / world_size;
    steps[i].grad_norm = value[1][i];
  }
  guard.check(steps, std::vector<double>(sums.begin() + n, sums.end()));
  return steps;
}

}  // namespace dshost
