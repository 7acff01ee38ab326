// Bad input, as a user meets it: `dshost check` and `dshost run` on broken manifests. Each
// must give one clear line naming file:line:column where there is one, exit code 2, and
// no stack trace or abort.
#include "tests/test_labels.h"
#include "tests/test_util.h"

#include <dshost/plugin.hpp>  // hostname()

#include <gtest/gtest.h>

#include <sys/stat.h>

#include <filesystem>
#include <string>

namespace dshost::test {
namespace {

const std::string kGood = R"(
[launcher]
plugin = "local"
nprocs = 2

[model]
plugin = "basic_cnn"

[strategy]
plugin = "ddp"

[train]
epochs = 1
micro_batch_size = 32
)";

std::string manifest(const std::string& name, const std::string& text) {
  return write_file(scratch_dir("cli_errors_" + name) + "/m.toml", text);
}

// Runs `dshost <command> <manifest> [extra...]` and checks the shape of a user error.
Ran expect_user_error(const std::string& command, const std::string& path,
                      std::vector<std::string> extra = {}) {
  std::vector<std::string> args{command, path};
  args.insert(args.end(), extra.begin(), extra.end());
  Ran r = dshost(args);
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_EQ(line_count(r.err), 1) << r.err;
  EXPECT_EQ(r.err.rfind("dshost: ", 0), 0u) << r.err;
  expect_no_crash(r.err);
  return r;
}

TEST(CliErrors, GoodManifestPassesCheck) {
  const Ran r = dshost({"check", manifest("good", kGood)});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("OK: model basic_cnn, strategy ddp, launcher local"), std::string::npos);
}

