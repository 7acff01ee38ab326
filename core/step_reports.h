// Each step's loss and gradient norm, kept on the device until a report reads them all at
// once (one copy and one collective per report rather than a synchronisation every step),
// and what train.nonfinite does with steps whose loss or norm is NaN or infinite.
#pragma once

#include "core/config.h"

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace dshost {

struct StepRecord {
  int64_t step = 0, epoch = 0;  // 0-based
  double loss = 0, lr = 0, grad_norm = 0;
};

// train.nonfinite applied to reported steps. Its errors name the step, the epoch and the
// ranks, and say what to change.
class NonfiniteGuard {
 public:
  static constexpr int64_t kMostSkipsInARow = 10;

  NonfiniteGuard(Nonfinite policy, int rank) : policy_(policy), rank_(rank) {}
  // `steps`: reported steps, loss averaged over ranks. `first_bad[r]`: 1 + the index in
  // `steps` of rank r's first step whose own loss was not finite, 0 where none was.
  // stop throws at the first step with a non-finite loss on some rank or a non-finite norm.
  // skip counts (and rank 0 names) the steps whose update the strategy dropped for their
  // norm, and throws after kMostSkipsInARow in a row. ignore does nothing.
  void check(const std::vector<StepRecord>& steps, const std::vector<double>& first_bad);
  int64_t skipped_steps() const { return skipped_; }

 private:
  void stop_at_first(const std::vector<StepRecord>& steps,
                     const std::vector<double>& first_bad) const;
  void count_skips(const std::vector<StepRecord>& steps);

  Nonfinite policy_;
  int rank_;
  int64_t skipped_ = 0, skips_in_a_row_ = 0;
};

class StepReports {
 public:
  // Room for `capacity` steps between reports (train.log_every).
  StepReports(int64_t capacity, const at::Device& device);
  // The next step's loss (a double the micro-batches add their share to) and gradient norm,
  // on the device.
  at::Tensor next_loss() const { return values_[0].narrow(0, pending(), 1); }
  at::Tensor next_norm() const { return values_[1].narrow(0, pending(), 1); }
  // The next step is done: its figures are in next_loss() and next_norm().
  void add(int64_t step, int64_t epoch, double lr) {
    steps_.push_back({step, epoch, 0.0, lr, 0.0});
  }
  int64_t pending() const { return static_cast<int64_t>(steps_.size()); }
  // Every rank at the same steps: the pending steps with their loss averaged over ranks and
  // their norm, checked by `guard`; none are pending after it. `sum_over_ranks`: the
  // collective (Comm::sum), called once.
  using SumOverRanks = std::function<std::vector<double>(const std::vector<double>&)>;
  std::vector<StepRecord> collect(const SumOverRanks& sum_over_ranks, int rank, int world_size,
                                  NonfiniteGuard& guard);

 private:
  at::Tensor values_;  // double, [loss | norm, capacity]
  std::vector<StepRecord> steps_;
};

}  // namespace dshost
