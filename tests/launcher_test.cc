// The local launcher, loaded through the ABI as the host loads it, running shell commands
// as ranks: rank variables, prefixed output, fail-fast with the failing rank's code.
#include "core/job.h"
#include "core/manifest.h"
#include "core/plugin_loader.h"
#include "core/services.h"
#include "tests/test_util.h"

#include <gtest/gtest.h>

#include <chrono>

namespace dshost {
namespace {

struct Launch {
  dshost_status status;
  int32_t exit_code;
  std::string message, out;
};

// Launches `script` (run by /bin/sh) as every rank of a local launcher set up by `section`.
Launch launch(const std::string& section, const std::string& script) {
  const std::string path = test::write_file(test::scratch_dir("launcher") + "/m.toml",
                                            "[launcher]\nplugin = \"local\"\n" + section);
  const Manifest m = Manifest::load(path, {});
  const LoadedPlugin plugin = PluginCatalog(DSHOST_BUILD_PLUGIN_DIR).load(DSHOST_KIND_LAUNCHER, "local", path);
  const Section options = m.resolve("launcher", {plugin.descriptor->options,
                                                 plugin.descriptor->option_count}, true);
  PluginHost host("local", options, RankInfo{}, nullptr);
  const auto* api = plugin.api<dshost_launcher_api>();
  dshost_error err{sizeof(dshost_error), {}};
  dshost_launcher* launcher = nullptr;
  EXPECT_EQ(api->create(host.table(), &launcher, &err), DSHOST_OK) << err.message;
  const char* argv[] = {"/bin/sh", "-c", script.c_str(), nullptr};
  const char* env[] = {"DSHOST_TEST_GREETING=hello", nullptr};
  const dshost_launch_request request{sizeof(request), argv, env};
  Launch result{};
  testing::internal::CaptureStdout();
  result.status = api->launch(launcher, &request, &result.exit_code, &err);
  result.out = testing::internal::GetCapturedStdout();
  result.message = err.message;
  api->destroy(launcher);
  return result;
}

TEST(LocalLauncher, EveryRankGetsTorchrunVariablesAndPrefixedOutput) {
  const Launch l = launch("nprocs = 3\nmaster_port = 29611\n",
                          "echo \"$DSHOST_TEST_GREETING $RANK/$WORLD_SIZE local $LOCAL_RANK/"
                          "$LOCAL_WORLD_SIZE at $MASTER_ADDR:$MASTER_PORT\"");
  EXPECT_EQ(l.status, DSHOST_OK) << l.message;
  EXPECT_EQ(l.exit_code, 0);
  for (int r = 0; r < 3; ++r) {
    const std::string line = "[rank " + std::to_string(r) + "] hello " + std::to_string(r) +
                             "/3 local " + std::to_string(r) + "/3 at 127.0.0.1:29611\n";
    EXPECT_NE(l.out.find(line), std::string::npos) << l.out;
  }
}

TEST(LocalLauncher, PicksAFreePortByDefault) {
  const Launch l = launch("nprocs = 2\n", "echo port=$MASTER_PORT");
  const size_t at = l.out.find("port=");
  ASSERT_NE(at, std::string::npos) << l.out;
  const int port = std::stoi(l.out.substr(at + 5));
  EXPECT_GT(port, 0);
  EXPECT_NE(l.out.find("port=" + std::to_string(port), at + 1), std::string::npos)
      << "both ranks share one port: " << l.out;
}

TEST(LocalLauncher, OneFailingRankStopsTheOthersAndItsCodeIsTheJobs) {
  const auto start = std::chrono::steady_clock::now();
  const Launch l = launch("nprocs = 3\ngrace_period_s = 2\n",
                          "if [ \"$RANK\" = 1 ]; then sleep 0.5; exit 3; fi; exec sleep 31.4159");
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(l.status, DSHOST_RANK_FAILED);
  EXPECT_EQ(l.exit_code, 3);
  EXPECT_NE(l.message.find("rank 1 on host "), std::string::npos) << l.message;
  EXPECT_NE(l.message.find("exited with code 3; stopped the other ranks"), std::string::npos)
      << l.message;
  EXPECT_LT(seconds, 10.0);
  EXPECT_TRUE(test::pids_matching("sleep 31.4159").empty()) << "a rank outlived the job";
}

TEST(LocalLauncher, ARankIgnoringSigtermIsKilledAfterTheGracePeriod) {
  const Launch l = launch("nprocs = 2\ngrace_period_s = 1\n",
                          "if [ \"$RANK\" = 0 ]; then exit 5; fi; trap '' TERM; "
                          "while true; do sleep 0.1; done");
  EXPECT_EQ(l.exit_code, 5);
  EXPECT_NE(l.message.find("rank 0 on host "), std::string::npos) << l.message;
}

TEST(LocalLauncher, AMissingProgramIsReportedAsAFailedRank) {
  const Launch l = launch("nprocs = 1\n", "exec /nonexistent/program");
  EXPECT_EQ(l.status, DSHOST_RANK_FAILED);
  EXPECT_EQ(l.exit_code, 127);
  EXPECT_NE(l.message.find("rank 0 on host "), std::string::npos) << l.message;
}

}  // namespace
}  // namespace dshost
