// The training schedule's arithmetic (core/schedule.h).
#include "core/schedule.h"

#include "core/error.h"

#include <gtest/gtest.h>

namespace dshost {
namespace {

TrainConfig train(int64_t epochs, int64_t max_steps, int64_t micro_batch, int64_t accumulation) {
  TrainConfig t{};
  t.epochs = epochs;
  t.max_steps = max_steps;
  t.micro_batch_size = micro_batch;
  t.grad_accum_steps = accumulation;
  return t;
}

// Each rank's share is padded up to the same size; an epoch is the whole steps of it.
TEST(Schedule, StepsOfAnEpochAndOfTheRun) {
  const StepPlan plan = plan_steps(60001, 2, train(3, 0, 16, 2));
  EXPECT_EQ(plan.rank_samples, 30001);
  EXPECT_EQ(plan.rank_batch, 32);
  EXPECT_EQ(plan.global_batch, 64);
  EXPECT_EQ(plan.steps_per_epoch, 30001 / 32);
  EXPECT_EQ(plan.total_steps, 3 * (30001 / 32));
  EXPECT_EQ(plan_steps(60001, 2, train(3, 100, 16, 2)).total_steps, 100);
  EXPECT_EQ(plan_steps(20, 2, train(1, 0, 16, 1)).steps_per_epoch, 0);  // 10 a rank, 16 a step
}

// With ranks dropped, accumulation rises to keep the global batch, or the run is refused.
TEST(Schedule, FewerRanksKeepTheGlobalBatchByAccumulatingMore) {
  EXPECT_EQ(kept_accumulation(train(1, 0, 32, 1), 2, 2), 1);
  EXPECT_EQ(kept_accumulation(train(1, 0, 32, 1), 1, 2), 2);
  EXPECT_EQ(kept_accumulation(train(1, 0, 32, 3), 2, 4), 6);
  TrainConfig kept = train(1, 0, 32, 1);
  kept.grad_accum_steps = kept_accumulation(kept, 1, 2);
  EXPECT_EQ(plan_steps(60000, 1, kept).global_batch,
            plan_steps(60000, 2, train(1, 0, 32, 1)).global_batch);
  EXPECT_EQ(plan_steps(60000, 1, kept).steps_per_epoch,
            plan_steps(60000, 2, train(1, 0, 32, 1)).steps_per_epoch);
  try {
    kept_accumulation(train(1, 0, 32, 1), 3, 4);
    ADD_FAILURE() << "4 micro-batches shared by 3 ranks";
  } catch (const UserError& e) {
    EXPECT_NE(std::string(e.what()).find(
                  "launcher.min_nodes: 3 of the job's 4 ranks run, and its global batch of 128 "
                  "samples (train.micro_batch_size 32 x grad_accum_steps 1 x 4 ranks) is not a "
                  "whole number of micro-batches for 3 ranks"),
              std::string::npos)
        << e.what();
  }
}

// With the same global batch a resumed run goes on at the saved step; with another, at the
// step of its own batch that has seen as many samples (rounded down), or at the next epoch.
TEST(Schedule, AResumedRunGoesOnWhereTheSamplesLeftOff) {
  const StepPlan plan = plan_steps(6400, 1, train(2, 0, 64, 1));  // 100 steps an epoch, batch 64
  const Position saved{130, 1, 30};
  const Position same = resumed_position(saved, 64, plan);
  EXPECT_EQ(same.step, 130);
  EXPECT_EQ(same.epoch, 1);
  EXPECT_EQ(same.step_in_epoch, 30);
  EXPECT_EQ(resumed_position(saved, 32, plan).step_in_epoch, 15);   // 30 x 32 samples
  EXPECT_EQ(resumed_position(saved, 100, plan).step_in_epoch, 46);  // 3000 samples, 46.9 steps
  const Position past = resumed_position(saved, 256, plan);         // 120 steps of 64 > 100
  EXPECT_EQ(past.epoch, 2);
  EXPECT_EQ(past.step_in_epoch, 0);
  EXPECT_EQ(past.step, 130);
}

TEST(Schedule, WarmupThenCosineToTheFloor) {
  const OptimizerConfig opt{OptimizerKind::adamw, 1.0, 0.9, 0.999, 1e-8, 0, 0};
  const SchedulerConfig sched{10, Decay::cosine, 0.1};
  EXPECT_DOUBLE_EQ(learning_rate(opt, sched, 0, 110), 0.1);
  EXPECT_DOUBLE_EQ(learning_rate(opt, sched, 9, 110), 1.0);
  EXPECT_DOUBLE_EQ(learning_rate(opt, sched, 10, 110), 1.0);
  EXPECT_NEAR(learning_rate(opt, sched, 60, 110), 0.55, 1e-12);
  EXPECT_NEAR(learning_rate(opt, sched, 110, 110), 0.1, 1e-12);
}

}  // namespace
}  // namespace dshost
