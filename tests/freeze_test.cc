// model.freeze: frozen parameters do not move and hold no optimizer state under every strategy
// and world size, runs resume across it, and what it cannot do is refused saying why.
#include <dshost/torch.hpp>  // first: ATen's DLPack

#include "core/checkpoint.h"
#include "core/safetensors.h"
#include "tests/test_labels.h"
#include "tests/test_util.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <set>

namespace dshost::test {
namespace {

// conv1 and conv2 frozen whole, fc1 in part (its bias): fc1's weight and fc2 train.
const char* const kFreeze = "model.freeze=\"conv*, fc1.1.bias\"";
const std::set<std::string> kFrozen{"conv1.0.weight", "conv1.0.bias", "conv2.0.weight",
                                    "conv2.0.bias", "fc1.1.bias"};

// `dshost export` of the newest checkpoint in `checkpoints`, into `file`.
SafetensorsFile exported(const std::string& checkpoints, const std::string& file) {
  const Ran r = dshost({"export", checkpoints, file});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return SafetensorsFile(file);
}

// The names of the tensors the newest checkpoint in `checkpoints` holds.
std::set<std::string> checkpoint_tensors(const std::string& checkpoints) {
  const std::vector<std::vector<TensorLayout>> none;
  const CheckpointReader reader(latest_checkpoint(checkpoints), none);
  std::set<std::string> names;
  for (const auto& item : reader.index()["tensors"].items()) names.insert(item.key());
  return names;
}

DSHOST_SUITE_LABEL(Freeze, slow);
TEST(Freeze, FrozenParametersStayAndHoldNoOptimizerStateUnderEveryStrategyAndWorldSize) {
  const std::vector<std::string> common{"train.eval=false", "train.threads=1"};
  train_quickstart("freeze_start", with(common, {"train.max_steps=5", "checkpoint.every_steps=5"}));
  const std::string start_dir = quickstart_run_dir("freeze_start");
  const SafetensorsFile start =
      exported(start_dir + "/checkpoints", start_dir + "/start.safetensors");
  std::map<int, std::vector<double>> ddp_losses;
  for (const int ranks : {1, 2})
    for (const std::string strategy : {"ddp", "zero2", "zero3-offload"}) {
      const std::string name = cat("freeze_", strategy, "_", ranks);
      std::string log;
      const std::vector<double> losses = train_quickstart(
          name,
          with(common, {kFreeze, "model.init_from=\"" + start.path() + "\"",
                        "strategy.plugin=\"" + strategy + "\"", cat("launcher.nprocs=", ranks),
                        "train.max_steps=6", "checkpoint.every_steps=6"}),
          nullptr, &log);
      EXPECT_NE(log.find("model.freeze: 5 tensors ("), std::string::npos) << log;
      if (strategy == "ddp") ddp_losses[ranks] = losses;
      EXPECT_LT(max_abs_difference(losses, ddp_losses[ranks]), 1e-4) << name;

      const std::string checkpoints = quickstart_run_dir(name) + "/checkpoints";
      const SafetensorsFile trained = exported(checkpoints, checkpoints + "/w.safetensors");
      const std::set<std::string> saved = checkpoint_tensors(checkpoints);
      ASSERT_EQ(trained.names(), start.names());
      for (const std::string& tensor : start.names()) {
        const bool frozen = kFrozen.count(tensor) > 0;
        EXPECT_EQ(at::equal(trained.tensor(tensor), start.tensor(tensor)), frozen)
            << name << " " << tensor;
        EXPECT_EQ(saved.count(tensor + ".exp_avg") + saved.count(tensor + ".exp_avg_sq"),
                  frozen ? 0u : 2u)
            << name << " " << tensor;
      }
    }
}

// A checkpoint saved without model.freeze resumes with it (the frozen parameters take the
// checkpoint's values and stay there); one saved with it cannot resume without it, as it has no
// optimizer state for what was frozen, and says what to do instead.
TEST(Freeze, RunsResumeIntoFreezingButNotOutOfIt) {
  const std::string out = scratch_dir("freeze_resume"), dir = out + "/quickstart/checkpoints";
  const auto run_to = [&](int64_t steps, const std::vector<std::string>& sets) {
    std::vector<std::string> args{"run", quickstart_manifest()};
    for (const auto& s :
         with({"run.output_dir=\"" + out + "\"", "train.eval=false", "train.threads=1",
               "checkpoint.every_steps=4", "checkpoint.keep=0", cat("train.max_steps=", steps)},
              sets))
      args.insert(args.end(), {"--set", s});
    return dshost(args);
  };
  ASSERT_EQ(run_to(4, {}).exit_code, 0);
  const SafetensorsFile at4 = exported(dir + "/step-00000004", out + "/at4.safetensors");
  Ran r = run_to(8, {kFreeze});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("resumed from " + dir + "/step-00000004"), std::string::npos) << r.err;
  const SafetensorsFile at8 = exported(dir + "/step-00000008", out + "/at8.safetensors");
  for (const std::string& tensor : at4.names())
    EXPECT_EQ(at::equal(at8.tensor(tensor), at4.tensor(tensor)), kFrozen.count(tensor) > 0)
        << tensor;

  r = run_to(12, {});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("cannot resume: rank 0 on "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("checkpoint " + dir +
                       "/step-00000008 has no tensor conv1.0.weight.exp_avg "
                       "(conv1.0.weight was frozen by model.freeze when it was saved, so it has "
                       "no optimizer state; resume with the same model.freeze"),
            std::string::npos)
      << r.err;
  EXPECT_FALSE(std::filesystem::exists(dir + "/step-00000012"));
}

// What model.freeze cannot do is refused before any step, saying why.
TEST(FreezeRefusals, AGlobMatchingNothingAndAModelBuiltBeforeAbi1_8) {
  const auto refused = [](const std::vector<std::string>& sets) {
    std::vector<std::string> args{"run", quickstart_manifest(), "--set",
                                  "run.output_dir=\"" + scratch_dir("freeze_refused") + "\""};
    for (const auto& s : sets) args.insert(args.end(), {"--set", s});
    const Ran r = dshost(args);
    EXPECT_EQ(r.exit_code, 2) << r.err;
    return r.err;
  };
  std::string err = refused({"model.freeze=\"conv1.*, head.*\"", "launcher.nprocs=1"});
  EXPECT_NE(err.find("model.freeze: \"head.*\" matches none of the model's parameters: "
                     "conv1.0.weight, conv1.0.bias, conv2.0.weight"),
            std::string::npos)
      << err;
  err = refused({kFreeze, "model.plugin=\"failing_model_abi14\"",
                 "plugins.paths=\"" DSHOST_TEST_PLUGIN_DIR "\""});
  EXPECT_NE(err.find("error: model.freeze needs a model built for dshost ABI 1.8 or later, but "
                     "model 'failing_model_abi14' is built for 1.4"),
            std::string::npos)
      << err;
}

}  // namespace
}  // namespace dshost::test
