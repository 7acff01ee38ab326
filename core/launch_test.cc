// Which failed launches launcher.max_restarts starts again (core/launch.h).
#include "core/launch.h"

#include <gtest/gtest.h>

#include <csignal>

namespace dshost {
namespace {

LaunchResult failed(dshost_status status, int32_t exit_code) {
  LaunchResult r;
  r.status = status;
  r.exit_code = exit_code;
  return r;
}

TEST(Launch, ARankThatFailedOrWasKilledIsRestartedBadInputAndInterruptionsAreNot) {
  EXPECT_TRUE(worth_restarting(failed(DSHOST_RANK_FAILED, 1)));
  EXPECT_TRUE(worth_restarting(failed(DSHOST_RANK_FAILED, 128 + SIGKILL)));
  EXPECT_TRUE(worth_restarting(failed(DSHOST_RANK_FAILED, 128 + SIGSEGV)));
  EXPECT_FALSE(worth_restarting(failed(DSHOST_RANK_FAILED, 2))) << "bad input fails again";
  EXPECT_FALSE(worth_restarting(failed(DSHOST_RANK_FAILED, 128 + SIGINT)));
  EXPECT_FALSE(worth_restarting(failed(DSHOST_RANK_FAILED, 128 + SIGTERM)));
  EXPECT_FALSE(worth_restarting(failed(DSHOST_INVALID_ARGUMENT, 0))) << "the launcher refused";
  EXPECT_FALSE(worth_restarting(failed(DSHOST_OK, 0)));
}

TEST(Launch, TheExitCodeIsTheFailingRanksOrSaysWhetherTheInputWasBad) {
  EXPECT_EQ(exit_code_of(failed(DSHOST_OK, 0)), 0);
  EXPECT_EQ(exit_code_of(failed(DSHOST_RANK_FAILED, 137)), 137);
  EXPECT_EQ(exit_code_of(failed(DSHOST_INVALID_ARGUMENT, 0)), 2);
  EXPECT_EQ(exit_code_of(failed(DSHOST_INTERNAL, 0)), 1);
}

}  // namespace
}  // namespace dshost
