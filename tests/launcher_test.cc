// The local launcher, loaded through the ABI as the host loads it, running shell commands
// as ranks: rank variables, prefixed output, fail-fast with the failing rank's code.
#include "core/job.h"
#include "core/manifest.h"
#include "core/plugin_loader.h"
#include "core/services.h"
#include "plugins/launchers/ssh/hostfile.hpp"
#include "tests/cluster_fixtures.h"
#include "tests/test_labels.h"
#include "tests/test_util.h"

#include <gtest/gtest.h>

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <map>
#include <regex>

namespace dshost {
namespace {

struct Launch {
  dshost_status status;
  int32_t exit_code;
  std::string message, out;
};

// Launches argv as every rank of the launcher `plugin` set up by `section`, as `dshost run`
// does, capturing what it writes to stdout.
Launch launch_with(const std::string& plugin_name, const std::string& section,
                   const std::vector<std::string>& argv_strings) {
  const std::string path =
      test::write_file(test::scratch_dir("launcher") + "/m.toml",
                       "[launcher]\nplugin = \"" + plugin_name + "\"\n" + section);
  const Manifest m = Manifest::load(path, {});
  const LoadedPlugin plugin =
      PluginCatalog(DSHOST_BUILD_PLUGIN_DIR).load(DSHOST_KIND_LAUNCHER, plugin_name, path);
  const Section options =
      m.resolve("launcher", {plugin.options.data(), plugin.options.size()}, true);
  PluginHost host(plugin_name, options, RankInfo{}, nullptr);
  const auto* api = plugin.api<dshost_launcher_api>();
  dshost_error err{sizeof(dshost_error), {}};
  dshost_launcher* launcher = nullptr;
  Launch result{};
  if (const dshost_status created = api->create(host.table(), &launcher, &err);
      created != DSHOST_OK)
    return {created, -1, err.message, ""};
  std::vector<const char*> argv;
  for (const auto& a : argv_strings) argv.push_back(a.c_str());
  argv.push_back(nullptr);
  const char* env[] = {"DSHOST_TEST_GREETING=hello", nullptr};
  const dshost_launch_request request{sizeof(request), argv.data(), env};
  testing::internal::CaptureStdout();
  result.status = api->launch(launcher, &request, &result.exit_code, &err);
  result.out = testing::internal::GetCapturedStdout();
  result.message = err.message;
  api->destroy(launcher);
  return result;
}

// Launches `script` (run by /bin/sh) as every rank of a local launcher set up by `section`.
Launch launch(const std::string& section, const std::string& script) {
  return launch_with("local", section, {"/bin/sh", "-c", script});
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

// The picked port stays the job's until it ends: another program's bind is refused while
// rank 0's store, binding with SO_REUSEADDR as LibTorch's does, listens on it.
TEST(LocalLauncher, HoldsThePickedPortForRankZerosStore) {
  const std::string script =
      test::write_file(test::scratch_dir("launcher_port") + "/bind.py", R"(import os, socket
port = int(os.environ["MASTER_PORT"])
try:
    socket.socket().bind(("", port))
    print("another program took", port)
except OSError as e:
    print("another program refused: errno", e.errno)
store = socket.socket()
store.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
store.bind(("", port))
store.listen()
print("the store listens on", port)
)");
  const Launch l = launch("nprocs = 1\n", "exec python3 " + script);
  ASSERT_EQ(l.exit_code, 0) << l.out;
  EXPECT_NE(l.out.find("[rank 0] another program refused: errno 98\n"), std::string::npos) << l.out;
  const size_t at = l.out.find("the store listens on ");
  ASSERT_NE(at, std::string::npos) << l.out;
  const int port = std::stoi(l.out.substr(at + 21));
  const int after = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  EXPECT_EQ(bind(after, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0)
      << "the port is still held after the job: " << std::strerror(errno);
  close(after);
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

// The rendezvous variables in `env`'s output (a rank's environment as it is, duplicates
// included: a shell would keep only one of two), per rank: "RANK=0 WORLD_SIZE=2 ...".
std::map<int, std::string> rendezvous_seen(const std::string& out) {
  static const std::regex line(
      R"(\[rank (\d+)\] ((RANK|LOCAL_RANK|WORLD_SIZE|LOCAL_WORLD_SIZE|MASTER_ADDR|MASTER_PORT)=\S*))");
  std::map<int, std::vector<std::string>> found;
  for (std::sregex_iterator it(out.begin(), out.end(), line), end; it != end; ++it)
    found[std::stoi((*it)[1].str())].push_back((*it)[2].str());
  std::map<int, std::string> seen;
  for (auto& [rank, entries] : found) {
    std::sort(entries.begin(), entries.end());
    for (const auto& e : entries) seen[rank] += e + " ";
  }
  return seen;
}

// As inside a torchrun job or a Slurm step, whose variables every child inherits.
struct InheritedRendezvous {
  InheritedRendezvous() {
    for (const auto& [k, v] : kValues) setenv(k, v, 1);
  }
  ~InheritedRendezvous() {
    for (const auto& [k, v] : kValues) unsetenv(k);
  }
  static constexpr std::pair<const char*, const char*> kValues[] = {{"RANK", "7"},
                                                                    {"LOCAL_RANK", "5"},
                                                                    {"WORLD_SIZE", "9"},
                                                                    {"LOCAL_WORLD_SIZE", "6"},
                                                                    {"MASTER_ADDR", "10.231.9.9"},
                                                                    {"MASTER_PORT", "1"}};
};

TEST(LocalLauncher, InheritedRendezvousVariablesAreReplacedNotAppended) {
  const InheritedRendezvous inherited;
  const Launch l = launch_with("local", "nprocs = 2\nmaster_port = 29612\n", {"/usr/bin/env"});
  ASSERT_EQ(l.status, DSHOST_OK) << l.message;
  const auto seen = rendezvous_seen(l.out);
  for (int r = 0; r < 2; ++r) {
    const std::string rank = std::to_string(r);
    EXPECT_EQ(seen.at(r), "LOCAL_RANK=" + rank +
                              " LOCAL_WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=29612 RANK=" +
                              rank + " WORLD_SIZE=2 ");
  }
}

// ---- ssh: the hostfile and NODE_SPEC selections -----------------------------------------

std::string hostfile_error(const std::string& text) {
  try {
    ssh::parse_hostfile(text, "hf");
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(Hostfile, ReadsDeepSpeedsFormatWithCommentsAndBlankLines) {
  const auto nodes =
      ssh::parse_hostfile("# cluster\n\nworker-1 slots=4\n  worker-2   slots=2  # half\n", "hf");
  ASSERT_EQ(nodes.size(), 2u);
  EXPECT_EQ(nodes[0].host, "worker-1");
  EXPECT_EQ(nodes[0].slots, (std::vector<int>{0, 1, 2, 3}));
  EXPECT_EQ(nodes[1].host, "worker-2");
  EXPECT_EQ(nodes[1].slots, (std::vector<int>{0, 1}));
}

TEST(Hostfile, MalformedLinesDuplicatesAndEmptyFilesNameTheLine) {
  EXPECT_EQ(hostfile_error("a slots=1\nb slot=2\n"), "hf:2: 'b slot=2' is not 'HOST slots=N'");
  EXPECT_EQ(hostfile_error("a slots=1\nb\n"), "hf:2: 'b' is not 'HOST slots=N'");
  EXPECT_EQ(hostfile_error("a slots=x\n"), "hf:1: 'a slots=x' is not 'HOST slots=N'");
  EXPECT_EQ(hostfile_error("a slots=1 extra\n"), "hf:1: 'a slots=1 extra' is not 'HOST slots=N'");
  EXPECT_EQ(hostfile_error("a slots=1\n# c\na slots=2\n"), "hf:3: host a is listed twice");
  EXPECT_EQ(hostfile_error("a slots=0\n"), "hf:1: host a has slots=0; remove the line");
  EXPECT_EQ(hostfile_error("# nothing\n\n"), "hf: no hosts (expected lines of 'HOST slots=N')");
}

std::vector<ssh::Node> select(const std::string& include, const std::string& exclude,
                              int num_nodes = 0) {
  return ssh::select_nodes(ssh::parse_hostfile("a slots=4\nb slots=4\nc slots=2\n", "hf"), include,
                           exclude, num_nodes, "hf");
}

std::string selection_error(const std::string& include, const std::string& exclude,
                            int num_nodes = 0) {
  try {
    select(include, exclude, num_nodes);
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(Hostfile, IncludeAndExcludeSelectHostsAndSlotsAsDeepSpeedDoes) {
  const auto included = select("c@a:0,2", "");
  ASSERT_EQ(included.size(), 2u);  // hostfile order
  EXPECT_EQ(included[0].host, "a");
  EXPECT_EQ(included[0].slots, (std::vector<int>{0, 2}));
  EXPECT_EQ(included[1].host, "c");
  EXPECT_EQ(included[1].slots, (std::vector<int>{0, 1}));
  const auto excluded = select("", "b@a:1");
  ASSERT_EQ(excluded.size(), 2u);
  EXPECT_EQ(excluded[0].slots, (std::vector<int>{0, 2, 3}));
  EXPECT_EQ(excluded[1].host, "c");
  EXPECT_EQ(select("", "", 2).size(), 2u);
}

TEST(Hostfile, SelectionErrorsNameTheHostOrSlot) {
  EXPECT_EQ(selection_error("a", "b"),
            "launcher.include and launcher.exclude are mutually exclusive; set one");
  EXPECT_EQ(selection_error("a@d", ""), "launcher.include: host d is not in the hostfile hf");
  EXPECT_EQ(selection_error("", "d:0"), "launcher.exclude: host d is not in the hostfile hf");
  EXPECT_EQ(selection_error("c:2", ""), "launcher.include: host c has no slot 2 (it has slots=2)");
  EXPECT_EQ(selection_error("a:x", ""),
            "launcher.include = \"a:x\": slot 'x' of host a is not a number");
  EXPECT_EQ(selection_error("", "a@b@c"), "launcher.exclude leaves no host to run on");
  EXPECT_EQ(selection_error("", "", 4),
            "launcher.num_nodes = 4 but only 3 hosts are selected from hf");
}

// ---- ssh: ranks on two hosts (network namespaces, each with its own sshd) ---------------

using SshLauncher = test::SshHostsTest;

std::string ssh_section(const std::string& dir, const std::string& hostfile_text,
                        const std::string& extra = "") {
  return "hostfile = \"" + test::write_file(dir + "/hostfile", hostfile_text) + "\"\n" +
         "ssh_args = \"-F " + dir + "/ssh_config\"\ndshost_path = \"" + DSHOST_BINARY + "\"\n" +
         "master_port = 29733\n" + extra;
}

// What each rank reports: its argument, an env_file value, its working directory, its
// rank variables and the address of the host it runs on.
const char* kReport =
    "printf '%s|%s|%s|%s/%s %s/%s %s|%s' \"$1\" \"$DSHOST_TEST_VALUE\" \"$(pwd)\" \"$RANK\" "
    "\"$WORLD_SIZE\" \"$LOCAL_RANK\" \"$LOCAL_WORLD_SIZE\" \"$CUDA_VISIBLE_DEVICES\" "
    "\"$(ip -o -4 addr show dev eth0 | awk '{print $4}')\" > \"$2/rank$RANK\"";

DSHOST_SUITE_LABEL(SshLauncher, slow);
TEST_F(SshLauncher, QuotedValuesReachEveryRankIntactAndRunNothing) {
  const std::string trap =
      "it's \"quoted\"; $(touch " + dir_ + "/pwned) `touch " + dir_ + "/pwned` & | > < \\ $HOME";
  const std::string cwd = dir_ + "/work dir 'q' ; $(touch " + dir_ + "/pwned)";
  std::filesystem::create_directories(cwd);
  const std::string env_file =
      test::write_file(dir_ + "/env", "# for every rank\nDSHOST_TEST_VALUE=" + trap + "\n");
  const auto old_cwd = std::filesystem::current_path();
  std::filesystem::current_path(cwd);
  const Launch l =
      launch_with("ssh",
                  ssh_section(dir_, std::string(kHostA) + " slots=1\n" + kHostB + " slots=2\n",
                              "env_file = \"" + env_file + "\"\n"),
                  {"/bin/sh", "-c", kReport, "sh", trap + "\nsecond line", dir_});
  std::filesystem::current_path(old_cwd);
  ASSERT_EQ(l.status, DSHOST_OK) << l.message;
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/pwned")) << "a quoted value ran";
  const std::string common = trap + "\nsecond line|" + trap + "|" + cwd + "|";
  EXPECT_EQ(test::read_file(dir_ + "/rank0"), common + "0/3 0/1 0|10.231.0.1/24");
  EXPECT_EQ(test::read_file(dir_ + "/rank1"), common + "1/3 0/2 0,1|10.231.0.2/24");
  EXPECT_EQ(test::read_file(dir_ + "/rank2"), common + "2/3 1/2 0,1|10.231.0.2/24");
}

// Without an ssh config file: the key, port and known hosts come from the manifest's
// identity_file, ssh_port and ssh_args; DSHOST_* variables are forwarded by default.
TEST_F(SshLauncher, IncludeRunsOnlyTheNamedSlotsWithManifestSshOptions) {
  setenv("DSHOST_TEST_VALUE", "forwarded", 1);
  const std::string hostfile = test::write_file(
      dir_ + "/hostfile", std::string(kHostA) + " slots=2\n" + kHostB + " slots=4\n");
  const Launch l = launch_with(
      "ssh",
      "hostfile = \"" + hostfile + "\"\ninclude = \"" + kHostB + ":1,3\"\n" + "identity_file = \"" +
          dir_ + "/id_ed25519\"\nssh_port = 22\n" +
          "ssh_args = \"-o User=root -o IdentitiesOnly=yes -o UserKnownHostsFile=" + dir_ +
          "/known_hosts -o StrictHostKeyChecking=yes\"\n" + "dshost_path = \"" + DSHOST_BINARY +
          "\"\nmaster_port = 29734\n",
      {"/bin/sh", "-c", kReport, "sh", "x", dir_});
  unsetenv("DSHOST_TEST_VALUE");
  ASSERT_EQ(l.status, DSHOST_OK) << l.message;
  const std::string cwd = std::filesystem::current_path().string();
  EXPECT_EQ(test::read_file(dir_ + "/rank0"), "x|forwarded|" + cwd + "|0/2 0/2 1,3|10.231.0.2/24");
  EXPECT_EQ(test::read_file(dir_ + "/rank1"), "x|forwarded|" + cwd + "|1/2 1/2 1,3|10.231.0.2/24");
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/rank2"));
}

TEST_F(SshLauncher, AFailingRankOnOneHostStopsTheOtherHostNamingRankHostAndCode) {
  const auto start = std::chrono::steady_clock::now();
  const Launch l = launch_with(
      "ssh",
      ssh_section(dir_, std::string(kHostA) + " slots=1\n" + kHostB + " slots=1\n",
                  "grace_period_s = 2\n"),
      {"/bin/sh", "-c", "if [ \"$RANK\" = 1 ]; then sleep 0.5; exit 3; fi; exec sleep 27.1828"});
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(l.status, DSHOST_RANK_FAILED);
  EXPECT_EQ(l.exit_code, 3);
  EXPECT_EQ(l.message,
            "rank 1 on host 10.231.0.2 exited with code 3; stopped every rank on every node");
  EXPECT_LT(seconds, 10.0);
  EXPECT_TRUE(test::pids_matching("sleep 27.1828").empty()) << "a rank outlived the job";
  EXPECT_TRUE(test::pids_matching("dshost agent").empty()) << "an agent outlived the job";
}

TEST_F(SshLauncher, UnknownAndUnreachableHostsAreNamedBeforeAnyRankStarts) {
  const Launch unknown = launch_with(
      "ssh", ssh_section(dir_, std::string(kHostA) + " slots=1\nno-such-host.invalid slots=1\n"),
      {"/bin/sh", "-c", "touch " + dir_ + "/started"});
  EXPECT_EQ(unknown.status, DSHOST_IO_ERROR);
  EXPECT_NE(
      unknown.message.find("cannot reach host no-such-host.invalid over ssh (exited with code 255: "
                           "ssh: Could not resolve hostname no-such-host.invalid"),
      std::string::npos)
      << unknown.message;
  EXPECT_NE(
      unknown.message.find("check that `ssh no-such-host.invalid true` works without a password"),
      std::string::npos)
      << unknown.message;
  const Launch unreachable =
      launch_with("ssh", ssh_section(dir_, "10.231.0.77 slots=1\n", "connect_timeout_s = 2\n"),
                  {"/bin/sh", "-c", "touch " + dir_ + "/started"});
  EXPECT_EQ(unreachable.status, DSHOST_IO_ERROR);
  EXPECT_NE(
      unreachable.message.find("cannot reach host 10.231.0.77 over ssh (exited with code 255: "
                               "ssh: connect to host 10.231.0.77 port 22: "),
      std::string::npos)
      << unreachable.message;
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/started"));
}

// The ranks' rendezvous variables are the job's, whatever the env_file or the node's own
// environment holds.
TEST_F(SshLauncher, InheritedRendezvousVariablesAreReplacedOnEveryNode) {
  std::string env_text;
  for (const auto& [k, v] : InheritedRendezvous::kValues)
    env_text += std::string(k) + "=" + v + "\n";
  const std::string env_file = test::write_file(dir_ + "/env", env_text);
  const Launch l =
      launch_with("ssh",
                  ssh_section(dir_, std::string(kHostA) + " slots=1\n" + kHostB + " slots=1\n",
                              "env_file = \"" + env_file + "\"\n"),
                  {"/usr/bin/env"});
  ASSERT_EQ(l.status, DSHOST_OK) << l.message;
  const auto seen = rendezvous_seen(l.out);
  for (int r = 0; r < 2; ++r)
    EXPECT_EQ(seen.at(r), "LOCAL_RANK=0 LOCAL_WORLD_SIZE=1 MASTER_ADDR=" + std::string(kHostA) +
                              " MASTER_PORT=29733 RANK=" + std::to_string(r) + " WORLD_SIZE=2 ");
}

// A hostfile host must never reach ssh as an option: -oProxyCommand would run a command
// here during the reachability check, before any server is asked.
TEST(SshLauncherOptions, AHostThatLooksLikeAnOptionIsRefusedAndRunsNothing) {
  const std::string dir = test::scratch_dir("ssh_injection");
  const std::string host = "-oProxyCommand=touch${IFS}" + dir + "/pwned";
  const Launch l = launch_with("ssh", ssh_section(dir, host + " slots=1\n"), {"/bin/true"});
  EXPECT_EQ(l.status, DSHOST_INVALID_ARGUMENT);
  EXPECT_EQ(l.message, dir + "/hostfile:1: '" + host +
                           "' is not a host name or address (letters, digits, '.', '-', '_'; "
                           "not starting with '-')");
  EXPECT_FALSE(std::filesystem::exists(dir + "/pwned")) << "the host ran as an ssh option";
  const Launch addr =
      launch_with("ssh", ssh_section(dir, "a slots=1\n", "master_addr = \"-x\"\n"), {"/bin/true"});
  EXPECT_EQ(addr.status, DSHOST_INVALID_ARGUMENT);
  EXPECT_NE(addr.message.find("launcher.master_addr = '-x' is not a host name"), std::string::npos)
      << addr.message;
}

TEST(SlurmLauncherOptions, ValuesThatWouldAddSbatchOptionsAreRefused) {
  for (const std::string bad : {"debug --uid=0", "-p", "a\tb"}) {
    const Launch l = launch_with("slurm", "partition = \"" + bad + "\"\n", {"/bin/true"});
    EXPECT_EQ(l.status, DSHOST_INVALID_ARGUMENT) << bad;
    EXPECT_NE(l.message.find("must be one word with no blanks, line breaks or leading '-'"),
              std::string::npos)
        << l.message;
  }
}

TEST(SshLauncherOptions, HostfileAndEnvFileMistakesFailAtCreation) {
  const std::string dir = test::scratch_dir("ssh_options");
  const Launch bad_line =
      launch_with("ssh", ssh_section(dir, "a slots=1\nb slots 2\n"), {"/bin/true"});
  EXPECT_EQ(bad_line.status, DSHOST_INVALID_ARGUMENT);
  EXPECT_EQ(bad_line.message, dir + "/hostfile:2: 'b slots 2' is not 'HOST slots=N'");
  const Launch missing = launch_with("ssh", "hostfile = \"" + dir + "/none\"\n", {"/bin/true"});
  EXPECT_NE(missing.message.find("cannot read hostfile " + dir + "/none (launcher.hostfile)"),
            std::string::npos)
      << missing.message;
  const Launch env = launch_with(
      "ssh",
      ssh_section(dir, "a slots=1\n",
                  "env_file = \"" + test::write_file(dir + "/env", "A=1\nnot a pair\n") + "\"\n"),
      {"/bin/true"});
  EXPECT_EQ(env.message, dir + "/env:2: 'not a pair' is not KEY=VALUE");
}

}  // namespace
}  // namespace dshost
