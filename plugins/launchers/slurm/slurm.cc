// slurm: runs a job's ranks as Slurm tasks.
//
// Inside an allocation (SLURM_JOB_ID set: an sbatch script, salloc) it starts the ranks with
// srun; outside one it writes an sbatch script from the manifest, submits it and prints the
// job id and log path (with wait = true, or `dshost run --wait`, it follows the log and
// returns the job's exit code). Both run one shell body:
//
//   MASTER_ADDR = the first host of the job's node list, MASTER_PORT = master_port, or one
//   derived from the job id; srun --kill-on-bad-exit --label, each task mapping
//   SLURM_PROCID / SLURM_LOCALID to RANK / LOCAL_RANK.
//
// srun's "N: " labels become "[rank N] " on the way out, as every launcher prints them, and
// srun's own "task N: Exited with exit code C" names the failed rank and the job's code.
#include <dshost/process.hpp>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace fs = std::filesystem;

namespace {

using dshost::Error;

const dshost_option kOptions[] = {
    DSHOST_OPTION_RANGE("nodes", DSHOST_OPTION_INT, "1", 1, 100000, "nodes (sbatch --nodes)"),
    DSHOST_OPTION_RANGE("ntasks_per_node", DSHOST_OPTION_INT, "1", 1, 4096,
                        "ranks per node, usually one per GPU"),
    DSHOST_OPTION_RANGE("gpus_per_node", DSHOST_OPTION_INT, "0", 0, 4096,
                        "GPUs per node (sbatch --gpus-per-node); 0: none asked for"),
    DSHOST_OPTION_RANGE("cpus_per_task", DSHOST_OPTION_INT, "0", 0, 4096,
                        "CPUs per rank (--cpus-per-task); 0: Slurm's default"),
    DSHOST_OPTION("partition", DSHOST_OPTION_STRING, "\"\"", nullptr, "sbatch --partition"),
    DSHOST_OPTION("time", DSHOST_OPTION_STRING, "\"\"", nullptr,
                  "time limit, sbatch --time (e.g. \"02:00:00\")"),
    DSHOST_OPTION("account", DSHOST_OPTION_STRING, "\"\"", nullptr, "sbatch --account"),
    DSHOST_OPTION("job_name", DSHOST_OPTION_STRING, "\"dshost\"", nullptr,
                  "sbatch --job-name; the script is JOB_NAME.sbatch next to the log"),
    DSHOST_OPTION("sbatch_lines", DSHOST_OPTION_STRING, "\"\"", nullptr,
                  "extra sbatch options, one per line (\"--qos=high\\n--exclusive\")"),
    DSHOST_OPTION("srun_args", DSHOST_OPTION_STRING, "\"\"", nullptr,
                  "extra srun arguments, split at spaces"),
    DSHOST_OPTION("output", DSHOST_OPTION_STRING, "\"dshost-%j.log\"", nullptr,
                  "the job's log (%j: job id), relative to the directory dshost runs in"),
    DSHOST_OPTION_RANGE("master_port", DSHOST_OPTION_INT, "0", 0, 65535,
                        "rendezvous port; 0: 20000 + job id % 40000"),
    DSHOST_OPTION("wait", DSHOST_OPTION_BOOL, "false", nullptr,
                  "after sbatch: follow the job's log and return its exit code"),
    DSHOST_OPTION_RANGE("grace_period_s", DSHOST_OPTION_FLOAT, "10", 0, 3600,
                        "after Ctrl-C, seconds before srun is killed"),
};

// The non-blank lines of `text`, without their leading blanks.
std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);)
    if (line.find_first_not_of(" \t") != std::string::npos)
      out.push_back(line.substr(line.find_first_not_of(" \t")));
  return out;
}

// "  3: text" (srun --label) -> "[rank 3] text"; other lines as they are.
std::string relabel(const std::string& line) {
  static const std::regex label(R"(^\s*(\d+): (.*)$)");
  std::smatch m;
  if (!std::regex_match(line, m, label)) return line;
  return "[rank " + m[1].str() + "] " + m[2].str();
}

