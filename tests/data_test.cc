// Fashion-MNIST from Debian's package and the distributed sampler.
#include "core/config.h"
#include "core/data.h"
#include "core/error.h"
#include "tests/test_util.h"

#include <gtest/gtest.h>
#include <zlib.h>

#include <filesystem>
#include <set>

namespace dshost {
namespace {

const char* kFashion = "/usr/share/datasets/fashion-mnist";

TEST(FashionMnist, ReadsBothSplitsWithBalancedClasses) {
  const ImageDataset d = load_fashion_mnist(kFashion, "test");
  EXPECT_EQ(d.train.images.sizes(), at::IntArrayRef({60000, 1, 28, 28}));
  EXPECT_EQ(d.test.images.sizes(), at::IntArrayRef({10000, 1, 28, 28}));
  // Fashion-MNIST is balanced: 6000 training and 1000 test images per class.
  EXPECT_TRUE(at::bincount(d.train.labels).eq(6000).all().item<bool>());
  EXPECT_TRUE(at::bincount(d.test.labels).eq(1000).all().item<bool>());
  // Pixel statistics match the normalisation constants used for training.
  const double mean = d.train.images.to(at::kDouble).mean().item<double>() / 255.0;
  EXPECT_NEAR(mean, d.mean, 1e-3);
}

TEST(FashionMnist, TruncatedFileIsRefusedNamingIt) {
  const std::string dir = test::scratch_dir("fmnist_truncated");
  for (const char* name : {"train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                           "t10k-labels-idx1-ubyte.gz"})
    std::filesystem::copy_file(std::string(kFashion) + "/" + name, dir + "/" + name);
  gzFile out = gzopen((dir + "/train-images-idx3-ubyte.gz").c_str(), "wb");
  const unsigned char header[16] = {0, 0, 8, 3, 0, 0, 0xea, 0x60, 0, 0, 0, 28, 0, 0, 0, 28};
  gzwrite(out, header, sizeof(header));
  gzwrite(out, std::string(1000, '\0').data(), 1000);  // 60000 images promised, 1000 bytes given
  gzclose(out);
  try {
    load_fashion_mnist(dir, "m.toml:3:1");
    FAIL() << "a truncated file loaded";
  } catch (const UserError& e) {
    EXPECT_NE(std::string(e.what()).find("train-images-idx3-ubyte.gz: not a valid IDX file "
                                         "(holds 1000 data bytes, its header promises 47040000)"),
              std::string::npos) << e.what();
  }
}

TEST(Sampler, ShardsAreDisjointAndCoverEverySample) {
  const int64_t n = 1000;
  std::set<int64_t> seen;
  for (int rank = 0; rank < 4; ++rank)
    for (int64_t i : shard_indices(n, rank, 4, 7, 0, true, true)) EXPECT_TRUE(seen.insert(i).second);
  EXPECT_EQ(static_cast<int64_t>(seen.size()), n);
}

TEST(Sampler, PadsByWrappingSoEveryRankGetsAsMany) {
  const auto a = shard_indices(10, 0, 3, 1, 0, true, true);
  const auto c = shard_indices(10, 2, 3, 1, 0, true, true);
  EXPECT_EQ(a.size(), 4u);
  EXPECT_EQ(c.size(), 4u);
  EXPECT_EQ(shard_indices(10, 2, 3, 1, 0, false, false).size(), 3u);
}

TEST(Sampler, ReshufflesEachEpochAndRepeatsForTheSameSeed) {
  const auto e0 = shard_indices(5000, 1, 2, 42, 0, true, true);
  EXPECT_EQ(e0, shard_indices(5000, 1, 2, 42, 0, true, true));
  EXPECT_NE(e0, shard_indices(5000, 1, 2, 42, 1, true, true));
  EXPECT_NE(e0, shard_indices(5000, 1, 2, 43, 0, true, true));
}

TEST(Sampler, TwoRanksTogetherSeeWhatOneRankSees) {
  // Step s of 2 ranks x 32 covers the same 64 samples as step s of 1 rank x 64.
  const auto one = shard_indices(60000, 0, 1, 3, 2, true, true);
  const auto r0 = shard_indices(60000, 0, 2, 3, 2, true, true);
  const auto r1 = shard_indices(60000, 1, 2, 3, 2, true, true);
  for (int64_t step = 0; step < 5; ++step) {
    std::multiset<int64_t> a(one.begin() + step * 64, one.begin() + step * 64 + 64), b;
    b.insert(r0.begin() + step * 32, r0.begin() + step * 32 + 32);
    b.insert(r1.begin() + step * 32, r1.begin() + step * 32 + 32);
    EXPECT_EQ(a, b);
  }
}

TEST(Schedule, WarmupThenCosineToTheFloor) {
  const OptimizerConfig opt{"adamw", 1.0, 0.9, 0.999, 1e-8, 0, 0};
  const SchedulerConfig sched{10, "cosine", 0.1};
  EXPECT_DOUBLE_EQ(learning_rate(opt, sched, 0, 110), 0.1);
  EXPECT_DOUBLE_EQ(learning_rate(opt, sched, 9, 110), 1.0);
  EXPECT_DOUBLE_EQ(learning_rate(opt, sched, 10, 110), 1.0);
  EXPECT_NEAR(learning_rate(opt, sched, 60, 110), 0.55, 1e-12);
  EXPECT_NEAR(learning_rate(opt, sched, 110, 110), 0.1, 1e-12);
}

}  // namespace
}  // namespace dshost
