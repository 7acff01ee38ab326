// What a run's checkpoint holds beside the strategy's state (core/run_checkpoint.h); saving
// and resuming whole runs are tested in tests/checkpoint_test.cc.
#include "core/run_checkpoint.h"

#include <dshost/plugin.hpp>  // cat()

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <unistd.h>

namespace fs = std::filesystem;

namespace dshost {
namespace {

TEST(RunCheckpoint, ARestoredGeneratorDrawsTheSameNumbersAgain) {
  at::manual_seed(7);
  const auto states = rng_states(2, at::kCPU);
  ASSERT_EQ(states.size(), 1u);
  EXPECT_EQ(states[0].first, "rng.cpu.rank2");
  const at::Tensor first = at::rand({8});
  set_rng_state(states[0].first, states[0].second, at::kCPU);
  EXPECT_TRUE(at::equal(at::rand({8}), first));
}

TEST(RunCheckpoint, ADirectoryWithLatestNamesItsNewestCheckpoint) {
  const fs::path dir = fs::temp_directory_path() / cat("dshost_checkpoint_at_", ::getpid());
  fs::remove_all(dir);
  fs::create_directories(dir / "step-00000004");
  std::ofstream(dir / "step-00000004" / "index.json") << "{}";
  EXPECT_EQ(checkpoint_at((dir / "step-00000004").string()), (dir / "step-00000004").string());
  EXPECT_EQ(checkpoint_at(dir.string()), dir.string()) << "no `latest`: the path as given";
  std::ofstream(dir / "latest") << "step-00000004\n";
  EXPECT_EQ(checkpoint_at(dir.string()), (dir / "step-00000004").string());
  fs::remove_all(dir);
}

}  // namespace
}  // namespace dshost
