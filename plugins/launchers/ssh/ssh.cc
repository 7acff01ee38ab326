// ssh: starts a job's ranks on the hosts of a DeepSpeed-style hostfile.
//
// One ssh connection per node runs `dshost agent` there, which starts that node's ranks
// (RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT; its slots as
// CUDA_VISIBLE_DEVICES) and relays their "[rank N] " lines back. The agent watches its
// stdin: when the launcher closes it, or the connection dies with the launcher, it stops its
// ranks. So the first failure anywhere stops every rank on every node, and Ctrl-C too.
//
// Decisions (as DeepSpeed's pdsh runner): every node sees the same paths (the dshost binary,
// the manifest, the working directory, which the remote command enters) and runs a POSIX
// login shell. Every word of the remote command is single-quoted, so manifest values and
// environment values arrive intact and are never run. The environment forwarded is explicit:
// forward_env's names and NAME* prefixes, then env_file's KEY=VALUE lines.
#include "hostfile.hpp"

#include <dshost/process.hpp>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

namespace {

using dshost::Error;
using dshost::ssh::Node;

const dshost_option kOptions[] = {
    DSHOST_OPTION("hostfile", DSHOST_OPTION_STRING, "\"/job/hostfile\"", nullptr,
                  "lines of 'HOST slots=N' (DeepSpeed's format)"),
    DSHOST_OPTION("include", DSHOST_OPTION_STRING, "\"\"", nullptr,
                  "only these hosts / slots, e.g. \"host1@host2:0,2\""),
    DSHOST_OPTION("exclude", DSHOST_OPTION_STRING, "\"\"", nullptr,
                  "all but these hosts / slots (same syntax as include)"),
    DSHOST_OPTION_RANGE("num_nodes", DSHOST_OPTION_INT, "0", 0, 100000,
                        "use the first N selected hosts; 0: all"),
    DSHOST_OPTION_RANGE("min_nodes", DSHOST_OPTION_INT, "0", 0, 100000,
                        "start (and restart: max_restarts) without hosts that do not answer ssh "
                        "while at least this many do, keeping the global batch by accumulating "
                        "more; 0: every host must answer"),
    DSHOST_OPTION("master_addr", DSHOST_OPTION_STRING, "\"\"", nullptr,
                  "rank 0's rendezvous address; \"\": the first host"),
    DSHOST_OPTION_RANGE("master_port", DSHOST_OPTION_INT, "29500", 1, 65535, "rendezvous port"),
    DSHOST_OPTION_RANGE("ssh_port", DSHOST_OPTION_INT, "0", 0, 65535,
                        "sshd's port; 0: ssh's own default"),
    DSHOST_OPTION("identity_file", DSHOST_OPTION_STRING, "\"\"", nullptr,
                  "private key for ssh -i; \"\": ssh's own default"),
    DSHOST_OPTION("ssh_args", DSHOST_OPTION_STRING, "\"\"", nullptr,
                  "extra ssh arguments, split at spaces, e.g. \"-F ssh_config\""),
    // The BLAS libraries' variables too: OPENBLAS_CORETYPE picks OpenBLAS's kernels, so a rank
    // without it rounds differently from a local one.
    DSHOST_OPTION("forward_env", DSHOST_OPTION_STRING,
                  "\"NCCL_* DSHOST_* GLOO_* OMP_* OPENBLAS_* MKL_* CUDA_VISIBLE_DEVICES "
                  "LD_LIBRARY_PATH\"",
                  nullptr, "variables sent to every node: names, or prefixes ending in *"),
    DSHOST_OPTION("env_file", DSHOST_OPTION_STRING, "\"\"", nullptr,
                  "file of KEY=VALUE lines added to every rank's environment"),
    DSHOST_OPTION("dshost_path", DSHOST_OPTION_STRING, "\"\"", nullptr,
                  "the dshost binary on every node; \"\": the one running this launcher"),
    DSHOST_OPTION_RANGE("connect_timeout_s", DSHOST_OPTION_INT, "10", 1, 3600,
                        "seconds to wait for each host's ssh connection"),
    DSHOST_OPTION_RANGE("grace_period_s", DSHOST_OPTION_FLOAT, "5", 0, 3600,
                        "after a failure, seconds between SIGTERM and SIGKILL"),
};

bool is_name(const std::string& key) {
  return std::regex_match(key, std::regex("[A-Za-z_][A-Za-z0-9_]*"));
}

// KEY=VALUE lines; '#' starts a comment line. VALUE is taken as written, quotes included.
std::vector<std::string> read_env_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw Error("cannot read launcher.env_file " + path, DSHOST_INVALID_ARGUMENT);
  std::vector<std::string> env;
  std::string line;
  for (int line_no = 1; std::getline(in, line); ++line_no) {
    if (dshost::ssh::trim(line).empty() || dshost::ssh::trim(line)[0] == '#') continue;
    const size_t eq = line.find('=');
    if (eq == std::string::npos || !is_name(line.substr(0, eq)))
      throw Error(path + ":" + std::to_string(line_no) + ": '" + line + "' is not KEY=VALUE",
                  DSHOST_INVALID_ARGUMENT);
    env.push_back(line);
  }
  return env;
}

