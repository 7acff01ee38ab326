// How the one-launch batch norm (cuda_batch_norm_clusters.cu) lays out a layer, where it can.
//
// A thread block cluster (Hopper's) of kClusterBlocks blocks takes a slice of `lanes` vectors
// of 8 channels over all the rows; its blocks take turns at passes of kClusterThreads / lanes
// rows, each thread holding its rows of the slice in registers, up to kMostClusterRows. The
// channels' sums meet across the cluster in its blocks' shared memory, so a direction is one
// launch that reads its inputs once, where the three-pass kernels read them twice and launch
// three times. The layouts that fit are the small layers' (up to 16,384 rows), which the three
// passes spend more launches than bytes on.
//
// Plain C++: the plan is tested on the CPU.
#pragma once

#include <cstdint>

namespace dshost_models {

constexpr int kClusterBlocks = 8;      // the largest portable cluster
constexpr int kClusterThreads = 256;   // a block's threads
constexpr int kMostClusterLanes = 32;  // a block's vectors of 8 channels at most

// Rows a thread holds at most: 8 vectors of x forward, of dy and of x backward, in up to 128
// registers (two blocks a multiprocessor). Taking more rows, those past 8 read again, was slower
// than the three passes on an H200 (bench/results/compile.md, run 60).
constexpr int kMostClusterRows = 8;

struct ClusterPlan {
  int lanes = 0;            // 0: the layout does not fit, the three-pass kernels run
  int rows_per_thread = 0;  // what a thread holds
  int64_t clusters = 0;     // slices of channels
};

// The plan for `rows` x `channels` (channels a multiple of 8): the fewest lanes, and so the most
// blocks, up to `most_blocks` (what the GPU runs at once); past that the most blocks whose rows
// still fit. None past 2^31 elements (the kernels index in 32 bits).
inline ClusterPlan cluster_plan(int64_t rows, int64_t channels, int64_t most_blocks) {
  const int64_t vectors = channels / 8;
  ClusterPlan fits;
  if (rows * channels >= (int64_t{1} << 31)) return fits;
  for (int lanes = 1; lanes <= kMostClusterLanes; lanes *= 2) {
    const int64_t rows_a_round = static_cast<int64_t>(kClusterBlocks) * (kClusterThreads / lanes);
    const int64_t rows_per_thread = (rows + rows_a_round - 1) / rows_a_round;
    if (rows_per_thread > kMostClusterRows) break;  // more lanes only take more
    fits = {lanes, static_cast<int>(rows_per_thread), (vectors + lanes - 1) / lanes};
    if (fits.clusters * kClusterBlocks <= most_blocks || lanes >= vectors) break;
  }
  return fits;
}

}  // namespace dshost_models
