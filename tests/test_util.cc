#include "tests/test_util.h"

#include "core/dataset.h"
#include "core/safetensors.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

extern char** environ;
namespace fs = std::filesystem;

namespace dshost::test {

Ran run(const std::vector<std::string>& argv) {
  const auto start = std::chrono::steady_clock::now();
  int out[2], err[2];
  if (pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0) return {};  // not inherited
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out[1], 1);
  posix_spawn_file_actions_adddup2(&actions, err[1], 2);
  posix_spawn_file_actions_addclose(&actions, out[0]);
  posix_spawn_file_actions_addclose(&actions, err[0]);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  close(out[1]);
  close(err[1]);
  Ran ran;
  if (rc != 0) return ran;
  pollfd fds[2] = {{out[0], POLLIN, 0}, {err[0], POLLIN, 0}};
  std::string* sinks[2] = {&ran.out, &ran.err};
  for (int open = 2; open > 0;) {
    poll(fds, 2, -1);
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || fds[i].revents == 0) continue;
      char buf[4096];
      const ssize_t n = read(fds[i].fd, buf, sizeof(buf));
      if (n > 0) {
        sinks[i]->append(buf, static_cast<size_t>(n));
      } else {
        close(fds[i].fd);
        fds[i].fd = -1;
        --open;
      }
    }
  }
  int status = 0;
  waitpid(pid, &status, 0);
  ran.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  ran.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return ran;
}

Ran dshost(const std::vector<std::string>& args) {
  std::vector<std::string> argv{DSHOST_BINARY};
  argv.insert(argv.end(), args.begin(), args.end());
  return run(argv);
}

void expect_no_crash(const std::string& err) {
  for (const char* crash : {"terminate called", "Aborted", "core dumped", "Exception raised from"})
    EXPECT_EQ(err.find(crash), std::string::npos) << err;
}

std::unique_ptr<DatasetPlugin> open_dataset(const std::string& name, std::vector<std::string> sets,
                                            const std::vector<int64_t>& wanted) {
  sets.insert(sets.begin(),
              {"data.dataset=\"" + name + "\"", "plugins.paths=\"" DSHOST_BUILD_PLUGIN_DIR "\""});
  return std::make_unique<DatasetPlugin>(prepare_job(quickstart_manifest(), sets), RankInfo{},
                                         wanted);
}

std::string fashion_mnist_dir() {
  const char* dir = std::getenv("DSHOST_TEST_FASHION_MNIST");
  return dir != nullptr ? dir : "/usr/share/datasets/fashion-mnist";
}

std::string fortunes_dir() {
  const char* dir = std::getenv("DSHOST_TEST_FORTUNES");
  return dir != nullptr ? dir : "/usr/share/games/fortunes";
}

std::string python() {
  const char* python = std::getenv("DSHOST_TEST_PYTHON");
  return python != nullptr ? python : "/usr/bin/python3";
}

std::string scratch_dir(const std::string& name) {
  const fs::path dir = fs::path(DSHOST_TEST_SCRATCH) / name;
  remove_tree(dir.string());
  fs::create_directories(dir);
  return dir.string();
}