// This process's variables that forward_env names (NAME, or PREFIX*).
std::vector<std::string> forwarded_environment(const std::string& rules) {
  std::vector<std::string> env;
  const auto words = dshost::split_words(rules);
  for (const auto& entry : dshost::current_environment()) {
    const std::string key = entry.substr(0, entry.find('='));
    for (const auto& rule : words) {
      const bool prefix = !rule.empty() && rule.back() == '*';
      if (prefix ? key.rfind(rule.substr(0, rule.size() - 1), 0) == 0 : key == rule) {
        env.push_back(entry);
        break;
      }
    }
  }
  return env;
}

std::string last_line(const dshost::Child& c) {
  for (const auto* lines : {&c.err.lines, &c.out.lines})
    for (auto it = lines->rbegin(); it != lines->rend(); ++it)
      if (!dshost::ssh::trim(*it).empty()) return dshost::ssh::trim(*it);
  return "(no output)";
}

class SshLauncher : public dshost::Launcher {
 public:
  explicit SshLauncher(const dshost::Services& s)
      : Launcher(s),
        hostfile_(s.get_string("hostfile")),
        nodes_(dshost::ssh::select_nodes(dshost::ssh::read_hostfile(hostfile_),
                                         s.get_string("include"), s.get_string("exclude"),
                                         static_cast<int>(s.get_int("num_nodes")), hostfile_)),
        master_addr_(s.get_string("master_addr")),
        master_port_(static_cast<int>(s.get_int("master_port"))),
        env_(forwarded_environment(s.get_string("forward_env"))),
        dshost_(s.get_string("dshost_path").empty() ? dshost::this_executable()
                                                    : s.get_string("dshost_path")),
        grace_s_(s.get_float("grace_period_s")),
        connect_timeout_s_(s.get_int("connect_timeout_s")),
        min_nodes_(static_cast<size_t>(s.get_int("min_nodes"))) {
    if (!master_addr_.empty() && !dshost::ssh::is_host_name(master_addr_))
      throw Error("launcher.master_addr = '" + master_addr_ + "' is not a host name or address",
                  DSHOST_INVALID_ARGUMENT);
    ssh_ = {dshost::find_program("ssh", "openssh-client"), "-o", "BatchMode=yes", "-o",
            "ConnectTimeout=" + std::to_string(connect_timeout_s_)};
    if (s.get_int("ssh_port") != 0)
      ssh_.insert(ssh_.end(), {"-p", std::to_string(s.get_int("ssh_port"))});
    if (!s.get_string("identity_file").empty())
      ssh_.insert(ssh_.end(), {"-i", s.get_string("identity_file")});
    for (const auto& w : dshost::split_words(s.get_string("ssh_args"))) ssh_.push_back(w);
    if (!s.get_string("env_file").empty())
      for (const auto& e : read_env_file(s.get_string("env_file"))) env_.push_back(e);
  }

  Outcome launch(const std::vector<std::string>& argv,
                 const std::vector<std::string>& env) override {
    const std::vector<Node> nodes = answering_nodes();
    std::vector<std::string> rank_env = env_;
    rank_env.insert(rank_env.end(), env.begin(), env.end());
    const std::string cwd = std::filesystem::current_path().string();
    const int world = ranks_of(nodes), full_world = ranks_of(nodes_);
    if (world < full_world)
      rank_env.push_back("DSHOST_FULL_WORLD_SIZE=" + std::to_string(full_world));
    // The first host that answers is the master, unless launcher.master_addr names one.
    const std::string master = master_addr_.empty() ? nodes[0].host : master_addr_;
    // The ssh connections outlive their agents' own grace period, so agents can report.
    dshost::Supervisor supervisor(std::chrono::duration<double>(grace_s_ + 5));
    int first_rank = 0;
    for (const auto& node : nodes) {
      auto cmd = ssh_;
      cmd.insert(cmd.end(), {"--", node.host,
                             "cd " + dshost::shell_quote(cwd) + " && exec " +
                                 dshost::shell_command(agent_command(node, first_rank, world,
                                                                     master, argv, rank_env))});
      const std::string tag = "[" + node.host + "] ";
      auto& child = supervisor.spawn(
          "node " + node.host, cmd, dshost::current_environment(),
          [tag](const std::string& line) {
            return line.rfind("[rank ", 0) == 0 ? line : tag + line;
          },
          true);
      child.err.keep = true;
      child.stop = [](dshost::Child& c) {  // the agent stops its ranks when its stdin closes
        if (c.stdin_fd >= 0) close(c.stdin_fd);
        c.stdin_fd = -1;
      };
      first_rank += static_cast<int>(node.slots.size());
    }
    const auto outcome = supervisor.run([](const dshost::Child& node) { return describe(node); });
    return {outcome.exit_code, outcome.failure};
  }

