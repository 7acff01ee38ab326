// The training schedule as arithmetic: the steps of an epoch and of the run, where a resumed
// run goes on, and each step's learning rate.
#pragma once

#include "core/config.h"

#include <cstdint>

namespace dshost {

struct StepPlan {
  int64_t rank_samples = 0;     // a rank's share of the training split (padded to the same)
  int64_t rank_batch = 0;       // samples one rank takes per optimizer step
  int64_t global_batch = 0;     // samples all ranks take per optimizer step
  int64_t steps_per_epoch = 0;  // 0: rank_samples is smaller than rank_batch
  int64_t total_steps = 0;      // of the run: train.epochs of them, cut at train.max_steps
};

// The plan for `train_samples` shared by `world_size` ranks (each padded to the same share).
StepPlan plan_steps(int64_t train_samples, int world_size, const TrainConfig& train);

// The gradient accumulation that keeps the global batch of `full_world` ranks when only
// `world` of them run (the launcher dropped nodes that no longer answered: launcher.min_nodes).
// A UserError where that batch is not a whole number of micro-batches on `world` ranks.
int64_t kept_accumulation(const TrainConfig& train, int world, int full_world);

// Where a run stands: optimizer steps done, its epoch, and the steps done in that epoch.
struct Position {
  int64_t step = 0, epoch = 0, step_in_epoch = 0;
};

// Where a run saved at `saved` with a global batch of `saved_batch` goes on under `plan`:
// with the same global batch the same samples come next (the sampler orders samples
// independently of ranks); with another, the epoch goes on from the nearest step.
Position resumed_position(const Position& saved, int64_t saved_batch, const StepPlan& plan);

// The learning rate for optimizer step `step` (0-based) of `total`.
double learning_rate(const OptimizerConfig& opt, const SchedulerConfig& sched, int64_t step,
                     int64_t total);

}  // namespace dshost
