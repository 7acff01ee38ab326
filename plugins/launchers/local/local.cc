// local: starts nprocs ranks on this machine.
//
// Each rank is a child process in its own process group (so a terminal's Ctrl-C reaches
// only this launcher, which then stops every rank in order) that dies with its parent
// (PR_SET_PDEATHSIG). Its stdout and stderr come back through pipes and are written line
// by line with a "[rank N] " prefix. The first rank to fail stops the others: SIGTERM to
// each group, SIGKILL after grace_period_s; the job's exit code is that rank's.
#include <dshost/launcher.hpp>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

extern char** environ;

namespace {

const dshost_option kOptions[] = {
    DSHOST_OPTION_RANGE("nprocs", DSHOST_OPTION_INT, "1", 1, 4096, "ranks to start"),
    DSHOST_OPTION("master_addr", DSHOST_OPTION_STRING, "\"127.0.0.1\"", nullptr,
                  "address of rank 0's rendezvous store"),
    DSHOST_OPTION_RANGE("master_port", DSHOST_OPTION_INT, "0", 0, 65535,
                        "rendezvous port; 0 picks a free one"),
    DSHOST_OPTION_RANGE("grace_period_s", DSHOST_OPTION_FLOAT, "5", 0, 3600,
                        "after a failure, seconds between SIGTERM and SIGKILL"),
};

volatile sig_atomic_t g_stop_signal = 0;
void on_stop_signal(int sig) { g_stop_signal = sig; }

// One output stream of one rank: bytes arrive in chunks, leave as prefixed lines.
struct Stream {
  int fd = -1;
  FILE* sink = nullptr;
  std::string prefix, pending;

  void feed(const char* data, size_t n) {
    pending.append(data, n);
    size_t start = 0;
    for (size_t nl; (nl = pending.find('\n', start)) != std::string::npos; start = nl + 1)
      emit(pending.substr(start, nl - start));
    pending.erase(0, start);
  }
  void flush_rest() {
    if (!pending.empty()) emit(pending);
    pending.clear();
  }
  void emit(const std::string& line) {
    std::string out = prefix + line + "\n";
    std::fwrite(out.data(), 1, out.size(), sink);
    std::fflush(sink);
  }
};

struct Rank {
  int index = 0;
  pid_t pid = -1;
  bool running = false;
  Stream out, err;
};

class LocalLauncher : public dshost::Launcher {
 public:
  explicit LocalLauncher(const dshost::Services& s)
      : Launcher(s),
        nprocs_(static_cast<int>(s.get_int("nprocs"))),
        master_addr_(s.get_string("master_addr")),
        master_port_(static_cast<int>(s.get_int("master_port"))),
        grace_(std::chrono::duration<double>(s.get_float("grace_period_s"))) {}

  Outcome launch(const std::vector<std::string>& argv,
                 const std::vector<std::string>& env) override {
    const int port = master_port_ != 0 ? master_port_ : dshost::free_port();
    SignalGuard guard;
    std::vector<Rank> ranks(nprocs_);
    for (int r = 0; r < nprocs_; ++r) start(ranks[r], r, port, argv, env);
    return supervise(ranks);
  }

 private:
  // Catches SIGINT/SIGTERM while ranks run; restores the old handlers after.
  struct SignalGuard {
    struct sigaction old_int {}, old_term {};
    SignalGuard() {
      g_stop_signal = 0;
      struct sigaction sa {};
      sa.sa_handler = on_stop_signal;
      sigemptyset(&sa.sa_mask);
      sigaction(SIGINT, &sa, &old_int);
      sigaction(SIGTERM, &sa, &old_term);
    }
    ~SignalGuard() {
      sigaction(SIGINT, &old_int, nullptr);
      sigaction(SIGTERM, &old_term, nullptr);
    }
  };

  void start(Rank& rank, int index, int port, const std::vector<std::string>& argv,
             const std::vector<std::string>& extra_env) {
    int out_pipe[2], err_pipe[2];
    if (pipe2(out_pipe, O_CLOEXEC) != 0 || pipe2(err_pipe, O_CLOEXEC) != 0)
      throw dshost::Error(std::string("pipe: ") + std::strerror(errno), DSHOST_IO_ERROR);

    std::vector<std::string> env;
    for (char** e = environ; *e != nullptr; ++e) env.emplace_back(*e);
    env.insert(env.end(), extra_env.begin(), extra_env.end());
    const auto set = [&](const char* key, const std::string& value) {
      env.push_back(std::string(key) + "=" + value);
    };
    set("RANK", std::to_string(index));
    set("LOCAL_RANK", std::to_string(index));
    set("WORLD_SIZE", std::to_string(nprocs_));
    set("LOCAL_WORLD_SIZE", std::to_string(nprocs_));
    set("GROUP_RANK", "0");
    set("MASTER_ADDR", master_addr_);
    set("MASTER_PORT", std::to_string(port));
    // Everything the child needs is prepared before fork: after it, only async-safe calls.
    std::vector<char*> cargv, cenv;
    for (const auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
    for (const auto& e : env) cenv.push_back(const_cast<char*>(e.c_str()));
    cargv.push_back(nullptr);
    cenv.push_back(nullptr);
    const pid_t parent = getpid();

    const pid_t pid = fork();
    if (pid < 0) throw dshost::Error(std::string("fork: ") + std::strerror(errno), DSHOST_IO_ERROR);
    if (pid == 0) {
      setpgid(0, 0);
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() != parent) _exit(1);
      dup2(out_pipe[1], STDOUT_FILENO);
      dup2(err_pipe[1], STDERR_FILENO);
      signal(SIGINT, SIG_DFL);
      signal(SIGTERM, SIG_DFL);
      execve(cargv[0], cargv.data(), cenv.data());
      const char msg[] = "local launcher: exec failed\n";
      (void)!write(STDERR_FILENO, msg, sizeof(msg) - 1);
      _exit(127);
    }
    setpgid(pid, pid);  // also from the parent, so signals can reach the group at once
    close(out_pipe[1]);
    close(err_pipe[1]);
    const std::string prefix = "[rank " + std::to_string(index) + "] ";
    rank.index = index;
    rank.pid = pid;
    rank.running = true;
    rank.out = Stream{out_pipe[0], stdout, prefix, {}};
    rank.err = Stream{err_pipe[0], stderr, prefix, {}};
  }

