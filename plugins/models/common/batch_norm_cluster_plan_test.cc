// The one-launch batch norm's layouts (batch_norm_cluster_plan.h).
#include "batch_norm_cluster_plan.h"

#include <gtest/gtest.h>

#include <string>

namespace dshost_models {
namespace {

constexpr int64_t kH200Blocks = 2 * 132;  // two blocks on each of an H200's multiprocessors

// Every plan covers its rows and channels once, within the rows a thread may hold, at
// mobilenet_v2's and efficientnet_b0's small layers (b32: 7x7, 14x14 pixels) and around them.
TEST(BatchNormClusterPlan, CoversEveryRowAndChannelWithinTheRowsAThreadHolds) {
  int planned = 0;
  for (const int64_t rows : {2, 70, 1568, 2664, 6272, 12544, 16384, 25088})
    for (const int64_t channels : {8, 24, 160, 264, 960, 1280}) {
      SCOPED_TRACE(std::to_string(rows) + " rows, " + std::to_string(channels) + " channels");
      const ClusterPlan plan = cluster_plan(rows, channels, kH200Blocks);
      if (plan.lanes == 0) continue;
      ++planned;
      EXPECT_EQ(kMostClusterLanes % plan.lanes, 0);
      const int64_t rows_a_round = kClusterBlocks * (kClusterThreads / plan.lanes);
      EXPECT_LE(plan.rows_per_thread, kMostClusterRows);
      EXPECT_GE(plan.rows_per_thread * rows_a_round, rows);
      EXPECT_LT((plan.rows_per_thread - 1) * rows_a_round, rows);
      const int64_t slice = plan.lanes * 8;
      EXPECT_GE(plan.clusters * slice, channels);
      EXPECT_LT((plan.clusters - 1) * slice, channels);
    }
  EXPECT_EQ(planned, 7 * 6) << "all but 25,088 rows (13 a thread)";
}

TEST(BatchNormClusterPlan, TakesTheMostBlocksTheGpuRunsAtOnce) {
  // mobilenet_v2's 7x7 expansions: 120 vectors; 8 lanes would leave 120 blocks, 2 lanes 480.
  ClusterPlan p = cluster_plan(1568, 960, kH200Blocks);
  EXPECT_EQ(p.lanes, 4);
  EXPECT_EQ(p.clusters, 30) << "240 blocks";
  EXPECT_EQ(p.rows_per_thread, 4);
  // 14x14 depthwise at 192 channels: a lane a block, 24 clusters of 8 blocks.
  p = cluster_plan(6272, 192, kH200Blocks);
  EXPECT_EQ(p.lanes, 1);
  EXPECT_EQ(p.clusters, 24);
  EXPECT_EQ(p.rows_per_thread, 4);
  // 24 channels: three vectors, a lane each, however few the blocks.
  p = cluster_plan(70, 24, kH200Blocks);
  EXPECT_EQ(p.lanes, 1);
  EXPECT_EQ(p.clusters, 3);
  EXPECT_EQ(p.rows_per_thread, 1);
}

TEST(BatchNormClusterPlan, PastTheBlocksAtOnceTakesTheMostWhoseRowsFit) {
  // 14x14 at 576 channels: 2 lanes are 288 blocks, more than 264, but 4 would hold 13 rows.
  const ClusterPlan p = cluster_plan(6272, 576, kH200Blocks);
  EXPECT_EQ(p.lanes, 2);
  EXPECT_EQ(p.clusters, 36);
  EXPECT_EQ(p.rows_per_thread, 7);
}

TEST(BatchNormClusterPlan, NoneWhereTheRowsOrTheIndicesDoNotFit) {
  EXPECT_EQ(cluster_plan(25088, 192, kH200Blocks).lanes, 0) << "13 rows a thread at one lane";
  EXPECT_EQ(cluster_plan(16385, 8, kH200Blocks).lanes, 0) << "one row past 8 a thread";
  EXPECT_EQ(cluster_plan(16384, 8, kH200Blocks).lanes, 1);
  EXPECT_EQ(cluster_plan(16384, int64_t{1} << 17, kH200Blocks).lanes, 0) << "2^31 elements";
}

}  // namespace
}  // namespace dshost_models
