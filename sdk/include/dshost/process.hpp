// Child processes for launchers: start them, relay their output line by line, stop them all
// when one fails or when this process is interrupted. The local launcher, the ssh launcher,
// the slurm launcher and `dshost agent` are all built on it. Needs no LibTorch.
#pragma once

#include <dshost/launcher.hpp>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstdio>
#include <functional>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

extern char** environ;

namespace dshost {

// `text` as one word of a POSIX shell command: 'text', with each ' written as '\''.
// Spaces, quotes, ;, $(), backticks and newlines arrive as they are and run nothing.
inline std::string shell_quote(const std::string& text) {
  std::string out = "'";
  for (char c : text) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

inline std::string shell_command(const std::vector<std::string>& words) {
  std::string out;
  for (const auto& w : words) out += (out.empty() ? "" : " ") + shell_quote(w);
  return out;
}

// The first `name` on PATH, as an absolute path; the error names the package to install.
inline std::string find_program(const std::string& name, const std::string& package) {
  const char* path = std::getenv("PATH");
  std::string dirs = path != nullptr ? path : "/usr/bin:/bin";
  for (size_t start = 0, end; start <= dirs.size(); start = end + 1) {
    end = std::min(dirs.find(':', start), dirs.size());
    const std::string candidate = dirs.substr(start, end - start) + "/" + name;
    if (end > start && access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  throw Error(name + " is not on PATH; install " + package, DSHOST_INVALID_ARGUMENT);
}

// `text` split at spaces and tabs: extra command-line arguments given in a manifest string.
inline std::vector<std::string> split_words(const std::string& text) {
  std::vector<std::string> words;
  std::istringstream in(text);
  for (std::string w; in >> w;) words.push_back(w);
  return words;
}

// This process's environment as KEY=VALUE strings.
inline std::vector<std::string> current_environment() {
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) env.emplace_back(*e);
  return env;
}

// One output stream of a child: bytes arrive in chunks and leave as whole lines, each
// passed through `format` (which adds a prefix, say) on the way to `sink`.
// A child's status line (a progress bar): a line that starts with '\r'. On a terminal it is
// drawn in place, below the ordinary lines, which scroll above it; elsewhere it is dropped
// (the child prints plain progress lines too). Children are asked for status lines only when
// the launcher's stderr is a terminal (kStatusLinesVariable).
constexpr const char* kStatusLinesVariable = "DSHOST_STATUS_LINES";

class StatusLine {
 public:
  // What a terminal must get to show `text` (a status line when `status`) on `sink`.
  static std::string render(FILE* sink, const std::string& text, bool status) {
    static std::string shown;  // the status line on stderr, the one terminal there is
    if (!isatty(fileno(sink))) return status ? "" : text + "\n";
    const std::string clear =
        shown.empty() ? "" : "\r\033[2K";  // back to the line's start, erase it
    if (status) {
      shown = text;
      return clear + text;
    }
    return clear + text + "\n" + shown;
  }
};

struct LineRelay {
  int fd = -1;
  FILE* sink = nullptr;  // nullptr: kept (if asked) but not shown
  std::function<std::string(const std::string&)> format;
  std::string pending;
  std::vector<std::string> lines;  // every line seen, unformatted, when `keep` is set
  bool keep = false;
  std::string last;  // the last non-status line seen, unformatted

  void feed(const char* data, size_t n) {
    pending.append(data, n);
    size_t start = 0;
    for (size_t nl; (nl = pending.find('\n', start)) != std::string::npos; start = nl + 1)
      emit(pending.substr(start, nl - start));
    pending.erase(0, start);
  }
  // Reads what is there; at end of stream emits the unfinished line and closes.
  void read_some() {
    char buf[65536];
    const ssize_t n = read(fd, buf, sizeof(buf));
    if (n > 0) return feed(buf, static_cast<size_t>(n));
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) return;
    if (!pending.empty()) emit(pending);
    pending.clear();
    close(fd);
    fd = -1;
  }
  void emit(const std::string& line) {
    const bool status = !line.empty() && line[0] == '\r';
    if (!status && !line.empty()) last = line;
    if (keep && !status) lines.push_back(line);
    if (sink == nullptr) return;
    const std::string text = status ? line.substr(1) : line;
    const bool clearing = status && text.empty();  // an empty status line removes the bar
    const std::string out =
        StatusLine::render(sink, format && !clearing ? format(text) : text, status);
    std::fwrite(out.data(), 1, out.size(), sink);
    std::fflush(sink);
  }
};

struct Child {
  std::string name;  // "rank 3", "node host2": for messages
  pid_t pid = -1;
  bool running = false;
  int status = 0;     // waitpid status once ended
  int stdin_fd = -1;  // write end of the child's stdin, when asked for
  LineRelay out, err;
  // How to ask this child to stop; the default sends SIGTERM to its process group.
  std::function<void(Child&)> stop;
};

// While alive, SIGINT and SIGTERM are caught (received() says which came) instead of ending
// this process, and SIGPIPE is ignored; the previous handlers come back after. Nested
// instances share the outermost one's catch, so a signal is never lost between them.
class StopSignals {
 public:
  StopSignals() {
    if (depth()++ > 0) return;
    flag() = 0;
    struct sigaction sa {};
    sa.sa_handler = [](int sig) { flag() = sig; };
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int_);
    sigaction(SIGTERM, &sa, &old_term_);
    struct sigaction ignore {};
    ignore.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &ignore, &old_pipe_);
  }
  ~StopSignals() {
    if (--depth() > 0) return;
    sigaction(SIGINT, &old_int_, nullptr);
    sigaction(SIGTERM, &old_term_, nullptr);
    sigaction(SIGPIPE, &old_pipe_, nullptr);
  }
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;
  int received() const { return flag(); }