TEST(CliErrors, MalformedTomlNamesLineAndColumn) {
  const std::string path = manifest("malformed", "[train]\nepochs = 2\nmicro_batch_size = = 3\n");
  const Ran r = expect_user_error("check", path);
  EXPECT_NE(r.err.find(path + ":3:"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("malformed TOML"), std::string::npos) << r.err;
}

TEST(CliErrors, UnknownKeySuggestsTheClosestOne) {
  const std::string path = manifest("unknown_key", kGood + "micro_batch = 8\n");
  const Ran r = expect_user_error("check", path);
  EXPECT_NE(r.err.find(path + ":15:1: error: unknown key 'micro_batch' in [train]"),
            std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("did you mean 'micro_batch_size'?"), std::string::npos) << r.err;
}

TEST(CliErrors, UnknownPluginOptionListsThePluginsKeys) {
  std::string text = kGood;
  text.replace(text.find("plugin = \"ddp\""), 14, "plugin = \"ddp\"\nreduce_bucket = 5");
  const Ran r = expect_user_error("check", manifest("plugin_key", text));
  EXPECT_NE(r.err.find("unknown key 'reduce_bucket' in [strategy]; did you mean "
                       "'reduce_bucket_size'?"),
            std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("overlap_comm"), std::string::npos) << r.err;
}

TEST(CliErrors, WrongTypeSaysWhatWasExpected) {
  std::string text = kGood;
  text.replace(text.find("epochs = 1"), 10, "epochs = \"two\"");
  const std::string path = manifest("wrong_type", text);
  const Ran r = expect_user_error("check", path);
  EXPECT_NE(r.err.find(path + ":13:10: error: train.epochs must be an integer, not string"),
            std::string::npos)
      << r.err;
}

TEST(CliErrors, OutOfRangeAndNotAllowedValues) {
  Ran r =
      expect_user_error("check", manifest("range", kGood), {"--set", "train.micro_batch_size=0"});
  EXPECT_NE(r.err.find("--set train.micro_batch_size=0: error: train.micro_batch_size = integer 0 "
                       "is out of range [1, "),
            std::string::npos)
      << r.err;
  r = expect_user_error("check", manifest("allowed", kGood), {"--set", "train.precision=fp16"});
  EXPECT_NE(r.err.find("train.precision = \"fp16\" is not one of: fp32, bf16, fp8"),
            std::string::npos)
      << r.err;
}

TEST(CliErrors, StrategyOptionsAreChecked) {
  Ran r = expect_user_error(
      "check", manifest("zero3_key", kGood),
      {"--set", "strategy.plugin=zero3-offload", "--set", "strategy.offload_device=cpu"});
  EXPECT_NE(r.err.find("unknown key 'offload_device' in [strategy]"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("offload_param_device"), std::string::npos) << r.err;
  r = expect_user_error("check", manifest("bucket_zero", kGood),
                        {"--set", "strategy.reduce_bucket_size=0"});
  EXPECT_NE(r.err.find("strategy.reduce_bucket_size = integer 0 is out of range [1, "),
            std::string::npos)
      << r.err;
  r = expect_user_error("check", manifest("offload_where", kGood),
                        {"--set", "strategy.plugin=zero3-offload", "--set",
                         "strategy.offload_optimizer_device=nvme"});
  EXPECT_NE(r.err.find("strategy.offload_optimizer_device = \"nvme\" is not one of: cpu, none"),
            std::string::npos)
      << r.err;
}

// data.decode = "gpu" needs a CUDA device (and a build with nvJPEG), said at the key.
TEST(CliErrors, GpuDecodingNeedsACudaDevice) {
  const Ran r =
      expect_user_error("check", manifest("gpu_decode", kGood), {"--set", "data.decode=\"gpu\""});
  EXPECT_NE(
      r.err.find(
          "--set data.decode=\"gpu\": error: data.decode = \"gpu\" needs train.device = \"cuda\"; "
          "set data.decode = \"cpu\" or \"auto\""),
      std::string::npos)
      << r.err;
}

// train.device = "cuda" in a dshost built without CUDA: `run` refuses it in one line at the key,
// saying what to do, before any rank starts (each rank said it before, unplaced); `check`
// passes a GPU manifest on any build.
TEST(CliErrors, ACudaDeviceNeedsACudaBuildToRun) {
#if DSHOST_CUDA
  GTEST_SKIP() << "a CUDA build";
#else
  const std::string path = manifest("cuda", kGood), cuda = "train.device=\"cuda\"";
  const Ran checked = dshost({"check", path, "--set", cuda});
  EXPECT_EQ(checked.exit_code, 0) << checked.err;
  const Ran r = expect_user_error("run", path, {"--set", cuda});
  EXPECT_NE(r.err.find("--set train.device=\"cuda\": error: train.device = \"cuda\", but this "
                       "dshost was built without CUDA (against a CPU LibTorch); set "
                       "train.device = \"cpu\""),
            std::string::npos)
      << r.err;
#endif
}

DSHOST_SUITE_LABEL(CudaDeviceErrors, gpu);
// A CUDA build on a node whose GPUs are hidden (or absent): the rank says so, naming itself,
// its host and what hid them.
TEST(CudaDeviceErrors, ARankThatSeesNoGpuSaysSo) {
#if !DSHOST_CUDA
  GTEST_SKIP() << "not a CUDA build";
#else
  const Ran r = run({"env", "CUDA_VISIBLE_DEVICES=", DSHOST_BINARY, "run",
                     manifest("no_gpu", kGood), "--set", "train.device=\"cuda\"", "--set",
                     "launcher.nprocs=1", "--set", "data.dataset=\"synthetic\""});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("train.device = \"cuda\", but rank 0 on " + hostname() +
                       " sees no GPU (CUDA_VISIBLE_DEVICES=\"\"); run it where `nvidia-smi` "
                       "lists one, or set train.device = \"cpu\""),
            std::string::npos)
      << r.err;
  expect_no_crash(r.err);
#endif
}

// train.precision = "fp8" needs a CUDA device, a model that can be told of fp8 and a dshost
// whose LibTorch has fp8 matrix multiplies, said at the key.
TEST(CliErrors, Fp8NeedsACudaDeviceAModelOf1_9AndABuildWithFp8) {
  const std::string fp8 = "train.precision=\"fp8\"";
  Ran r = expect_user_error("check", manifest("fp8_cpu", kGood), {"--set", fp8});
  EXPECT_NE(r.err.find("--set " + fp8 +
                       ": error: train.precision = \"fp8\" needs train.device = \"cuda\" (fp8 "
                       "runs on GPU tensor cores); set train.precision = \"bf16\""),
            std::string::npos)
      << r.err;
  const std::vector<std::string> on_cuda{"--set", fp8, "--set", "train.device=\"cuda\""};
  auto old_model = on_cuda;
  old_model.insert(old_model.end(), {"--set", "model.plugin=\"failing_model_abi14\"", "--set",
                                     "plugins.paths=\"" DSHOST_TEST_PLUGIN_DIR "\""});
  r = expect_user_error("check", manifest("fp8_old_model", kGood), old_model);
  EXPECT_NE(r.err.find("train.precision = \"fp8\" needs a model built for dshost ABI 1.9 or "
                       "later, but model 'failing_model_abi14' is built for 1.4"),
            std::string::npos)
      << r.err;
#if !DSHOST_FP8
  r = expect_user_error("check", manifest("fp8_build", kGood), on_cuda);
  EXPECT_NE(r.err.find("needs a dshost built with CUDA and LibTorch 2.1 or later"),
            std::string::npos)
      << r.err;
#endif
}

// Each as shipped; mobilenet-finetune with the weights file the user gives (`check` looks for
// it; the ranks read it).
TEST(CliErrors, ShippedManifestsAreValid) {
  const std::string weights = write_file(scratch_dir("shipped") + "/mobilenet_v2.pth", "");
  int checked = 0;
  for (const auto& entry :
       std::filesystem::directory_iterator(std::string(DSHOST_SOURCE_DIR) + "/configs")) {
    std::vector<std::string> args{"check", entry.path().string()};
    if (entry.path().filename() == "mobilenet-finetune.toml")
      args.insert(args.end(), {"--set", "model.init_from=\"" + weights + "\""});
    const Ran r = dshost(args);
    EXPECT_EQ(r.exit_code, 0) << entry.path() << ": " << r.err;
    ++checked;
  }
  EXPECT_GE(checked, 8);
}

TEST(CliErrors, UnknownPluginListsTheKnownOnes) {
  const Ran r = expect_user_error("check", manifest("unknown_plugin", kGood),
                                  {"--set", "strategy.plugin=zero9"});
  EXPECT_NE(r.err.find("--set strategy.plugin=zero9: error: unknown strategy plugin 'zero9'"),
            std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("Known: ddp, zero2, zero3-offload"), std::string::npos) << r.err;
}

TEST(CliErrors, UnknownSectionSuggestsTheClosestOne) {
  const Ran r = expect_user_error("check", manifest("section", kGood + "[optimiser]\nlr = 1\n"));
  EXPECT_NE(r.err.find("unknown section [optimiser]; did you mean 'optimizer'?"), std::string::npos)
      << r.err;
}

TEST(CliErrors, MissingDatasetSaysHowToGetIt) {
  const std::string path = manifest("dataset", kGood + "[data]\npath = \"/nonexistent/fmnist\"\n");
  for (const char* command : {"check", "run"}) {
    const Ran r = expect_user_error(command, path);
    EXPECT_NE(
        r.err.find(path +
                   ":16:8: error: dataset 'fashion_mnist' (" DSHOST_BUILD_PLUGIN_DIR
                   "/dshost_dataset_fashion_mnist.so): data.path '/nonexistent/fmnist' has no "
                   "train-images-idx3-ubyte.gz"),
        std::string::npos)
        << r.err;
    EXPECT_NE(r.err.find("apt-get install dataset-fashion-mnist"), std::string::npos) << r.err;
    EXPECT_EQ(r.out.find("[rank"), std::string::npos) << "no rank may start: " << r.out;
  }
}

// gpt's shape and token data, each refused with what to change.
TEST(CliErrors, GptShapeAndTokenFileMistakes) {
  const std::string dir = scratch_dir("cli_errors_gpt");
  const std::vector<std::string> gpt{"--set", "model.plugin=gpt",
                                     "--set", "data.dataset=text",
                                     "--set", "model.vocab_size=256",
                                     "--set", "model.block_size=16",
                                     "--set", "run.output_dir=\"" + dir + "\""};
  // `command manifest`, gpt's settings, then `extra` (later --set values win).
  auto with = [&](std::vector<std::string> extra) {
    extra.insert(extra.begin() + 2, gpt.begin(), gpt.end());
    return extra;
  };
  Ran r = dshost(with({"check", manifest("gpt_preset", kGood), "--set", "model.preset=gpt3"}));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("model.preset = \"gpt3\" is not one of: custom, gpt2-124m, gpt2-350m, "
                       "gpt2-774m, gpt-1.3b"),
            std::string::npos)
      << r.err;

  r = dshost(with({"run", manifest("gpt_width", kGood), "--set", "model.n_embd=100", "--set",
                   "model.n_head=3", "--set", "launcher.nprocs=1"}));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("model create failed: model.n_embd = 100 is not a multiple of "
                       "model.n_head = 3"),
            std::string::npos)
      << r.err;

  const std::string odd = write_file(dir + "/odd.bin", "abc");
  r = dshost(with({"run", manifest("gpt_tokens", kGood), "--set", "data.dataset=tokens", "--set",
                   "data.path=\"" + odd + "\"", "--set", "launcher.nprocs=1", "--set",
                   "model.n_layer=1", "--set", "model.n_head=1", "--set", "model.n_embd=8"}));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find(odd + ": not a uint16 token file (odd size, 3 bytes)"), std::string::npos)
      << r.err;
  expect_no_crash(r.err);
}