std::string write_file(const std::string& path, const std::string& text) {
  std::ofstream(path) << text;
  return path;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::vector<double> metric(const std::string& run_dir, const std::string& key) {
  std::vector<double> out;
  std::ifstream in(run_dir + "/metrics.jsonl");
  for (std::string line; std::getline(in, line);)
    out.push_back(nlohmann::json::parse(line).at(key).get<double>());
  return out;
}

std::vector<double> losses(const std::string& run_dir) { return metric(run_dir, "loss"); }

std::string quickstart_manifest() {
  return std::string(DSHOST_SOURCE_DIR) + "/configs/quickstart.toml";
}

std::vector<double> train_quickstart(const std::string& name, std::vector<std::string> sets,
                                     std::string* summary_json, std::string* log) {
  const std::string dir = scratch_dir("training_" + name);
  std::vector<std::string> args{"run",   quickstart_manifest(),
                                "--set", "run.output_dir=\"" + dir + "\"",
                                "--set", "train.log_every=1000"};
  for (const auto& s : sets) args.insert(args.end(), {"--set", s});
  const Ran r = dshost(args);
  if (r.exit_code != 0) ADD_FAILURE() << name << " failed: " << r.err;
  if (summary_json != nullptr)
    *summary_json = read_file(quickstart_run_dir(name) + "/summary.json");
  if (log != nullptr) *log = r.err;
  return losses(quickstart_run_dir(name));
}

std::vector<std::string> with(std::vector<std::string> args, const std::vector<std::string>& more) {
  args.insert(args.end(), more.begin(), more.end());
  return args;
}

std::string quickstart_run_dir(const std::string& name) {
  return (fs::path(DSHOST_TEST_SCRATCH) / ("training_" + name) / "quickstart").string();
}

double max_abs_difference(const std::vector<double>& a, const std::vector<double>& b) {
  if (a.size() != b.size())
    ADD_FAILURE() << "trajectories of " << a.size() << " and " << b.size() << " steps";
  double worst = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i)
    worst = std::max(worst, std::fabs(a[i] - b[i]));
  return worst;
}

int line_count(const std::string& text) {
  int n = 0;
  for (char c : text) n += c == '\n';
  return n + (!text.empty() && text.back() != '\n');
}

Job start_job(const std::vector<std::string>& argv, const std::string& dir,
              const std::string& ready) {
  Job job{-1, dir};
  const std::string log = dir + "/log";
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  posix_spawn(&job.pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  for (int i = 0; i < 600 && read_file(log).find(ready) == std::string::npos; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  return job;
}

int wait_for(const Job& job, double limit_s, double* seconds) {
  const auto start = std::chrono::steady_clock::now();
  for (;;) {
    int status = 0;
    if (waitpid(job.pid, &status, WNOHANG) == job.pid) {
      *seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    if (std::chrono::steady_clock::now() - start > std::chrono::duration<double>(limit_s)) {
      kill(job.pid, SIGKILL);
      waitpid(job.pid, &status, 0);
      return -1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

namespace {
bool has_env(int pid, const std::string& entry) {
  const std::string env = '\0' + read_file("/proc/" + std::to_string(pid) + "/environ");
  return env.find('\0' + entry) != std::string::npos;
}
}  // namespace

int pid_of_rank(const std::vector<int>& pids, int rank) {
  for (int pid : pids)
    if (has_env(pid, "RANK=" + std::to_string(rank) + '\0')) return pid;
  return -1;
}

std::vector<int> ranks_matching(const std::string& needle) {
  std::vector<int> ranks;
  for (int pid : pids_matching(needle))
    if (has_env(pid, "RANK=")) ranks.push_back(pid);
  return ranks;
}

std::vector<int> pids_matching(const std::string& needle) {
  std::vector<int> out;
  for (const auto& entry : fs::directory_iterator("/proc")) {
    const std::string name = entry.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::string cmdline = read_file(entry.path().string() + "/cmdline");
    for (auto& c : cmdline)
      if (c == '\0') c = ' ';
    if (cmdline.find(needle) != std::string::npos && std::stoi(name) != getpid())
      out.push_back(std::stoi(name));
  }
  return out;
}

Listener::Listener() : fd(socket(AF_INET, SOCK_STREAM, 0)) {
  sockaddr_in address{};
  address.sin_family = AF_INET;
  socklen_t size = sizeof(address);
  if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 ||
      listen(fd, 4) != 0 || getsockname(fd, reinterpret_cast<sockaddr*>(&address), &size) != 0)
    ADD_FAILURE() << "cannot listen on a free port: " << std::strerror(errno);
  else
    port = ntohs(address.sin_port);
}

Listener::~Listener() {
  if (fd >= 0) close(fd);
}

}  // namespace dshost::test
