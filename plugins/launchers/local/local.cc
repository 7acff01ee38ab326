// local: starts nprocs ranks on this machine.
//
// Each rank is a child process in its own process group that dies with its parent; its
// output is relayed line by line with a "[rank N] " prefix. The first rank to fail stops
// the others (SIGTERM to each group, SIGKILL after grace_period_s); the job's exit code is
// that rank's. See dshost/process.hpp, which the other launchers share.
#include <dshost/process.hpp>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

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
    const std::string host = dshost::hostname();
    std::optional<dshost::ReservedPort> picked;
    if (master_port_ == 0) picked.emplace();
    const int port = picked ? picked->port() : master_port_;
    dshost::Supervisor supervisor(grace_);
    dshost::start_ranks(supervisor, {0, nprocs_, nprocs_, master_addr_, port, host}, argv, env);
    const auto outcome = supervisor.run([&](const dshost::Child& rank) {
      return dshost::describe_rank_exit(rank, host) + "; stopped the other ranks";
    });
    return {outcome.exit_code, outcome.failure};
  }

 private:
  const int nprocs_;
  const std::string master_addr_;
  const int master_port_;
  const std::chrono::duration<double> grace_;
};

}  // namespace

DSHOST_LAUNCHER_PLUGIN(LocalLauncher, "local", "1.0.0",
                       "starts ranks on this machine; rank-prefixed output, fail-fast", kOptions,
                       sizeof(kOptions) / sizeof(kOptions[0]))
