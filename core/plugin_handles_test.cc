// The plugin handles (core/plugin_handles.h) over a strategy table written here: what a
// failed call becomes for the user, and the answers that depend on a plugin's ABI minor.
#include "core/plugin_handles.h"

#include "core/comm.h"  // host_name
#include "core/error.h"

#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <cmath>
#include <cstdio>

namespace dshost {
namespace {

// What the fake strategy's calls answer, set by each test.
struct Script {
  dshost_status create = DSHOST_OK, step = DSHOST_OK, save = DSHOST_OK;
  double grad_norm = 0;  // what step returns
  int32_t capturable = 1;
  const char* message = "";
} script;

dshost_status fail(dshost_status status, dshost_error* err) {
  if (status != DSHOST_OK) std::snprintf(err->message, sizeof(err->message), "%s", script.message);
  return status;
}

dshost_strategy_api fake_table() {
  dshost_strategy_api api{sizeof(dshost_strategy_api)};
  api.create = [](const dshost_services*, dshost_strategy** out, dshost_error* err) {
    *out = reinterpret_cast<dshost_strategy*>(&script);
    return fail(script.create, err);
  };
  api.destroy = [](dshost_strategy*) {};
  api.step = [](dshost_strategy*, const dshost_step_args*, dshost_step_stats* stats,
                dshost_error* err) {
    stats->grad_norm = script.grad_norm;
    return fail(script.step, err);
  };
  api.save = [](dshost_strategy*, const dshost_state_io*, dshost_error* err) {
    return fail(script.save, err);
  };
  api.load = [](dshost_strategy*, const dshost_state_io*, dshost_error*) { return DSHOST_OK; };
  api.capturable = [](dshost_strategy*, int32_t* out, dshost_error*) {
    *out = script.capturable;
    return DSHOST_OK;
  };
  return api;
}

class PluginHandles : public ::testing::Test {
 protected:
  void SetUp() override { script = Script{}; }
  LoadedPlugin plugin(const dshost_strategy_api& api) {
    descriptor_.name = "fake";
    LoadedPlugin p;
    p.descriptor = &descriptor_;
    p.table = std::make_shared<dshost_strategy_api>(api);
    return p;
  }
  std::string failure_of(const std::function<void()>& f, int* exit_code = nullptr) {
    try {
      f();
    } catch (const UserError& e) {
      if (exit_code) *exit_code = e.exit_code();
      return e.what();
    }
    return "(no error)";
  }
  dshost_plugin_descriptor descriptor_{sizeof(dshost_plugin_descriptor)};
  CallStatus status_{3, nullptr};
};

TEST_F(PluginHandles, AFailedCallNamesTheRankTheHostTheCallAndThePluginsMessage) {
  script.create = DSHOST_INVALID_ARGUMENT;
  script.message = "overlap_comm needs two ranks";
  const LoadedPlugin p = plugin(fake_table());
  int exit_code = 0;
  EXPECT_EQ(
      failure_of([&] { StrategyHandle(p, nullptr, status_); }, &exit_code),
      cat("rank 3 on ", hostname(), ": strategy create failed: overlap_comm needs two ranks"));
  EXPECT_EQ(exit_code, 2) << "bad input";
}

TEST_F(PluginHandles, TheGpusOutOfMemorySaysWhatToChangeInTheManifest) {
  script.step = DSHOST_OUT_OF_MEMORY;
  script.message = "CUDA out of memory. Tried to allocate 2.00 GiB";
  const LoadedPlugin p = plugin(fake_table());
  const StrategyHandle strategy(p, nullptr, status_);
  int exit_code = 0;
  const at::Tensor norm = at::zeros({1}, at::kDouble);
  const std::string message = failure_of([&] { strategy.step(0.1, 0.0, false, norm); }, &exit_code);
  EXPECT_NE(
      message.find(
          "strategy step failed: CUDA out of memory. Tried to allocate 2.00 GiB The GPU's memory "
          "ran out: lower train.micro_batch_size"),
      std::string::npos)
      << message;
  EXPECT_EQ(exit_code, 1);
}

// Since ABI 1.4 a strategy may write the norm into the slot and return NaN for "on the
// device"; an older one returns the norm itself, so its NaN is a diverged norm.
TEST_F(PluginHandles, AStrategyBefore1_4ReportsADivergedNormAsNaN) {
  script.grad_norm = std::nan("");
  descriptor_.abi_minor = 3;
  const LoadedPlugin old = plugin(fake_table());
  const at::Tensor norm = at::zeros({1}, at::kDouble);
  StrategyHandle(old, nullptr, status_).step(0.1, 0.0, false, norm);
  EXPECT_TRUE(std::isnan(norm.item<double>())) << norm;

  descriptor_.abi_minor = 4;
  const LoadedPlugin p = plugin(fake_table());
  norm.fill_(2.5);  // as the strategy wrote it
  StrategyHandle(p, nullptr, status_).step(0.1, 0.0, false, norm);
  EXPECT_EQ(norm.item<double>(), 2.5);
  script.grad_norm = 1.5;  // a 1.4 strategy may return the norm instead
  StrategyHandle(p, nullptr, status_).step(0.1, 0.0, false, norm);
  EXPECT_EQ(norm.item<double>(), 1.5);
}

TEST_F(PluginHandles, OutOfMemoryAdviceFollowsOnlyTheAllocatorsOwnMessages) {
  EXPECT_NE(out_of_memory_advice("out of memory").find("The host's memory ran out"),
            std::string::npos);
  EXPECT_EQ(out_of_memory_advice("the model needs 80 GiB: offload_param_device = \"cpu\""), "");
}

TEST_F(PluginHandles, CaptureIsRefusedWithTheReason) {
  dshost_strategy_api before_1_3 = fake_table();
  before_1_3.capturable = nullptr;
  const LoadedPlugin old = plugin(before_1_3);
  EXPECT_EQ(StrategyHandle(old, nullptr, status_).why_not_capturable(),
            "strategy 'fake' is built for an ABI before 1.3");
  const LoadedPlugin p = plugin(fake_table());
  const StrategyHandle strategy(p, nullptr, status_);
  EXPECT_EQ(strategy.why_not_capturable(), "");
  script.capturable = 0;
  EXPECT_NE(strategy.why_not_capturable().find("communicates during backward"), std::string::npos);
}

TEST_F(PluginHandles, CheckpointsNeedAStrategyOf1_2AndAFailedSaveSaysWhy) {
  dshost_strategy_api before_1_2 = fake_table();
  before_1_2.save = nullptr;
  before_1_2.load = nullptr;
  const LoadedPlugin old = plugin(before_1_2);
  EXPECT_EQ(failure_of([&] { StrategyHandle(old, nullptr, status_).load(nullptr); }),
            "strategy 'fake' cannot load checkpoints (built for an ABI before 1.2)");
  script.save = DSHOST_IO_ERROR;
  script.message = "disk full";
  const LoadedPlugin p = plugin(fake_table());
  EXPECT_EQ(failure_of([&] { StrategyHandle(p, nullptr, status_).save(nullptr); }),
            "strategy save failed: disk full");
}

}  // namespace
}  // namespace dshost
