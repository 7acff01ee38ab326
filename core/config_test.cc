// The host's sections read into their structs from one declaration per key (config.cc);
// the validator's own errors are tested through the command line in tests/cli_errors_test.cc.
#include "core/config.h"

#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>

namespace fs = std::filesystem;

namespace dshost {
namespace {

Config read(const std::string& toml, const std::vector<std::string>& sets = {}) {
  const fs::path path = fs::temp_directory_path() / cat("dshost_config_", ::getpid(), ".toml");
  std::ofstream(path) << toml;
  const Config c = read_config(Manifest::load(path.string(), sets));
  fs::remove(path);
  return c;
}

TEST(Config, EachKeyFillsItsMember) {
  const Config c = read(R"(
[run]
name = "a"
output_dir = "out"
seed = 7
[train]
epochs = 3
micro_batch_size = 5
grad_clip = 1.5
precision = "bf16"
device = "cuda"
nonfinite = "skip"
cuda_graph = true
[optimizer]
name = "sgd"
momentum = 0.9
[scheduler]
decay = "linear"
[checkpoint]
every_steps = 10
resume = "never"
[plugins]
paths = "/x:/y"
)");
  EXPECT_EQ(c.run.dir(), "out/a");
  EXPECT_EQ(c.run.seed, 7);
  EXPECT_EQ(c.train.epochs, 3);
  EXPECT_EQ(c.train.micro_batch_size, 5);
  EXPECT_EQ(c.train.grad_clip, 1.5);
  EXPECT_EQ(c.train.precision, Precision::bf16);
  EXPECT_EQ(c.train.device, DeviceKind::cuda);
  EXPECT_EQ(c.train.nonfinite, Nonfinite::skip);
  EXPECT_TRUE(c.train.cuda_graph);
  EXPECT_EQ(c.optimizer.name, OptimizerKind::sgd);
  EXPECT_EQ(c.optimizer.momentum, 0.9);
  EXPECT_EQ(c.scheduler.decay, Decay::linear);
  EXPECT_EQ(c.checkpoint.every_steps, 10);
  EXPECT_EQ(c.checkpoint.resume, "never");
  EXPECT_EQ(c.checkpoint.dir, "out/a/checkpoints");
  EXPECT_EQ(c.plugins.paths, "/x:/y");
}

TEST(Config, AnEmptyManifestGivesTheDeclaredDefaults) {
  const Config c = read("");
  EXPECT_EQ(c.run.dir(), "runs/run");
  EXPECT_EQ(c.train.epochs, 1);
  EXPECT_EQ(c.train.micro_batch_size, 32);
  EXPECT_EQ(c.train.log_every, 50);
  EXPECT_EQ(c.train.precision, Precision::fp32);
  EXPECT_EQ(c.train.device, DeviceKind::cpu);
  EXPECT_EQ(c.train.nonfinite, Nonfinite::stop);
  EXPECT_TRUE(c.train.eval);
  EXPECT_EQ(c.optimizer.name, OptimizerKind::adamw);
  EXPECT_EQ(c.optimizer.lr, 0.001);
  EXPECT_EQ(c.scheduler.decay, Decay::cosine);
  EXPECT_EQ(c.comm.timeout_s, 300);
  EXPECT_EQ(c.checkpoint.keep, 3);
  EXPECT_EQ(c.checkpoint.resume, "auto");
}

// Every value of each enum key reaches its enumerator and is named back as it was spelled.
template <class E>
void expect_every_choice_round_trips(const std::string& key, E (*member)(const Config&)) {
  const std::vector<std::string> names = split(Choices<E>::names, '|');
  for (size_t i = 0; i < names.size(); ++i) {
    const E value = member(read("", {cat(key, "=\"", names[i], "\"")}));
    EXPECT_EQ(static_cast<size_t>(value), i) << key << " = " << names[i];
    EXPECT_EQ(choice_name(value), names[i]);
  }
}

TEST(Config, EveryChoiceOfEveryEnumKeyRoundTrips) {
  expect_every_choice_round_trips<Precision>("train.precision",
                                             [](const Config& c) { return c.train.precision; });
  expect_every_choice_round_trips<DeviceKind>("train.device",
                                              [](const Config& c) { return c.train.device; });
  expect_every_choice_round_trips<Nonfinite>("train.nonfinite",
                                             [](const Config& c) { return c.train.nonfinite; });
  expect_every_choice_round_trips<OptimizerKind>("optimizer.name",
                                                 [](const Config& c) { return c.optimizer.name; });
  expect_every_choice_round_trips<Decay>("scheduler.decay",
                                         [](const Config& c) { return c.scheduler.decay; });
  EXPECT_EQ(choice_name(Decode::automatic), "auto");
  EXPECT_EQ(choice_value<Decode>("gpu"), Decode::gpu);
}

}  // namespace
}  // namespace dshost