// The failed task in srun's words ("srun: error: node1: task 1: Exited with exit code 3"), as
// "rank 1 on host node1 exited with code 3"; *code gets its exit code. srun lists tasks in the
// order it learnt of them, and a rank killed by a signal takes its peers down with errors of
// their own that srun may hear of first: a task that died on a signal (other than srun's own
// "Terminated") is the cause, else the first task listed.
bool failed_task(const std::vector<std::string>& lines, std::string* what, int* code) {
  static const std::regex task(R"(srun: error: (\S+): tasks? ([0-9,\-]+): (.*))");
  static const std::regex exit_code(R"(Exited with exit code (\d+))");
  std::smatch chosen;
  for (const auto& line : lines) {
    std::smatch m;
    if (!std::regex_search(line, m, task)) continue;
    const bool signalled = m[3].str().rfind("Exited", 0) != 0 && m[3].str() != "Terminated";
    if (chosen.empty() || signalled) chosen = m;
    if (signalled) break;
  }
  if (chosen.empty()) return false;
  std::smatch c;
  const std::string how = chosen[3].str();
  const bool several = chosen[2].str().find_first_of(",-") != std::string::npos;
  *what = (several ? "ranks " : "rank ") + chosen[2].str() + " on host " + chosen[1].str() + " ";
  if (std::regex_search(how, c, exit_code)) {
    *code = std::stoi(c[1].str());
    *what += "exited with code " + c[1].str();
  } else {
    *what += "ended: " + how;
  }
  return true;
}

struct Captured {
  int exit_code;
  std::vector<std::string> out, err;
};

// Runs argv to its end, keeping its output instead of showing it.
Captured capture(const std::vector<std::string>& argv) {
  dshost::Supervisor supervisor(std::chrono::seconds(1));
  supervisor.ignore_stop_signals();
  auto& child = supervisor.spawn(argv[0], argv, dshost::current_environment(), nullptr);
  for (auto* relay : {&child.out, &child.err}) {
    relay->sink = nullptr;
    relay->keep = true;
  }
  const auto outcome = supervisor.run([](const dshost::Child&) { return std::string(); });
  return {outcome.exit_code, child.out.lines, child.err.lines};
}

std::string last_of(const Captured& c) {
  for (const auto* lines : {&c.err, &c.out})
    if (!lines->empty()) return lines->back();
  return "(no output)";
}

void write_atomically(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << text;
    if (!out.flush()) throw Error("cannot write " + tmp, DSHOST_IO_ERROR);
  }
  fs::rename(tmp, path);
}

class SlurmLauncher : public dshost::Launcher {
 public:
  explicit SlurmLauncher(const dshost::Services& s)
      : Launcher(s),
        nodes_(s.get_int("nodes")),
        tasks_per_node_(s.get_int("ntasks_per_node")),
        master_port_(s.get_int("master_port")),
        wait_(s.get_bool("wait")),
        grace_(std::chrono::duration<double>(s.get_float("grace_period_s"))),
        srun_args_(dshost::split_words(s.get_string("srun_args"))),
        log_(fs::absolute(s.get_string("output")).string()) {
    // Each value is one word of an #SBATCH line: a blank would start another option there
    // and a leading '-' would read as one.
    const auto option = [&](const char* flag, const std::string& value) {
      if (value.empty() || value == "0") return;
      const bool blank = std::any_of(value.begin(), value.end(), [](char c) {
        return std::isspace(static_cast<unsigned char>(c)) ||
               std::iscntrl(static_cast<unsigned char>(c));
      });
      if (blank || value[0] == '-')
        throw Error(std::string("launcher: the value of sbatch ") + flag + ", '" + value +
                        "', must be one word with no blanks, line breaks or leading '-'; extra "
                        "options go in launcher.sbatch_lines",
                    DSHOST_INVALID_ARGUMENT);
      sbatch_lines_.push_back(std::string(flag) + "=" + value);
    };
    option("--job-name", s.get_string("job_name"));
    option("--nodes", std::to_string(nodes_));
    option("--ntasks-per-node", std::to_string(tasks_per_node_));
    option("--gpus-per-node", std::to_string(s.get_int("gpus_per_node")));
    option("--cpus-per-task", std::to_string(s.get_int("cpus_per_task")));
    option("--partition", s.get_string("partition"));
    option("--time", s.get_string("time"));
    option("--account", s.get_string("account"));
    option("--output", log_);
    for (const auto& line : lines_of(s.get_string("sbatch_lines"))) sbatch_lines_.push_back(line);
  }

