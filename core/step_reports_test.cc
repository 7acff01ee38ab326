// Steps' figures collected at reports, and train.nonfinite (core/step_reports.h).
#include "core/step_reports.h"

#include "core/error.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

namespace dshost {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
const double kNaN = std::nan("");

std::vector<StepRecord> steps(const std::vector<double>& norms, int64_t first_step = 0) {
  std::vector<StepRecord> out;
  for (size_t i = 0; i < norms.size(); ++i)
    out.push_back({first_step + static_cast<int64_t>(i), 0, 1.0, 1e-3, norms[i]});
  return out;
}

std::string failure_of(NonfiniteGuard& guard, const std::vector<StepRecord>& s,
                       const std::vector<double>& first_bad) {
  try {
    guard.check(s, first_bad);
  } catch (const UserError& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(NonfiniteGuard, StopNamesTheFirstBadStepAndTheRanksWhoseLossWasNotFinite) {
  NonfiniteGuard stop(Nonfinite::stop, 0);
  // Ranks 0 and 2 had a NaN loss at the third step; the norm went bad only at the fourth.
  const std::string message = failure_of(stop, steps({1, 1, 1, kInf}, 40), {3, 0, 3});
  EXPECT_EQ(
      message.rfind("step 43 (epoch 1): the loss of ranks 0, 2 is not finite; the run stopped", 0),
      0u)
      << message;
  EXPECT_EQ(failure_of(stop, steps({1, kNaN, 1}, 40), {3, 0, 0})
                .rfind("step 42 (epoch 1): the gradient norm is nan", 0),
            0u);
  EXPECT_EQ(failure_of(stop, steps({1, 1}), {0, 0}), "(no error)");
}

TEST(NonfiniteGuard, IgnoreTrainsOn) {
  NonfiniteGuard ignore(Nonfinite::ignore, 0);
  EXPECT_EQ(failure_of(ignore, steps({kNaN, kInf}), {1, 2}), "(no error)");
}

TEST(NonfiniteGuard, SkipCountsSkippedStepsAndStopsAfterTenInARow) {
  NonfiniteGuard skip(Nonfinite::skip, 1);
  std::vector<double> norms(NonfiniteGuard::kMostSkipsInARow - 1, kInf);
  norms.push_back(1.0);  // a finite step starts the count again
  EXPECT_EQ(failure_of(skip, steps(norms), {0, 0}), "(no error)");
  EXPECT_EQ(skip.skipped_steps(), NonfiniteGuard::kMostSkipsInARow - 1);
  const std::string message = failure_of(
      skip, steps(std::vector<double>(NonfiniteGuard::kMostSkipsInARow, kNaN), 10), {0, 0});
  EXPECT_EQ(message.rfind(
                "steps 11 to 20 (epoch 1): 10 steps in a row had a non-finite gradient norm", 0),
            0u)
      << message;
}

// Rank 0 of two: its losses go into one collective with its first bad step; the other rank's
// are added by the fake collective.
TEST(StepReports, LossesAreAveragedOverRanksAndEachRanksFirstBadStepTravelsWithThem) {
  StepReports reports(4, at::kCPU);
  const double mine[] = {2.0, kNaN, 4.0};
  for (int s = 0; s < 3; ++s) {
    reports.next_loss().fill_(mine[s]);
    reports.next_norm().fill_(0.5 * s);
    reports.add(s, 0, 1e-3);
  }
  std::vector<double> sent;
  const auto other_rank_adds = [&](const std::vector<double>& v) {
    sent = v;
    std::vector<double> sum = v;
    sum[0] += 4.0, sum[1] += 1.0, sum[2] += 6.0;
    return sum;
  };
  NonfiniteGuard ignore(Nonfinite::ignore, 0);
  const std::vector<StepRecord> got = reports.collect(other_rank_adds, 0, 2, ignore);
  ASSERT_EQ(sent.size(), 3u + 2u);
  EXPECT_EQ(sent[3], 2.0) << "rank 0's first non-finite loss: the second step";
  EXPECT_EQ(sent[4], 0.0);
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[0].loss, 3.0);
  EXPECT_TRUE(std::isnan(got[1].loss));
  EXPECT_EQ(got[2].loss, 5.0);
  EXPECT_EQ(got[2].grad_norm, 1.0);
  EXPECT_EQ(reports.pending(), 0);
  EXPECT_EQ(reports.next_loss().item<double>(), 0.0) << "the slots start again from zero";
}

}  // namespace
}  // namespace dshost