  // Relays output until every rank has ended; stops all at the first failure or signal.
  Outcome supervise(std::vector<Rank>& ranks) {
    Outcome outcome;
    bool stopping = false;
    auto kill_at = std::chrono::steady_clock::time_point::max();
    const auto stop_all = [&] {
      stopping = true;
      kill_at = std::chrono::steady_clock::now() +
                std::chrono::duration_cast<std::chrono::steady_clock::duration>(grace_);
      signal_all(ranks, SIGTERM);
    };

    while (any_running(ranks)) {
      relay_output(ranks, 100);
      if (g_stop_signal != 0 && !stopping) {
        outcome.exit_code = 128 + g_stop_signal;
        outcome.failure = std::string("interrupted by ") + strsignal(g_stop_signal) +
                          ": stopped every rank";
        stop_all();
      }
      if (stopping && std::chrono::steady_clock::now() >= kill_at) signal_all(ranks, SIGKILL);
      for (auto& r : ranks) {
        int status = 0;
        if (!r.running || waitpid(r.pid, &status, WNOHANG) != r.pid) continue;
        r.running = false;
        drain(r);
        if (status == 0 || outcome.exit_code != 0) continue;
        outcome.exit_code = dshost::exit_code_of(status);
        outcome.failure = "rank " + std::to_string(r.index) + " on host " + dshost::hostname() + " " +
                          dshost::describe_exit(status) + "; stopped the other ranks";
        stop_all();
      }
    }
    return outcome;
  }

  static bool any_running(const std::vector<Rank>& ranks) {
    for (const auto& r : ranks)
      if (r.running) return true;
    return false;
  }

  static void signal_all(std::vector<Rank>& ranks, int sig) {
    for (auto& r : ranks)
      if (r.running) kill(-r.pid, sig);
  }

  // Waits up to timeout_ms for output from any rank and relays what arrived.
  static void relay_output(std::vector<Rank>& ranks, int timeout_ms) {
    std::vector<pollfd> fds;
    std::vector<Stream*> streams;
    for (auto& r : ranks)
      for (Stream* s : {&r.out, &r.err})
        if (s->fd >= 0) {
          fds.push_back(pollfd{s->fd, POLLIN, 0});
          streams.push_back(s);
        }
    if (fds.empty()) {
      poll(nullptr, 0, timeout_ms);
      return;
    }
    if (poll(fds.data(), fds.size(), timeout_ms) <= 0) return;
    for (size_t i = 0; i < fds.size(); ++i)
      if (fds[i].revents != 0) read_once(*streams[i]);
  }

  static void read_once(Stream& s) {
    char buf[65536];
    const ssize_t n = read(s.fd, buf, sizeof(buf));
    if (n > 0) return s.feed(buf, static_cast<size_t>(n));
    if (n < 0 && errno == EINTR) return;
    s.flush_rest();
    close(s.fd);
    s.fd = -1;
  }

  // After a rank ended: relay what is still in its pipes.
  static void drain(Rank& r) {
    for (Stream* s : {&r.out, &r.err}) {
      if (s->fd >= 0) fcntl(s->fd, F_SETFL, O_NONBLOCK);
      while (s->fd >= 0) {
        char buf[65536];
        const ssize_t n = read(s->fd, buf, sizeof(buf));
        if (n > 0) {
          s->feed(buf, static_cast<size_t>(n));
          continue;
        }
        if (n < 0 && errno == EINTR) continue;
        s->flush_rest();
        close(s->fd);
        s->fd = -1;
      }
    }
  }

  const int nprocs_;
  const std::string master_addr_;
  const int master_port_;
  const std::chrono::duration<double> grace_;
};

}  // namespace

DSHOST_LAUNCHER_PLUGIN(LocalLauncher, "local", "1.0.0",
                       "starts ranks on this machine; rank-prefixed output, fail-fast",
                       kOptions, sizeof(kOptions) / sizeof(kOptions[0]))