 private:
  static volatile sig_atomic_t& flag() {
    static volatile sig_atomic_t sig = 0;
    return sig;
  }
  static int& depth() {
    static int n = 0;
    return n;
  }
  struct sigaction old_int_ {
  }, old_term_{}, old_pipe_{};
};

// Starts children and supervises them until all have ended (see run()).
class Supervisor {
 public:
  using Format = std::function<std::string(const std::string&)>;

  explicit Supervisor(std::chrono::duration<double> grace) : grace_(grace) {}
  Supervisor(const Supervisor&) = delete;
  Supervisor& operator=(const Supervisor&) = delete;
  // Nothing outlives the supervisor, even when an exception cut run() short.
  ~Supervisor() {
    for (auto& c : children_)
      if (c->running) {
        kill(-c->pid, SIGKILL);
        waitpid(c->pid, nullptr, 0);
      }
  }

  // Starts argv (argv[0] a path) with exactly `env`, in its own process group (a terminal's
  // Ctrl-C reaches only this process, which then stops every child in order), dying with
  // this process (PR_SET_PDEATHSIG). With `pipe_stdin` the child's stdin is a pipe whose
  // write end is Child::stdin_fd; otherwise /dev/null.
  Child& spawn(std::string name, const std::vector<std::string>& argv,
               const std::vector<std::string>& env, Format format, bool pipe_stdin = false) {
    int out[2], err[2], in[2] = {-1, -1};
    if (pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0 ||
        (pipe_stdin && pipe2(in, O_CLOEXEC) != 0))
      throw Error(std::string("pipe: ") + std::strerror(errno), DSHOST_IO_ERROR);
    // Everything the child needs is prepared before fork: after it, only async-safe calls.
    std::vector<char*> cargv, cenv;
    for (const auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
    for (const auto& e : env) cenv.push_back(const_cast<char*>(e.c_str()));
    cargv.push_back(nullptr);
    cenv.push_back(nullptr);
    const pid_t parent = getpid();
    const pid_t pid = fork();
    if (pid < 0) throw Error(std::string("fork: ") + std::strerror(errno), DSHOST_IO_ERROR);
    if (pid == 0) {
      setpgid(0, 0);
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() != parent) _exit(1);
      const int null_fd = pipe_stdin ? -1 : open("/dev/null", O_RDONLY);
      dup2(pipe_stdin ? in[0] : null_fd, STDIN_FILENO);
      dup2(out[1], STDOUT_FILENO);
      dup2(err[1], STDERR_FILENO);
      signal(SIGINT, SIG_DFL);
      signal(SIGTERM, SIG_DFL);
      signal(SIGPIPE, SIG_DFL);
      execve(cargv[0], cargv.data(), cenv.data());
      const char msg[] = "dshost: exec failed\n";
      (void)!write(STDERR_FILENO, msg, sizeof(msg) - 1);
      _exit(127);
    }
    setpgid(pid, pid);  // also from the parent, so signals reach the group at once
    close(out[1]);
    close(err[1]);
    if (pipe_stdin) close(in[0]);
    auto child = std::make_unique<Child>();
    child->name = std::move(name);
    child->pid = pid;
    child->running = true;
    child->stdin_fd = in[1];
    child->out = LineRelay{out[0], stdout, format, {}, {}, false};
    child->err = LineRelay{err[0], stderr, format, {}, {}, false};
    children_.push_back(std::move(child));
    return *children_.back();
  }

