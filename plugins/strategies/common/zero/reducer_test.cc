// Gradient reduction into the shard (reducer.h), two ranks on threads.
#include "reducer.h"

#include "tests/fake_ranks.h"

#include <gtest/gtest.h>

namespace dshost_zero {
namespace {

// Two units of 8 and 4 elements over two ranks: chunks of 4 and 2, a shard of 6.
struct Rank {
  dshost::Services services;
  dshost::FlatLayout layout{{{"a", {at::zeros({8})}}, {"b", {at::zeros({4})}}}, 2, true};
  ShardBuffer shard;
  std::vector<at::Tensor> grads;
  std::vector<int32_t> ids;
  std::unique_ptr<Reducer> reducer;

  Rank(const dshost_services* table, const Options& o) : services(table) {
    shard = ShardMemory(services, at::kCPU, layout.shard, 0, false)
                .make(at::kFloat, at::kCPU, false, true);
    for (int u = 0; u < 2; ++u) {
      grads.push_back(at::zeros({layout.unit_size(u)}));
      ids.push_back(services.register_buffer(dshost::to_dlpack(grads[u])));
    }
    reducer = std::make_unique<Reducer>(services, o, layout, at::kCPU, shard, grads, ids, nullptr,
                                        reduction_piece(layout, o.reduce_bucket_size, 2));
  }
  // Unit u's gradient for one micro-batch: rank r's is (r + 1) * (1, 2, 3, ...).
  void backward(int u, int rank) {
    allocate(grads[u]);
    grads[u].copy_(at::arange(1, layout.unit_size(u) + 1, at::kFloat) * (rank + 1));
    reducer->reduce(u);
  }
};

Options options(int64_t bucket, bool overlap) {
  Options o;
  o.reduce_bucket_size = bucket;
  o.overlap_comm = overlap;
  return o;
}

// The average over ranks of (r + 1) * (1..n) is 1.5 * (1..n); rank r's chunk is its row.
at::Tensor expected_chunk(int64_t n, int rank, double micro_batches) {
  return at::arange(1, n + 1, at::kFloat).view({2, n / 2})[rank] * 1.5 * micro_batches;
}

class Reduction : public ::testing::TestWithParam<std::tuple<int64_t, bool>> {};

// Staged in pieces of one column (bucket 2 over 2 ranks) or unstaged (bucket 8), with
// communication overlapped or not: the same shard, accumulated over two micro-batches, and a
// norm over both ranks' shards.
TEST_P(Reduction, AveragesOverRanksIntoEachRanksChunkAndAccumulatesMicroBatches) {
  const auto [bucket, overlap] = GetParam();
  dshost::test::FakeRanks ranks(2);
  std::vector<at::Tensor> shards(2), norms(2);
  ranks.run([&](int r) {
    Rank me(ranks.services(r), options(bucket, overlap));
    for (int micro_batch = 0; micro_batch < 2; ++micro_batch) {
      me.backward(1, r);
      me.backward(0, r);
      me.reducer->finish();
      EXPECT_EQ(me.grads[0].storage().nbytes(), 0u) << "a unit's full gradient goes once reduced";
    }
    me.reducer->end_step();
    norms[r] = me.reducer->global_norm();
    shards[r] = me.shard.parts[0].clone();
  });
  for (int r = 0; r < 2; ++r) {
    EXPECT_TRUE(at::allclose(shards[r].narrow(0, 0, 4), expected_chunk(8, r, 2))) << shards[r];
    EXPECT_TRUE(at::allclose(shards[r].narrow(0, 4, 2), expected_chunk(4, r, 2))) << shards[r];
  }
  const double whole = std::sqrt(at::cat(shards).to(at::kDouble).pow(2).sum().item<double>());
  EXPECT_NEAR(norms[0].item<double>(), whole, whole * 1e-6);  // (sums of squares in fp32)
  EXPECT_NEAR(norms[1].item<double>(), whole, whole * 1e-6);  // (sums of squares in fp32)
}

INSTANTIATE_TEST_SUITE_P(ZeroParts, Reduction,
                         ::testing::Combine(::testing::Values(int64_t{2}, int64_t{8}),
                                            ::testing::Bool()));

// A unit whose gradient no reduction reached this step (a frozen branch) holds zeros after
// the step, not the last step's gradient.
TEST(ZeroReducer, ChunksNoReductionReachedAreZeroedAtTheStep) {
  dshost::test::FakeRanks ranks(2);
  std::vector<at::Tensor> shards(2);
  ranks.run([&](int r) {
    Rank me(ranks.services(r), options(8, true));
    me.backward(0, r);
    me.backward(1, r);
    me.reducer->finish();
    me.reducer->end_step();
    me.backward(0, r);  // the next step reaches unit 0 alone
    me.reducer->finish();
    me.reducer->end_step();
    shards[r] = me.shard.parts[0].clone();
  });
  for (int r = 0; r < 2; ++r) {
    EXPECT_TRUE(at::allclose(shards[r].narrow(0, 0, 4), expected_chunk(8, r, 1)))
        << "copied, not added";
    EXPECT_EQ(shards[r].narrow(0, 4, 2).abs().sum().item<float>(), 0);
  }
}

// Alone, the gradient norm is the shard's own, with no collective.
TEST(ZeroReducer, OneRankTakesTheNormWithoutACollective) {
  dshost::test::FakeRanks ranks(1);
  ranks.run([&](int) {
    const dshost::Services services(ranks.services(0));
    const dshost::FlatLayout layout({{"a", {at::zeros({8})}}, {"b", {at::zeros({4})}}}, 1, true);
    ShardBuffer shard = ShardMemory(services, at::kCPU, layout.shard, 0, false)
                            .make(at::kFloat, at::kCPU, false, true);
    shard.parts[0].copy_(at::randn({layout.shard}));
    std::vector<at::Tensor> grads{at::zeros({8}), at::zeros({4})};
    const std::vector<int32_t> ids{-1, -1};
    Reducer reducer(services, options(8, false), layout, at::kCPU, shard, grads, ids, nullptr,
                    reduction_piece(layout, 8, 1));
    const double want = shard.parts[0].to(at::kDouble).norm().item<double>();
    EXPECT_NEAR(reducer.global_norm().item<double>(), want, want * 1e-6);
  });
  EXPECT_EQ(ranks.collectives(), 0);
}

}  // namespace
}  // namespace dshost_zero
