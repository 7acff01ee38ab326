// The SDK as a third-party author meets it: dshost installed into a prefix, plugins built out
// of tree against that prefix alone and trained by the installed dshost, a scaffold of every
// kind, a plugin built against the frozen ABI 1.0 header, and plugins that fail.
#include "core/dataset.h"
#include "tests/test_labels.h"
#include "tests/test_util.h"

#include <dshost/abi.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>

namespace fs = std::filesystem;

namespace dshost::test {
namespace {

const std::string kMinor = std::to_string(DSHOST_ABI_MINOR);  // this host's ABI minor

// A command's result, with what it printed when it failed.
void expect_success(const Ran& r, const std::string& what) {
  EXPECT_EQ(r.exit_code, 0) << what << "\n" << r.out << r.err;
}

// dshost installed once for the suite, as `cmake --install` leaves it.
class Sdk : public testing::Test {
 protected:
  static void SetUpTestSuite() {
    root_ = scratch_dir("sdk");
    expect_success(run({DSHOST_CMAKE, "--install", DSHOST_BUILD_DIR, "--prefix", prefix()}),
                   "cmake --install");
  }
  static std::string prefix() { return root_ + "/prefix"; }
  static std::string installed_dshost() { return prefix() + "/bin/dshost"; }

  // Configures, builds and runs the tests of the plugin project in `source`, against the
  // installed prefix only; returns its build folder.
  static std::string build_plugin(const std::string& source) {
    const std::string build = source + "/build";
    std::vector<std::string> configure{DSHOST_CMAKE,
                                       "-S",
                                       source,
                                       "-B",
                                       build,
                                       "-DCMAKE_PREFIX_PATH=" + prefix(),
                                       "-DCMAKE_EXPORT_COMPILE_COMMANDS=ON"};
    if (std::string(DSHOST_CCACHE).size())
      configure.push_back("-DCMAKE_CXX_COMPILER_LAUNCHER=" DSHOST_CCACHE);
    expect_success(run(configure), "configure " + source);
    expect_success(run({DSHOST_CMAKE, "--build", build, "-j2"}), "build " + source);
    const Ran tests = run({DSHOST_CTEST, "--test-dir", build, "--output-on-failure"});
    expect_success(tests, "ctest " + source);
    EXPECT_NE(tests.out.find("100% tests passed"), std::string::npos) << tests.out;
    return build;
  }

  // Trains `manifest` with the installed dshost; returns the run's summary.
  static nlohmann::json train(const std::string& name, const std::string& manifest,
                              std::vector<std::string> sets) {
    const std::string dir = root_ + "/runs/" + name;
    std::vector<std::string> args{installed_dshost(), "run", manifest, "--set",
                                  "run.output_dir=\"" + dir + "\""};
    for (const auto& s : sets) args.insert(args.end(), {"--set", s});
    expect_success(run(args), "training " + name);
    const std::string summary = read_file(dir + "/quickstart/summary.json");
    return summary.empty() ? nlohmann::json::object() : nlohmann::json::parse(summary);
  }