  // For short helper commands: SIGINT/SIGTERM do not stop them (the caller sees the signal
  // through its own StopSignals once they are done).
  void ignore_stop_signals() { obey_signals_ = false; }

  // Children that fail do not stop the others (probes whose every answer counts): run() then
  // stops early only for a signal or the stop_on_eof descriptor, and each Child's status
  // tells how it ended.
  void let_each_run_to_its_end() { fail_fast_ = false; }

  // A file descriptor whose end (EOF) stops every child, as Ctrl-C does: `dshost agent`
  // watches its stdin, which closes when the launcher's ssh connection goes.
  void stop_on_eof(int fd) { eof_fd_ = fd; }

  struct Outcome {
    int exit_code = 0;    // 0, or the failing child's code (128 + signal for signals)
    std::string failure;  // what failed, from describe(child), or the interruption
  };

  // Relays output until every child has ended. A child ending unsuccessfully (the cause of
  // the failures seen within kCauseWindow of the first), a SIGINT/SIGTERM to this process,
  // or the stop_on_eof descriptor's end stops the others: each child's `stop` first,
  // SIGKILL to every group after the grace period.
  Outcome run(const std::function<std::string(const Child&)>& describe) {
    StopSignals guard;
    Outcome outcome;
    auto kill_at = std::chrono::steady_clock::time_point::max();
    const auto stop_all = [&](int code, std::string why) {
      if (kill_at != std::chrono::steady_clock::time_point::max()) return;
      outcome.exit_code = code;
      outcome.failure = std::move(why);
      kill_at = std::chrono::steady_clock::now() +
                std::chrono::duration_cast<std::chrono::steady_clock::duration>(grace_);
      for (auto& c : children_)
        if (c->running) c->stop ? c->stop(*c) : stop_group(c->pid);
    };
    std::vector<const Child*> failed;  // before any stop, in the order they ended
    auto decide_at = std::chrono::steady_clock::time_point::max();
    while (any_running()) {
      if (relay_output(100))
        stop_all(128 + SIGTERM, "the launcher's connection closed: stopped every rank");
      if (const int sig = guard.received(); sig != 0 && obey_signals_)
        stop_all(128 + sig,
                 std::string("interrupted by ") + strsignal(sig) + ": stopped every rank");
      const auto now = std::chrono::steady_clock::now();
      if (now >= kill_at)
        for (auto& c : children_)
          if (c->running) kill(-c->pid, SIGKILL);
      for (auto& c : children_) {
        if (!reap(*c) || c->status == 0 || !fail_fast_ ||
            kill_at != std::chrono::steady_clock::time_point::max())
          continue;
        failed.push_back(c.get());
        // A rank stopped by another has already looked for the silent ranks (a few hundred
        // ms): its cause, if it ends at all, has had time to end.
        const bool stopped_by_another = exit_code_of(c->status) == kStoppedByAnotherRank;
        decide_at =
            std::min(decide_at, now + (stopped_by_another ? kCauseWindow / 2 : kCauseWindow));
      }
      if (!failed.empty() && (now >= decide_at || !any_running())) {
        const Child& cause = root_cause(failed);
        stop_all(exit_code_of(cause.status), describe(cause));
      }
    }
    return outcome;
  }

 private:
  // How long after the first failure other failures still count as candidates for its cause.
  static constexpr std::chrono::milliseconds kCauseWindow{1000};

  // SIGTERM, then SIGCONT: a stopped process (SIGSTOP, a debugger) acts on neither signal
  // until it continues, and would otherwise wait for the SIGKILL after the grace period.
  static void stop_group(pid_t pid) {
    kill(-pid, SIGTERM);
    kill(-pid, SIGCONT);
  }

  // Of children that failed close together, the first killed by a signal (or reporting a
  // killed rank: 128 + N) is the cause: a killed rank's peers fail their next collective at
  // once ("connection reset") and may end first. Then the first that failed for a reason of
  // its own, not with kStoppedByAnotherRank; otherwise the first to end.
  static const Child& root_cause(const std::vector<const Child*>& failed) {
    for (const Child* c : failed)
      if (exit_code_of(c->status) > 128) return *c;
    for (const Child* c : failed)
      if (exit_code_of(c->status) != kStoppedByAnotherRank) return *c;
    return *failed.front();
  }

  bool any_running() const {
    for (const auto& c : children_)
      if (c->running) return true;
    return false;
  }