  Outcome launch(const std::vector<std::string>& argv,
                 const std::vector<std::string>& env) override {
    if (std::getenv("SLURM_JOB_ID") != nullptr) return run_in_allocation(argv, env);
    return submit(argv, env);
  }

 private:
  // The shell lines both modes run: rendezvous variables, then srun.
  std::string body(const std::vector<std::string>& argv,
                   const std::vector<std::string>& env) const {
    const int64_t world = nodes_ * tasks_per_node_;
    std::string text = "cd " + dshost::shell_quote(fs::current_path().string()) + "\n";
    text +=
        "export MASTER_ADDR=\"$(scontrol show hostnames \"$SLURM_JOB_NODELIST\" | head -n 1)\"\n";
    text += "export MASTER_PORT=" +
            (master_port_ != 0 ? std::to_string(master_port_)
                               : std::string("$((20000 + SLURM_JOB_ID % 40000))")) +
            "\n";
    for (const auto& e : env) text += "export " + dshost::shell_quote(e) + "\n";
    std::vector<std::string> srun = {"srun",
                                     "--kill-on-bad-exit=1",
                                     "--label",
                                     "--nodes=" + std::to_string(nodes_),
                                     "--ntasks=" + std::to_string(world),
                                     "--ntasks-per-node=" + std::to_string(tasks_per_node_)};
    srun.insert(srun.end(), srun_args_.begin(), srun_args_.end());
    const std::string per_task =
        "export RANK=\"$SLURM_PROCID\" LOCAL_RANK=\"$SLURM_LOCALID\" WORLD_SIZE=" +
        std::to_string(world) + " LOCAL_WORLD_SIZE=" + std::to_string(tasks_per_node_) +
        "; exec \"$@\"";
    srun.insert(srun.end(), {"/bin/sh", "-c", per_task, "dshost-rank"});
    srun.insert(srun.end(), argv.begin(), argv.end());
    return text + "exec " + dshost::shell_command(srun) + "\n";
  }

  Outcome run_in_allocation(const std::vector<std::string>& argv,
                            const std::vector<std::string>& env) {
    dshost::Supervisor supervisor(grace_);
    auto& srun = supervisor.spawn("srun", {"/bin/sh", "-c", body(argv, env)},
                                  dshost::current_environment(), relabel);
    srun.err.keep = true;
    const auto outcome = supervisor.run([](const dshost::Child&) { return std::string(); });
    return explain(outcome.exit_code, outcome.failure, srun.err.lines);
  }

  // A failed job in the words of every launcher, with the failing rank's own exit code.
  static Outcome explain(int code, const std::string& interruption,
                         const std::vector<std::string>& lines) {
    if (code == 0) return {0, ""};
    if (!interruption.empty()) return {code, interruption};
    std::string what;
    if (failed_task(lines, &what, &code)) return {code, what + "; srun stopped the other ranks"};
    return {code, "srun exited with code " + std::to_string(code) + ": " +
                      (lines.empty() ? "(no output)" : lines.back())};
  }

  Outcome submit(const std::vector<std::string>& argv, const std::vector<std::string>& env) {
    std::string script = "#!/bin/sh\n# written by dshost's slurm launcher\n";
    for (const auto& line : sbatch_lines_) script += "#SBATCH " + line + "\n";
    script += body(argv, env);
    const std::string path =
        (fs::path(log_).parent_path() / (services().get_string("job_name") + ".sbatch")).string();
    write_atomically(path, script);
    const Captured sbatch =
        capture({dshost::find_program("sbatch", "slurm-client"), "--parsable", path});
    if (sbatch.exit_code != 0 || sbatch.out.empty())
      throw Error("sbatch rejected the job (script " + path + "): " + last_of(sbatch),
                  DSHOST_INVALID_ARGUMENT);
    const std::string id = sbatch.out[0].substr(0, sbatch.out[0].find(';'));
    const std::string log = std::regex_replace(log_, std::regex("%j"), id);
    std::cout << "submitted batch job " << id << " (script " << path << ")\n  log: " << log
              << "\n  watch: squeue -j " << id << "    stop: scancel " << id << std::endl;
    if (!wait_) return {0, ""};
    return follow(id, log);
  }

