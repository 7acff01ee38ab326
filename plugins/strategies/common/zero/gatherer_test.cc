// Whole units gathered from the ranks' chunks (gatherer.h), two ranks on threads.
#include "gatherer.h"

#include "scratch.h"
#include "tests/fake_ranks.h"

#include <gtest/gtest.h>

namespace dshost_zero {
namespace {

// Units of 8, 4 and 8 elements over two ranks; the middle one is below the persistence
// threshold. Rank r's parameter shard holds 100 * (r + 1) + shard index.
struct Rank {
  dshost::Services services;
  dshost::FlatLayout layout{
      {{"a", {at::zeros({8})}}, {"b", {at::zeros({4})}}, {"c", {at::zeros({8})}}}, 2, true};
  ShardBuffer shard;
  std::vector<at::Tensor> params;
  std::vector<int32_t> ids;
  std::unique_ptr<Gatherer> gatherer;

  Rank(const dshost_services* table, int rank, const Options& o) : services(table) {
    shard =
        ShardMemory(services, at::kCPU, layout.shard, 0, false).make(at::kFloat, at::kCPU, false);
    shard.parts[0].copy_(at::arange(layout.shard, at::kFloat) + 100 * (rank + 1));
    for (int u = 0; u < 3; ++u) {
      params.push_back(at::zeros({layout.unit_size(u)}));
      ids.push_back(services.register_buffer(dshost::to_dlpack(params[u])));
      if (!persistent(layout, o, u)) deallocate(params[u]);
    }
    gatherer =
        std::make_unique<Gatherer>(services, o, layout, params, ids, shard, nullptr, at::kCPU);
  }
  // Unit u as every rank's chunk of it, end to end.
  at::Tensor expected(int u) const {
    std::vector<at::Tensor> chunks;
    for (int r = 0; r < 2; ++r)
      chunks.push_back(at::arange(layout.chunk[u], at::kFloat) + layout.shard_begin[u] +
                       100 * (r + 1));
    return at::cat(chunks);
  }
};

Options stage3(int64_t prefetch) {
  Options o;
  o.stage = 3;
  o.prefetch_bucket_size = prefetch;
  o.param_persistence_threshold = 5;
  return o;
}

TEST(ZeroGatherer, AUnitInUseIsWholeAndFreedAfterwardsUnlessItStaysWhole) {
  dshost::test::FakeRanks ranks(2);
  ranks.run([&](int r) {
    Rank me(ranks.services(r), r, stage3(0));
    me.gatherer->regather();  // what setup and each step do: persistent units gathered
    EXPECT_TRUE(at::equal(me.params[1], me.expected(1)));
    me.gatherer->use(0, +1);
    EXPECT_TRUE(at::equal(me.params[0], me.expected(0)));
    EXPECT_EQ(me.params[2].storage().nbytes(), 0u) << "prefetch_bucket_size = 0: nothing ahead";
    me.gatherer->release(0);
    me.gatherer->release(1);
    EXPECT_EQ(me.params[0].storage().nbytes(), 0u);
    EXPECT_TRUE(at::equal(me.params[1], me.expected(1))) << "below param_persistence_threshold";
  });
}

TEST(ZeroGatherer, TheNextUnitsInTheDirectionOfUseArePrefetched) {
  dshost::test::FakeRanks ranks(2);
  ranks.run([&](int r) {
    Rank me(ranks.services(r), r, stage3(4));
    me.gatherer->regather();
    me.gatherer->use(2, -1);  // backward: unit 1 (persistent) and then unit 0 come next
    EXPECT_TRUE(at::equal(me.params[2], me.expected(2)));
    EXPECT_TRUE(at::equal(me.params[1], me.expected(1)));
    EXPECT_EQ(me.params[0].storage().nbytes(), 0u) << "12 elements ahead exceed the bucket of 4";
    me.gatherer->use(1, -1);
    EXPECT_TRUE(at::equal(me.params[0], me.expected(0))) << "the next unit, whatever its size";
  });
}

// Alone under stage 2 the update wrote each whole unit in place: regathering calls no
// collective and leaves the units' values as they are.
TEST(ZeroGatherer, OneRankUnderStage2RegathersWithoutACollective) {
  dshost::test::FakeRanks ranks(1);
  ranks.run([&](int) {
    const dshost::Services services(ranks.services(0));
    const dshost::FlatLayout layout({{"a", {at::zeros({8})}}, {"b", {at::zeros({4})}}}, 1, true);
    std::vector<at::Tensor> params, values;
    std::vector<int32_t> ids;
    for (int u = 0; u < 2; ++u) {
      values.push_back(at::randn({layout.unit_size(u)}));
      params.push_back(values.back().clone());
      ids.push_back(services.register_buffer(dshost::to_dlpack(params[u])));
    }
    const ShardBuffer no_shard;
    Gatherer gatherer(services, Options{}, layout, params, ids, no_shard, nullptr, at::kCPU);
    gatherer.regather();
    for (int u = 0; u < 2; ++u) EXPECT_TRUE(at::equal(params[u], values[u]));
  });
  EXPECT_EQ(ranks.collectives(), 0);
}

}  // namespace
}  // namespace dshost_zero