  // Collects an ended child: its last output, its status. True when it ended just now.
  static bool reap(Child& c) {
    if (!c.running || waitpid(c.pid, &c.status, WNOHANG) != c.pid) return false;
    c.running = false;
    if (c.stdin_fd >= 0) close(c.stdin_fd);
    c.stdin_fd = -1;
    for (LineRelay* r : {&c.out, &c.err}) {
      if (r->fd >= 0) fcntl(r->fd, F_SETFL, O_NONBLOCK);
      while (r->fd >= 0) r->read_some();
    }
    return true;
  }

  // Waits up to timeout_ms for output and relays it. True when the EOF descriptor ended.
  bool relay_output(int timeout_ms) {
    std::vector<pollfd> fds;
    std::vector<LineRelay*> relays;
    for (auto& c : children_)
      for (LineRelay* r : {&c->out, &c->err})
        if (r->fd >= 0) {
          fds.push_back(pollfd{r->fd, POLLIN, 0});
          relays.push_back(r);
        }
    if (eof_fd_ >= 0) fds.push_back(pollfd{eof_fd_, POLLIN, 0});
    if (poll(fds.data(), fds.size(), timeout_ms) <= 0) return false;
    for (size_t i = 0; i < relays.size(); ++i)
      if (fds[i].revents != 0) relays[i]->read_some();
    if (eof_fd_ < 0 || fds.back().revents == 0) return false;
    char buf[256];
    if (read(eof_fd_, buf, sizeof(buf)) > 0) return false;
    eof_fd_ = -1;
    return true;
  }

  std::chrono::duration<double> grace_;
  std::vector<std::unique_ptr<Child>> children_;
  int eof_fd_ = -1;
  bool obey_signals_ = true;
  bool fail_fast_ = true;
};

// Ranks first_rank .. first_rank + count - 1 of a job of world_size ranks, on one machine.
struct LocalRanks {
  int first_rank = 0, count = 1, world_size = 1;
  std::string master_addr;
  int master_port = 0;
  std::string host;  // how messages name this machine
};

// torchrun's rendezvous variables, which a launcher sets for each rank it starts.
inline const std::vector<std::string>& rendezvous_variables() {
  static const std::vector<std::string> names{
      "RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"};
  return names;
}

// `env` without the rendezvous variables. A job started inside a torchrun job, a Slurm step
// or a Kubeflow pod inherits theirs, and getenv returns the first of two equal names.
inline std::vector<std::string> without_rendezvous(std::vector<std::string> env) {
  const auto& names = rendezvous_variables();
  env.erase(std::remove_if(env.begin(), env.end(),
                           [&](const std::string& e) {
                             const std::string key = e.substr(0, e.find('='));
                             return std::find(names.begin(), names.end(), key) != names.end();
                           }),
            env.end());
  return env;
}

// Starts the ranks of `layout` as children of `supervisor`: this process's environment plus
// `extra_env`, less any inherited rendezvous variables, plus this job's, output prefixed
// "[rank N] ".
inline void start_ranks(Supervisor& supervisor, const LocalRanks& layout,
                        const std::vector<std::string>& argv,
                        const std::vector<std::string>& extra_env) {
  for (int i = 0; i < layout.count; ++i) {
    const int rank = layout.first_rank + i;
    std::vector<std::string> env = current_environment();
    env.insert(env.end(), extra_env.begin(), extra_env.end());
    env = without_rendezvous(std::move(env));
    for (const auto& [key, value] : std::vector<std::pair<std::string, std::string>>{
             {"RANK", std::to_string(rank)},
             {"LOCAL_RANK", std::to_string(i)},
             {"WORLD_SIZE", std::to_string(layout.world_size)},
             {"LOCAL_WORLD_SIZE", std::to_string(layout.count)},
             {"MASTER_ADDR", layout.master_addr},
             {"MASTER_PORT", std::to_string(layout.master_port)}})
      env.push_back(key + "=" + value);
    if (isatty(STDERR_FILENO)) env.push_back(std::string(kStatusLinesVariable) + "=1");
    const std::string prefix = "[rank " + std::to_string(rank) + "] ";
    supervisor.spawn("rank " + std::to_string(rank), argv, env,
                     [prefix](const std::string& line) { return prefix + line; });
  }
}

// "rank 3 on host h exited with code 1": a failed rank in the words of every launcher. A
// rank that stopped because of another is described by its last error line, which names
// that other rank.
inline std::string describe_rank_exit(const Child& rank, const std::string& host) {
  const std::string error = "dshost: error: ";
  const std::string& last = rank.err.last;
  if (exit_code_of(rank.status) == kStoppedByAnotherRank && last.rfind(error, 0) == 0)
    return last.substr(error.size()) + " (reported by " + rank.name + " on host " + host + ")";
  return rank.name + " on host " + host + " " + describe_exit(rank.status);
}

}  // namespace dshost