  // Relays the job's log until the job has ended and its processes are gone (squeue no
  // longer lists it); Ctrl-C cancels it. Returns its exit code.
  Outcome follow(const std::string& id, const std::string& log) {
    dshost::StopSignals signals;
    dshost::LineRelay relay{-1, stdout, relabel, {}, {}, true};
    std::string interruption, reason;
    for (std::string queued; !(queued = queue_field(id, "%T %r")).empty();) {  // "STATE REASON"
      relay_new_lines(log, relay);
      const std::string state = queued.substr(0, queued.find(' '));
      const std::string why = queued.substr(queued.find(' ') + 1);
      if (state == "PENDING" && why != reason && why != "None") {
        reason = why;
        std::cout << "job " << id << " is pending (" << reason << ")" << std::endl;
        if (held(reason)) return {1, held_message(id, reason)};
      }
      if (signals.received() != 0 && interruption.empty()) {
        interruption = std::string("interrupted by ") + strsignal(signals.received()) +
                       ": cancelled job " + id;
        capture({dshost::find_program("scancel", "slurm-client"), id});
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
    }
    relay_new_lines(log, relay);
    if (!relay.pending.empty()) relay.emit(relay.pending);
    if (!interruption.empty()) return {128 + signals.received(), interruption};
    const std::string exit = job_field(id, "ExitCode");  // "code:signal"
    const int code = exit.empty() ? 1 : std::stoi(exit.substr(0, exit.find(':')));
    const int signal = exit.empty() ? 0 : std::stoi(exit.substr(exit.find(':') + 1));
    return explain(signal != 0 ? 128 + signal : code, "", relay.lines);
  }

  // A held job (by its user, an administrator, or Slurm itself after its node failed to
  // launch it: "launch failed requeued held") never starts on its own. Following it would
  // wait forever, so the follower stops and leaves the job for the user to release or cancel.
  static bool held(const std::string& reason) {
    return std::regex_search(reason, std::regex("held", std::regex::icase));
  }
  static std::string held_message(const std::string& id, const std::string& reason) {
    return "job " + id + " is held (" + reason + ") and will not start until released; " +
           (reason.find("launch failed") != std::string::npos
                ? "its node could not start it (the node's slurmd log says why). "
                : "") +
           "Release it with `scontrol release " + id + "` or cancel it with `scancel " + id + "`";
  }

  // `squeue -h -j ID -o FORMAT`: "" once the job has left the queue (ended, nothing running).
  static std::string queue_field(const std::string& id, const std::string& format) {
    const Captured shown =
        capture({dshost::find_program("squeue", "slurm-client"), "-h", "-j", id, "-o", format});
    return shown.exit_code == 0 && !shown.out.empty() ? shown.out[0] : "";
  }

  // A field of `scontrol show job -o ID`, "" when the controller no longer knows the job.
  static std::string job_field(const std::string& id, const std::string& field) {
    const Captured shown =
        capture({dshost::find_program("scontrol", "slurm-client"), "show", "job", "-o", id});
    if (shown.exit_code != 0 || shown.out.empty()) return "";
    std::smatch m;
    const std::regex pattern("(^| )" + field + "=(\\S+)");
    return std::regex_search(shown.out[0], m, pattern) ? m[2].str() : "";
  }

  // Feeds what the log gained since the last call.
  void relay_new_lines(const std::string& log, dshost::LineRelay& relay) {
    std::ifstream in(log, std::ios::binary);
    if (!in) return;
    in.seekg(0, std::ios::end);
    const std::streamoff size = in.tellg();
    if (size < log_offset_) log_offset_ = 0;
    in.seekg(log_offset_);
    std::string chunk(static_cast<size_t>(size - log_offset_), '\0');
    in.read(chunk.data(), static_cast<std::streamsize>(chunk.size()));
    log_offset_ = size;
    relay.feed(chunk.data(), chunk.size());
  }

  const int64_t nodes_, tasks_per_node_, master_port_;
  const bool wait_;
  const std::chrono::duration<double> grace_;
  const std::vector<std::string> srun_args_;
  const std::string log_;
  std::vector<std::string> sbatch_lines_;
  std::streamoff log_offset_ = 0;
};

}  // namespace

DSHOST_LAUNCHER_PLUGIN(SlurmLauncher, "slurm", "1.0.0",
                       "runs ranks as Slurm tasks: srun inside an allocation, sbatch outside",
                       kOptions, sizeof(kOptions) / sizeof(kOptions[0]))
