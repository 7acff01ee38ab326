// model.freeze: frozen parameters do not move and hold no optimizer state under every strategy
// and world size, runs resume across it, and what it cannot do is refused saying why.
#include <dshost/torch.hpp>  // first: ATen's DLPack

#include "core/checkpoint.h"
#include "core/safetensors.h"
#include "tests/test_labels.h"
#include "tests/test_util.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <map>
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

using Runs = std::vector<std::pair<std::string, std::vector<std::string>>>;

// Each of `runs` (a name, its --set values) trains 6 steps with kFreeze from the same start
// (the weights of 5 quickstart steps): the frozen tensors end exactly where they started and
// hold no optimizer state, the others move and hold theirs. Returns each run's losses.
std::map<std::string, std::vector<double>> expect_frozen_stay(const Runs& runs) {
  const std::vector<std::string> common{"train.eval=false", "train.threads=1",
                                        "data.path=\"" + fashion_mnist_dir() + "\""};
  train_quickstart("freeze_start", with(common, {"train.max_steps=5", "checkpoint.every_steps=5"}));
  const std::string start_dir = quickstart_run_dir("freeze_start");
  const SafetensorsFile start =
      exported(start_dir + "/checkpoints", start_dir + "/start.safetensors");
  std::map<std::string, std::vector<double>> losses;
  for (const auto& [name, sets] : runs) {
    std::string log;
    losses[name] =
        train_quickstart(name,
                         with(with(common, {kFreeze, "model.init_from=\"" + start.path() + "\"",
                                            "train.max_steps=6", "checkpoint.every_steps=6"}),
                              sets),
                         nullptr, &log);
    EXPECT_NE(log.find("model.freeze: 5 tensors ("), std::string::npos) << log;
    const std::string checkpoints = quickstart_run_dir(name) + "/checkpoints";
    const SafetensorsFile trained = exported(checkpoints, checkpoints + "/w.safetensors");
    const std::set<std::string> saved = checkpoint_tensors(checkpoints);
    EXPECT_EQ(trained.names(), start.names());
    for (const std::string& tensor : start.names()) {
      const bool frozen = kFrozen.count(tensor) > 0;
      EXPECT_EQ(at::equal(trained.tensor(tensor), start.tensor(tensor)), frozen)
          << name << " " << tensor;
      EXPECT_EQ(saved.count(tensor + ".exp_avg") + saved.count(tensor + ".exp_avg_sq"),
                frozen ? 0u : 2u)
          << name << " " << tensor;
    }
  }
  return losses;
}

DSHOST_SUITE_LABEL(Freeze, slow);
// In fp32 on the CPU every strategy also takes the same steps at each world size.
TEST(Freeze, FrozenParametersStayAndHoldNoOptimizerStateUnderEveryStrategyAndWorldSize) {
  Runs runs;
  for (const int ranks : {1, 2})
    for (const std::string strategy : {"ddp", "zero2", "zero3-offload"})
      runs.push_back({cat("freeze_", strategy, "_", ranks),
                      {"strategy.plugin=\"" + strategy + "\"", cat("launcher.nprocs=", ranks)}});
  auto losses = expect_frozen_stay(runs);
  for (const int ranks : {1, 2})
    for (const std::string strategy : {"zero2", "zero3-offload"})
      EXPECT_LT(max_abs_difference(losses[cat("freeze_", strategy, "_", ranks)],
                                   losses[cat("freeze_ddp_", ranks)]),
                1e-4)
          << strategy << " " << ranks;
  // ddp's accounting: every parameter whole on each rank (the frozen ones the host's), fp32
  // gradients for the trained ones only, and AdamW's two moments of their 1/N shard; the
  // flat buffers add FlatLayout's padding, under 16 elements a tensor and N in all.
  const SafetensorsFile start(quickstart_run_dir("freeze_start") + "/start.safetensors");
  int64_t frozen = 0;
  for (const std::string& tensor : kFrozen) frozen += start.tensor(tensor).numel();
  const int64_t trained_tensors = static_cast<int64_t>(start.names().size() - kFrozen.size());
  for (const int ranks : {1, 2}) {
    const auto summary = nlohmann::json::parse(
        read_file(quickstart_run_dir(cat("freeze_ddp_", ranks)) + "/summary.json"));
    const int64_t all = summary["parameters"], trained = all - frozen;
    const int64_t padding = 15 * trained_tensors + ranks;
    const auto& bytes = summary["memory_per_rank_bytes"];
    const int64_t params =
                      bytes["param_device"].get<int64_t>() + bytes["param_host"].get<int64_t>(),
                  grads = bytes["grad_device"], optim = bytes["optim_device"];
    EXPECT_GE(params, 4 * all);
    EXPECT_LE(params, 4 * (all + padding));
    EXPECT_GE(grads, 4 * trained);
    EXPECT_LE(grads, 4 * (trained + padding));
    EXPECT_GE(optim, 2 * 4 * trained / ranks);
    EXPECT_LE(optim, 2 * 4 * (trained + padding) / ranks);
    // FLOPs: conv1 and conv2, frozen before the first unit that trains, run forward alone.
    const auto& units = summary["flops_profile"];
    ASSERT_EQ(units.size(), 4u);
    int64_t forward_alone = 0;
    for (int u = 0; u < 4; ++u) {
      EXPECT_EQ(units[u]["trained"], u >= 2) << units[u]["unit"];
      if (u < 2) forward_alone += units[u]["forward_flops_per_sample"].get<int64_t>();
    }
    EXPECT_GT(forward_alone, 0);
    EXPECT_EQ(summary["training_flops_per_sample"].get<int64_t>(),
              3 * summary["forward_flops_per_sample"].get<int64_t>() - 2 * forward_alone);
  }
}

DSHOST_SUITE_LABEL(FreezeOnGpu, gpu);
// On the GPU in bf16 with CUDA graphs (two ranks share one GPU), and zero3-offload's optimizer
// in host memory.
TEST(FreezeOnGpu, FrozenParametersStayAndHoldNoOptimizerState) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  const std::vector<std::string> gpu{"train.device=\"cuda\"", "train.precision=\"bf16\"",
                                     "train.cuda_graph=true"};
  const auto losses = expect_frozen_stay({
      {"freeze_cuda_ddp_1", with(gpu, {"strategy.plugin=\"ddp\"", "launcher.nprocs=1"})},
      {"freeze_cuda_zero2_2", with(gpu, {"strategy.plugin=\"zero2\"", "launcher.nprocs=2"})},
      {"freeze_cuda_zero3_2",
       with(gpu, {"strategy.plugin=\"zero3-offload\"", "strategy.offload_optimizer_device=\"cpu\"",
                  "launcher.nprocs=2"})},
  });
  for (const auto& [name, run] : losses) EXPECT_EQ(run.size(), 6u) << name;
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
