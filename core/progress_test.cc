// What the progress bar and the report lines show (core/progress.h).
#include "core/progress.h"

#include <gtest/gtest.h>

#include <chrono>
#include <thread>

namespace dshost {
namespace {

TEST(Progress, DurationsInSecondsThenMinutes) {
  EXPECT_EQ(duration_text(0.2), "0s");
  EXPECT_EQ(duration_text(42.4), "42s");
  EXPECT_EQ(duration_text(59.6), "1m00s");
  EXPECT_EQ(duration_text(187), "3m07s");
}

ProgressFigures quarter_done() {
  ProgressFigures f;
  f.steps_done = 6;
  f.total_steps = 24;
  f.epoch = 0;
  f.epochs = 2;
  f.step_in_epoch = 6;
  f.steps_per_epoch = 12;
  f.loss = 0.5;
  f.samples_per_second = 100;
  f.eta_seconds = 65;
  return f;
}

TEST(Progress, TheBarShowsTheShareDoneTheLossTheRateAndTheTimeLeft) {
  EXPECT_EQ(
      progress_bar(quarter_done()),
      "[######..................] 25% step 6/24 epoch 1/2 loss 0.5000 100 samples/s eta 1m05s");
}

TEST(Progress, TheReportLineCountsStepsWithinTheEpoch) {
  EXPECT_EQ(progress_log_line(quarter_done(), 1e-3, 0.25),
            "epoch 1/2 step 6/12 loss 0.5000 lr 1.00e-03 grad_norm 0.250 100 samples/s eta 1m05s");
}

TEST(Progress, TheStatusLineIsDrawnAtMostFiveTimesASecondAndAlwaysAtTheEnd) {
  TrainingClock clock(10, 32);
  EXPECT_TRUE(clock.status_due(1));
  EXPECT_FALSE(clock.status_due(2));
  EXPECT_TRUE(clock.status_due(10));
}

TEST(Progress, NothingIsLeftAfterTheLastStep) {
  TrainingClock clock(10, 32);
  clock.begin_epoch();
  for (int i = 0; i < 10; ++i) clock.step_done();
  clock.end_epoch();
  EXPECT_EQ(clock.eta_seconds(10), 0);
  EXPECT_EQ(clock.epoch_seconds().size(), 1u);
  EXPECT_GT(clock.trained_samples_per_second(), 0);
  EXPECT_DOUBLE_EQ(clock.trained_samples_per_second() * clock.train_seconds(), 320);
}

// A first window slowed on purpose (as cuDNN's autotuning slows it) is not in the steady
// span, which holds exactly the later windows' samples.
TEST(Progress, TheSteadyRateLeavesOutTheFirstWindow) {
  TrainingClock clock(6, 32);
  clock.begin_epoch();
  for (int i = 0; i < 2; ++i) clock.step_done();
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  clock.window_done();
  EXPECT_EQ(clock.steady().samples, 0) << "one window: no steady figure yet";
  for (int i = 0; i < 4; ++i) clock.step_done();
  clock.window_done();
  clock.end_epoch();
  EXPECT_EQ(clock.steady().samples, 4 * 32);
  EXPECT_GE(clock.train_seconds() - clock.steady().seconds, 0.3);
  EXPECT_DOUBLE_EQ(clock.window_samples_per_second(), clock.steady().rate());
}

}  // namespace
}  // namespace dshost