TEST(CliErrors, UnreadableManifest) {
  const Ran r = expect_user_error("run", "/nonexistent/manifest.toml");
  EXPECT_NE(r.err.find("cannot read manifest '/nonexistent/manifest.toml': No such file"),
            std::string::npos)
      << r.err;
}

// A FIFO would block the reader until something wrote to it: refused without opening it.
TEST(CliErrors, AManifestThatIsNotARegularFileIsRefusedAtOnce) {
  const std::string fifo = scratch_dir("cli_errors_fifo") + "/m.toml";
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  const Ran r = expect_user_error("check", fifo);
  EXPECT_NE(r.err.find("cannot read manifest '" + fifo + "': not a regular file"),
            std::string::npos)
      << r.err;
  EXPECT_LT(r.seconds, 20);
}

TEST(CliErrors, NonFiniteValuesAreOutOfEveryRange) {
  const std::string path = manifest("nan", kGood);
  for (const std::string set : {"optimizer.lr=nan", "train.grad_clip=nan", "comm.timeout_s=nan",
                                "optimizer.lr=inf", "launcher.grace_period_s=nan"}) {
    const Ran r = expect_user_error("check", path, {"--set", set});
    const std::string key = set.substr(0, set.find('='));
    EXPECT_NE(r.err.find("--set " + set + ": error: " + key + " = "), std::string::npos) << r.err;
    EXPECT_NE(r.err.find(" is out of range ["), std::string::npos) << r.err;
  }
}

