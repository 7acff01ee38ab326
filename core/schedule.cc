#include "core/schedule.h"

#include "core/error.h"

#include <algorithm>
#include <cmath>

namespace dshost {

StepPlan plan_steps(int64_t train_samples, int world_size, const TrainConfig& train) {
  StepPlan plan;
  plan.rank_samples = (train_samples + world_size - 1) / world_size;
  plan.rank_batch = train.micro_batch_size * train.grad_accum_steps;
  plan.global_batch = plan.rank_batch * world_size;
  plan.steps_per_epoch = plan.rank_samples / plan.rank_batch;
  plan.total_steps = train.epochs * plan.steps_per_epoch;
  if (train.max_steps > 0) plan.total_steps = std::min(plan.total_steps, train.max_steps);
  return plan;
}

int64_t kept_accumulation(const TrainConfig& train, int world, int full_world) {
  const int64_t micro_batches = train.grad_accum_steps * full_world;
  if (micro_batches % world == 0) return micro_batches / world;
  throw UserError(cat("launcher.min_nodes: ", world, " of the job's ", full_world,
                      " ranks run, and its global batch of ",
                      micro_batches * train.micro_batch_size, " samples (train.micro_batch_size ",
                      train.micro_batch_size, " x grad_accum_steps ", train.grad_accum_steps, " x ",
                      full_world, " ranks) is not a whole number of micro-batches for ", world,
                      " ranks; choose grad_accum_steps so that grad_accum_steps x ", full_world,
                      " is a multiple of every rank count min_nodes allows"));
}

Position resumed_position(const Position& saved, int64_t saved_batch, const StepPlan& plan) {
  Position p{saved.step, saved.epoch, saved.step_in_epoch * saved_batch / plan.global_batch};
  if (p.step_in_epoch >= plan.steps_per_epoch) p = {p.step, p.epoch + 1, 0};
  return p;
}

double learning_rate(const OptimizerConfig& opt, const SchedulerConfig& sched, int64_t step,
                     int64_t total) {
  if (step < sched.warmup_steps)
    return opt.lr * static_cast<double>(step + 1) / static_cast<double>(sched.warmup_steps);
  const double span = static_cast<double>(std::max<int64_t>(1, total - sched.warmup_steps));
  const double progress = std::min(1.0, static_cast<double>(step - sched.warmup_steps) / span);
  double shape = 1.0;
  if (sched.decay == Decay::cosine) shape = 0.5 * (1.0 + std::cos(M_PI * progress));
  if (sched.decay == Decay::linear) shape = 1.0 - progress;
  return opt.lr * (sched.min_lr_ratio + (1.0 - sched.min_lr_ratio) * shape);
}

}  // namespace dshost
