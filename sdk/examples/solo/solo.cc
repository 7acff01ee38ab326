// solo: a launcher that runs one rank (world size 1) as a child process, its output
// prefixed "[rank 0] " like every launcher's, and reports how it ended. A starting point for
// launchers that hand ranks to another system. Launchers need no LibTorch.
#include <dshost/launcher.hpp>

#include <cstdio>
#include <cstdlib>

namespace {

class Solo : public dshost::Launcher {
 public:
  explicit Solo(const dshost::Services& s) : Launcher(s) {}

  Outcome launch(const std::vector<std::string>& argv,
                 const std::vector<std::string>& env) override {
    int pipe_fds[2];
    if (pipe(pipe_fds) != 0) throw dshost::Error("pipe failed", DSHOST_IO_ERROR);
    const dshost::ReservedPort reserved;  // rank 0's store listens on it
    const std::string port = std::to_string(reserved.port());
    const pid_t pid = fork();
    if (pid < 0) throw dshost::Error("fork failed", DSHOST_IO_ERROR);
    if (pid == 0) run_rank(argv, env, port, pipe_fds);
    close(pipe_fds[1]);
    relay_prefixed(pipe_fds[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    Outcome outcome;
    outcome.exit_code = dshost::exit_code_of(status);
    if (outcome.exit_code != 0)
      outcome.failure =
          "rank 0 on host " + dshost::hostname() + " " + dshost::describe_exit(status);
    return outcome;
  }

 private:
  // In the child: the rank's environment, its output into the pipe, then the program.
  [[noreturn]] static void run_rank(const std::vector<std::string>& argv,
                                    const std::vector<std::string>& env, const std::string& port,
                                    const int pipe_fds[2]) {
    dup2(pipe_fds[1], STDOUT_FILENO);
    dup2(pipe_fds[1], STDERR_FILENO);
    close(pipe_fds[0]);
    close(pipe_fds[1]);
    for (const char* kv :
         {"RANK=0", "LOCAL_RANK=0", "WORLD_SIZE=1", "LOCAL_WORLD_SIZE=1", "MASTER_ADDR=127.0.0.1"})
      putenv(const_cast<char*>(kv));
    setenv("MASTER_PORT", port.c_str(), 1);
    for (const auto& kv : env) putenv(strdup(kv.c_str()));
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execv(args[0], args.data());
    std::fprintf(stderr, "cannot run %s: %s\n", args[0], std::strerror(errno));
    _exit(127);
  }

  static void relay_prefixed(int fd) {
    FILE* in = fdopen(fd, "r");
    char* line = nullptr;
    size_t capacity = 0;
    while (getline(&line, &capacity, in) > 0) std::printf("[rank 0] %s", line);
    std::fflush(stdout);
    std::free(line);
    std::fclose(in);
  }
};

}  // namespace

DSHOST_LAUNCHER_PLUGIN(Solo, "solo", "1.0.0", "runs one rank as a child process", nullptr, 0)