TEST(CliErrors, ARunNameThatLeavesTheOutputDirIsRefused) {
  for (const std::string name : {"../escaped", "a/b", "..", "two\\nlines"}) {
    const std::string path = manifest("run_name", kGood + "[run]\nname = \"" + name + "\"\n");
    const Ran r = expect_user_error("run", path);
    EXPECT_NE(r.err.find(path + ":16:8: error: run.name = "), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("must name one folder inside run.output_dir"), std::string::npos) << r.err;
  }
}

TEST(CliErrors, AnOverrideOfAnUnknownSectionNamesTheOverride) {
  const Ran r =
      expect_user_error("check", manifest("set_section", kGood), {"--set", "nosuch.key=1"});
  EXPECT_NE(r.err.find("--set nosuch.key=1: error: unknown section [nosuch]"), std::string::npos)
      << r.err;
}

// A label the model has no output for is named with its data, not met as the model's error.
TEST(CliErrors, ALabelBeyondTheModelsClassesNamesTheDataAndTheLabel) {
  const std::string path = manifest("label_range", kGood);
  const Ran r = dshost({"run", path, "--set", "model.num_classes=5", "--set", "launcher.nprocs=1"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(
      r.err.find(
          path +
          ": error: dataset 'fashion_mnist' has 10 classes (labels 0 to 9) but model "
          "'basic_cnn' has num_classes = 5 (--set model.num_classes=5); raise model.num_classes or "
          "correct the data"),
      std::string::npos)
      << r.err;
  EXPECT_EQ(r.err.find("Exception raised from"), std::string::npos) << r.err;
}

TEST(CliErrors, MalformedOverride) {
  const Ran r = expect_user_error("check", manifest("override", kGood), {"--set", "epochs=3"});
  EXPECT_NE(r.err.find("--set epochs=3: expected section.key=value"), std::string::npos) << r.err;
}

TEST(CliErrors, UsageErrorExitsTwo) {
  const Ran r = dshost({"run"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("manifest is required"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace dshost::test
