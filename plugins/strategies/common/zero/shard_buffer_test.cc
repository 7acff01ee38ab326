// The shard and its buffers (shard_buffer.h).
#include "shard_buffer.h"

#include "tests/fake_ranks.h"

#include <gtest/gtest.h>

namespace dshost_zero {
namespace {

// Units of 6, 10 and 3 elements over 2 ranks: padded to 6, 10 and 4, chunks of 3, 5 and 2.
dshost::FlatLayout three_units() {
  return dshost::FlatLayout(
      {{"a", {at::zeros({6})}}, {"b", {at::zeros({2, 5})}}, {"c", {at::zeros({3})}}}, 2, true);
}

TEST(ShardBuffer, TheOptimizersSplitFallsBetweenWholeUnits) {
  const dshost::FlatLayout layout = three_units();
  ASSERT_EQ(layout.shard, 10);
  EXPECT_EQ(optimizer_split(layout, 1.0), 0) << "all offloaded: no split";
  EXPECT_EQ(optimizer_split(layout, 0.5), 3) << "5 elements may stay: the first unit's 3";
  EXPECT_EQ(optimizer_split(layout, 0.2), 8) << "8 may stay: two units";
  EXPECT_EQ(optimizer_split(layout, 0.0), 10);
  EXPECT_EQ(optimizer_split(layout, 0.95), 0) << "not even the first unit fits";
}

TEST(ShardBuffer, RangesAreFoundInTheirPartAndDevicePartsAreRegistered) {
  dshost::test::FakeRanks ranks(1);
  const ShardMemory memory(dshost::Services(ranks.services(0)), at::kCPU, 10, 3, true);
  const ShardBuffer b = memory.make(at::kFloat, at::kCPU, true, /*registered=*/true);
  ASSERT_EQ(b.parts.size(), 2u);
  EXPECT_EQ(b.begin, (std::vector<int64_t>{0, 3}));
  EXPECT_EQ(b.parts[1].numel(), 7);
  EXPECT_EQ(b.ids, (std::vector<int32_t>{0, 1}));
  b.zero();
  b.range(4, 2).fill_(1);
  EXPECT_EQ(b.part_of(4), 1);
  EXPECT_EQ(b.parts[1].sum().item<float>(), 2);
  EXPECT_EQ(b.parts[1][1].item<float>(), 1) << "shard element 4 is the second of the part from 3";
  EXPECT_FALSE(memory.pinned_if_host(at::kFloat, at::kCPU).pinned_memory())
      << "pinned only beside a GPU";
  EXPECT_EQ(memory.make(at::kFloat, at::kCPU, false).ids, (std::vector<int32_t>{-1, -1}));
}

TEST(ShardBuffer, EachRankOwnsItsChunkOfEveryUnit) {
  const dshost::FlatLayout layout = three_units();
  const at::Tensor unit_b = at::arange(10, at::kFloat);
  EXPECT_TRUE(at::equal(own_chunk(layout, 1, unit_b, 1), at::arange(5, 10, at::kFloat)));
  EXPECT_EQ(layout.shard_begin, (std::vector<int64_t>{0, 3, 8}));
}

}  // namespace
}  // namespace dshost_zero