  static std::string root_;
};
std::string Sdk::root_;

DSHOST_SUITE_LABEL(Sdk, slow);
// The examples build from a copy outside the source tree, load in the installed host, and
// train: tiny_mlp under plain_dp matches the bundled ddp step for step on 2 ranks (both
// average fp32 gradients and run the same AdamW; ddp on shards), and a full epoch through
// the solo launcher reaches the accuracy an MLP reaches on Fashion-MNIST.
TEST_F(Sdk, ExamplesBuildOutOfTreeAndTrain) {
  std::string paths;
  for (const char* example : {"tiny_mlp", "plain_dp", "solo", "csv_images"}) {
    const std::string copy = root_ + "/examples/" + example;
    fs::create_directories(copy);
    fs::copy(std::string(DSHOST_SOURCE_DIR) + "/sdk/examples/" + example, copy,
             fs::copy_options::recursive);
    paths += (paths.empty() ? "" : ":") + build_plugin(copy);
  }
  const std::vector<std::string> plugins{"plugins.paths=\"" + paths + "\"",
                                         "model.plugin=tiny_mlp"};
  auto with = [&](std::vector<std::string> sets) {
    sets.insert(sets.end(), plugins.begin(), plugins.end());
    return sets;
  };
  train("plain_dp", quickstart_manifest(),
        with({"strategy.plugin=plain_dp", "train.max_steps=20", "train.eval=false"}));
  train("ddp", quickstart_manifest(),
        with({"strategy.plugin=ddp", "train.max_steps=20", "train.eval=false"}));
  const auto plain = losses(root_ + "/runs/plain_dp/quickstart");
  const auto ddp = losses(root_ + "/runs/ddp/quickstart");
  ASSERT_EQ(plain.size(), 20u);
  EXPECT_LT(plain.back(), plain.front() - 0.5);
  EXPECT_LT(max_abs_difference(plain, ddp), 2e-5);

  // The quickstart without the local launcher's one key.
  std::string text = read_file(quickstart_manifest());
  const size_t nprocs = text.find("nprocs = 2");
  text.erase(nprocs, text.find('\n', nprocs) - nprocs);
  const std::string solo_manifest = write_file(root_ + "/solo.toml", text);
  const auto epoch =
      train("solo", solo_manifest,
            with({"strategy.plugin=plain_dp", "launcher.plugin=solo", "train.epochs=1"}));
  EXPECT_EQ(epoch.value("world_size", 0), 1) << epoch.dump();
  EXPECT_GT(epoch.value("test_accuracy", 0.0), 0.82) << epoch.dump();

  // csv_images on Fashion-MNIST written as CSV (3000 training, 1000 test images): tiny_mlp
  // learns it under ddp on 2 ranks, and the samples skipped are none.
  const auto fashion = open_dataset("fashion_mnist", {"data.path=\"" + fashion_mnist_dir() + "\""});
  const auto csv = [&](dshost_split split, int64_t n) {
    std::string text = "label,pixels...\n";
    std::vector<uint8_t> pixels(28 * 28);
    for (int64_t i = 0; i < n; ++i) {
      int64_t label = 0;
      fashion->fill(split, i, 0, pixels.data(), &label);
      text += std::to_string(label);
      for (uint8_t p : pixels) text += "," + std::to_string(p);
      text += "\n";
    }
    return write_file(root_ + (split == DSHOST_TRAIN_SPLIT ? "/train.csv" : "/test.csv"), text);
  };
  const auto learned = train(
      "csv_images", quickstart_manifest(),
      with({"data.dataset=\"csv_images\"", "data.path=\"" + csv(DSHOST_TRAIN_SPLIT, 3000) + "\"",
            "data.test_path=\"" + csv(DSHOST_TEST_SPLIT, 1000) + "\"", "train.epochs=4"}));
  EXPECT_EQ(learned.value("world_size", 0), 2) << learned.dump();
  EXPECT_GT(learned.value("test_accuracy", 0.0), 0.7) << learned.dump();
  EXPECT_EQ(learned.value("skipped_files", -1), 0) << learned.dump();
}

// `dshost new-plugin` writes a folder for each kind that builds against the installed SDK
// and passes its own load test unchanged; it never overwrites and refuses a bad name.
TEST_F(Sdk, ScaffoldsOfEveryKindBuildAndLoad) {
  const std::string parent = root_ + "/scaffolds";
  fs::create_directories(parent);
  for (const char* kind : {"model", "strategy", "launcher", "dataset"}) {
    const std::string name = std::string("my_") + kind;
    const Ran r = run({installed_dshost(), "new-plugin", "--kind", kind, name, "--dir", parent});
    expect_success(r, std::string("new-plugin ") + kind);
    const std::string source = read_file(parent + "/" + name + "/" + name + ".cc");
    EXPECT_NE(source.find("\"" + name + "\""), std::string::npos) << source;
    const std::string build = build_plugin(parent + "/" + name);
    // The scaffold sets no CMAKE_BUILD_TYPE; dshost_add_plugin builds it optimised anyway.
    const std::string commands = read_file(build + "/compile_commands.json");
    EXPECT_NE(commands.find(" -O3 "), std::string::npos) << commands;
  }
  Ran again =
      run({installed_dshost(), "new-plugin", "--kind", "model", "my_model", "--dir", parent});
  EXPECT_EQ(again.exit_code, 2);
  EXPECT_NE(again.err.find("my_model already exists; nothing was written"), std::string::npos)
      << again.err;
  Ran bad = run({installed_dshost(), "new-plugin", "--kind", "model", "My Model", "--dir", parent});
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.err.find("'My Model' is not a plugin name"), std::string::npos) << bad.err;
}

DSHOST_SUITE_LABEL(SdkAbi, slow);
// A strategy written in C against the frozen copy of abi.h 1.0 (tests/abi/v1.0) loads and
// trains in today's host: 2 ranks of it follow 2 ranks of ddp under plain SGD. ATen's update
// may fuse the multiply-add that this C loop rounds twice: measured 4e-5 apart after 20
// steps, against a loss drop of more than 0.3. The same C built against every later
// release's header (tests/abi/v1.N) trains to the same losses.
TEST(SdkAbi, PluginBuiltAgainstFrozenV1_0Trains) {
  const std::vector<std::string> sgd{
      "launcher.nprocs=2", "train.max_steps=20",
      "train.eval=false",  "optimizer.name=sgd",
      "optimizer.lr=0.2",  "scheduler.warmup_steps=0",
      "train.threads=1",   "plugins.paths=\"" DSHOST_TEST_PLUGIN_DIR "\""};
  auto frozen_sets = sgd;
  frozen_sets.push_back("strategy.plugin=frozen_sgd");
  const auto frozen = train_quickstart("frozen_sgd", frozen_sets);
  const auto ddp = train_quickstart("frozen_sgd_ddp", sgd);
  ASSERT_EQ(frozen.size(), 20u);
  EXPECT_LT(frozen.back(), frozen.front() - 0.3);
  EXPECT_LT(max_abs_difference(frozen, ddp), 1e-4);
  for (const char* release :
       {"frozen_sgd_abi11", "frozen_sgd_abi12", "frozen_sgd_abi13", "frozen_sgd_abi14",
        "frozen_sgd_abi15", "frozen_sgd_abi16", "frozen_sgd_abi17", "frozen_sgd_abi18"}) {
    auto sets = sgd;
    sets.push_back(std::string("strategy.plugin=") + release);
    EXPECT_EQ(train_quickstart(release, sets), frozen) << release;
  }
}

// The test plugins' sources built against the SDK as released with ABI 1.4 (tests/abi/v1.4)
// load in today's host: the model trains to the losses of its build against today's SDK, and
// the launcher runs (starting no rank, it is caught as its build against today's SDK is).
TEST(SdkAbi, PluginsBuiltAgainstTheFrozenV1_4SdkLoadAndRun) {
  const std::vector<std::string> common{"train.max_steps=10", "train.eval=false",
                                        "model.fail_in=\"never\"",
                                        "plugins.paths=\"" DSHOST_TEST_PLUGIN_DIR "\""};
  auto then = common, now = common;
  then.push_back("model.plugin=\"failing_model_abi14\"");
  now.push_back("model.plugin=\"failing_model\"");
  const auto built_then = train_quickstart("abi14_model", then);
  ASSERT_EQ(built_then.size(), 10u);
  EXPECT_EQ(built_then, train_quickstart("abi14_model_now", now));

  const Ran check =
      dshost({"plugins", "--check", DSHOST_TEST_PLUGIN_DIR "/dshost_launcher_idle_abi14.so"});
  EXPECT_EQ(check.exit_code, 0) << check.out;
  EXPECT_NE(check.out.find("launcher idle_abi14 0.0.1 (ABI 1.4)"), std::string::npos) << check.out;
  const std::string dir = scratch_dir("abi14_launcher");
  const std::string manifest =
      write_file(dir + "/m.toml", "[plugins]\npaths = \"" DSHOST_TEST_PLUGIN_DIR
                                  "\"\n"
                                  "[launcher]\nplugin = \"idle_abi14\"\n[model]\nplugin = "
                                  "\"basic_cnn\"\n[strategy]\nplugin = \"ddp\"\n"
                                  "[run]\noutput_dir = \"" +
                                      dir + "\"\n");
  const Ran launched = dshost({"run", manifest});
  EXPECT_EQ(launched.exit_code, 1) << launched.err;
  EXPECT_NE(launched.err.find("launcher 'idle_abi14' (" DSHOST_TEST_PLUGIN_DIR
                              "/dshost_launcher_idle_abi14.so) "
                              "reported success, but no rank 0 of this launch ran"),
            std::string::npos)
      << launched.err;
}

DSHOST_SUITE_LABEL(SdkErrors, slow);
// A LibTorch error thrown deep inside a model call (a shape mismatch) becomes one clear
// line naming rank, host and call: no backtrace, no abort.
TEST(SdkErrors, AnExceptionInsideAPluginCallStopsTheRunWithItsMessage) {
  const std::string dir = scratch_dir("sdk_throwing_model");
  const Ran r = dshost({"run", quickstart_manifest(), "--set", "run.output_dir=\"" + dir + "\"",
                        "--set", "plugins.paths=\"" DSHOST_TEST_PLUGIN_DIR "\"", "--set",
                        "model.plugin=failing_model", "--set", "model.fail_in=\"forward\""});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("model forward_backward failed: "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("mat1 and mat2 shapes cannot be multiplied"), std::string::npos) << r.err;
  expect_no_crash(r.err);
}

// A dataset plugin that fills one sample of another shape than it describes, or throws on
// the worker thread that fills it, stops the run with a message naming the plugin and the
// sample, from any of four workers; nothing crashes.
TEST(SdkErrors, ADatasetThatBreaksItsContractOnOneSampleIsNamed) {
  const std::string dir = scratch_dir("sdk_misfit_dataset");
  for (const std::string fault : {"shape", "throw"}) {
    const Ran r =
        dshost({"run", quickstart_manifest(), "--set", "run.output_dir=\"" + dir + "\"", "--set",
                "plugins.paths=\"" DSHOST_TEST_PLUGIN_DIR "\"", "--set", "data.dataset=\"misfit\"",
                "--set", "data.fault=\"" + fault + "\"", "--set", "data.at=300", "--set",
                "data.workers=4", "--set", "launcher.nprocs=1", "--set", "train.log_every=1"});
    EXPECT_EQ(r.exit_code, 1) << fault;
    const std::string plugin =
        "dataset 'misfit' (" DSHOST_TEST_PLUGIN_DIR "/dshost_dataset_misfit.so)";
    const std::string sample = plugin + ": sample 300 of the train split";
    if (fault == "shape")
      EXPECT_NE(r.err.find(sample +
                           " was filled as [1, 28, 27] where the dataset describes its samples as "
                           "[1, 28, 28]; the plugin's author must fill what it describes"),
                std::string::npos)
          << r.err;
    else
      EXPECT_NE(r.err.find(
                    plugin +
                    " failed on sample 300 of the train split: misfit cannot read its own records"),
                std::string::npos)
          << r.err;
    expect_no_crash(r.err);
  }
}

// `plugins --check FILE` gives the loader's verdict on one file.
TEST(PluginsCheck, SaysWhyAFileIsNotUsableAndWhatAUsableOneIs) {
  Ran r =
      dshost({"plugins", "--check", DSHOST_TEST_PLUGIN_DIR "/dshost_launcher_bad_abi_major.so"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.out.find("not a usable plugin: "), std::string::npos) << r.out;
  EXPECT_NE(
      r.out.find("built for dshost ABI 2." + kMinor + ", but this host implements ABI 1." + kMinor),
      std::string::npos)
      << r.out;
  r = dshost({"plugins", "--check", DSHOST_BUILD_PLUGIN_DIR "/dshost_strategy_zero2.so"});
  EXPECT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("usable strategy plugin 'zero2'"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("strategy zero2 1.0.0 (ABI 1." + kMinor + ")"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace dshost::test