 private:
  // `env K=V... dshost agent ...`: this node's share of the job.
  std::vector<std::string> agent_command(const Node& node, int first_rank, int world,
                                         const std::string& master,
                                         const std::vector<std::string>& argv,
                                         const std::vector<std::string>& rank_env) const {
    std::string devices;
    for (int s : node.slots) devices += (devices.empty() ? "" : ",") + std::to_string(s);
    std::vector<std::string> cmd = {"env"};
    cmd.insert(cmd.end(), rank_env.begin(), rank_env.end());
    cmd.push_back("CUDA_VISIBLE_DEVICES=" + devices);
    cmd.insert(cmd.end(), {dshost_, "agent", "--first-rank", std::to_string(first_rank), "--nprocs",
                           std::to_string(node.slots.size()), "--world-size", std::to_string(world),
                           "--master-addr", master, "--master-port", std::to_string(master_port_),
                           "--host", node.host, "--grace-period-s", std::to_string(grace_s_),
                           "--stop-on-stdin-eof", "--"});
    cmd.insert(cmd.end(), argv.begin(), argv.end());
    return cmd;
  }

  // The agent's last line names the rank ("dshost: error: rank 3 on host h exited with
  // code 1"); anything else means ssh itself failed.
  static std::string describe(const dshost::Child& node) {
    const std::string line = last_line(node);
    const std::string agent_error = "dshost: error: ";
    if (line.rfind(agent_error, 0) == 0)
      return line.substr(agent_error.size()) + "; stopped every rank on every node";
    return node.name + ": ssh " + dshost::describe_exit(node.status) + ": " + line +
           "; stopped every rank on every node";
  }

  static int ranks_of(const std::vector<Node>& nodes) {
    int ranks = 0;
    for (const auto& n : nodes) ranks += static_cast<int>(n.slots.size());
    return ranks;
  }

  // The nodes that answer `ssh HOST true`, asked all at once before any rank starts. Every
  // node must answer, unless launcher.min_nodes lets the job go on without those that do not.
  std::vector<Node> answering_nodes() const {
    dshost::Supervisor probes(std::chrono::seconds(1));
    probes.let_each_run_to_its_end();
    std::vector<const dshost::Child*> asked;
    for (const auto& node : nodes_) {
      auto cmd = ssh_;
      cmd.insert(cmd.end(), {"--", node.host, "true"});
      auto& probe = probes.spawn(node.host, cmd, dshost::current_environment(), nullptr);
      probe.out.sink = probe.err.sink = nullptr;
      probe.err.keep = true;
      asked.push_back(&probe);
    }
    const auto interrupted = probes.run([](const dshost::Child&) { return ""; });
    if (interrupted.exit_code != 0) throw Error(interrupted.failure, DSHOST_IO_ERROR);
    std::vector<Node> answering;
    std::string silent, first_silent;
    for (size_t i = 0; i < nodes_.size(); ++i) {
      if (asked[i]->status == 0) {
        answering.push_back(nodes_[i]);
        continue;
      }
      if (first_silent.empty()) first_silent = nodes_[i].host;
      silent += (silent.empty() ? "host " : ", host ") + nodes_[i].host + " over ssh (" +
                dshost::describe_exit(asked[i]->status) + ": " + last_line(*asked[i]) + ")";
    }
    if (silent.empty()) return answering;
    const std::string counts =
        std::to_string(answering.size()) + " of " + std::to_string(nodes_.size()) + " hosts";
    if (min_nodes_ == 0 || answering.size() < min_nodes_)
      throw Error("cannot reach " + silent + "; check that `ssh " + first_silent +
                      " true` works without a password, and the hostfile " + hostfile_ +
                      (min_nodes_ == 0 ? std::string()
                                       : "; launcher.min_nodes = " + std::to_string(min_nodes_) +
                                             " and " + counts + " answer"),
                  DSHOST_IO_ERROR);
    services().warn("launcher.min_nodes = " + std::to_string(min_nodes_) + ": cannot reach " +
                    silent + "; going on with " + counts + " (" +
                    std::to_string(ranks_of(answering)) + " of " +
                    std::to_string(ranks_of(nodes_)) + " ranks) at the same global batch");
    return answering;
  }

  const std::string hostfile_;
  const std::vector<Node> nodes_;
  const std::string master_addr_;
  const int master_port_;
  std::vector<std::string> env_;
  const std::string dshost_;
  const double grace_s_;
  const int64_t connect_timeout_s_;
  const size_t min_nodes_;
  std::vector<std::string> ssh_;
};

}  // namespace

DSHOST_LAUNCHER_PLUGIN(SshLauncher, "ssh", "1.0.0",
                       "starts ranks on the hosts of a hostfile over ssh; fail-fast on every node",
                       kOptions, sizeof(kOptions) / sizeof(kOptions[0]))
