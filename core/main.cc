// dshost: the command line. `run` validates a manifest and starts every rank through the
// launcher plugin; each rank is this same program as `dshost worker`. `eval` starts the ranks
// the same way to evaluate a checkpoint.
#include <dshost/process.hpp>
#include <dshost/torch.hpp>

#include "core/checkpoint.h"
#include "core/error.h"
#include "core/job.h"
#include "core/launch.h"
#include "core/pack.h"
#include "core/run_lock.h"
#include "core/scaffold.h"
#include "core/services.h"
#include "core/train.h"

#include <CLI/CLI.hpp>

#include <chrono>
#include <filesystem>
#include <iostream>

namespace fs = std::filesystem;
using namespace dshost;

namespace {

struct Args {
  std::string manifest;
  std::vector<std::string> sets;
  bool wait = false;       // run --wait: a batch launcher follows the job it submits
  std::string checkpoint;  // eval --checkpoint
  bool evaluate = false;   // eval, and its workers
};

void add_manifest_args(CLI::App* cmd, Args& args) {
  cmd->add_option("manifest", args.manifest, "TOML manifest (see configs/)")->required();
  cmd->add_option("--set", args.sets,
                  "override a manifest value: section.key=value (repeatable), e.g. "
                  "--set strategy.plugin=zero2");
}

bool has_option(const LoadedPlugin& plugin, const std::string& key) {
  for (const dshost_option& o : plugin.options)
    if (o.name == key) return true;
  return false;
}

// A plugin found first on [plugins] paths or DSHOST_PLUGIN_PATH replaces a bundled one of
// the same kind and name: allowed (that is how a plugin is overridden), but never silently.
void warn_about_hidden_plugins(const Job& job) {
  for (const LoadedSection* s : {&job.model, &job.strategy, &job.launcher, &job.dataset})
    for (const auto& hidden : s->plugin.hidden)
      std::cerr << "dshost: warning: " << kind_name(s->plugin.descriptor->kind) << " plugin '"
                << s->plugin.descriptor->name << "' is loaded from " << s->plugin.file
                << ", which comes first in the search path and hides " << hidden << "\n";
}

// A launcher that waits for its ranks and reports success must have started them: rank 0
// writes this launch's id into run_dir/.lock first thing. A batch launcher that only
// submitted the job (slurm without wait) is not checked. The run directory is on a file
// system every node shares, as checkpoint.dir is.
void check_rank0_started(const Job& job, const std::string& launch_id) {
  const auto& launcher = job.launcher;
  if (has_option(launcher.plugin, "wait") && !launcher.options.get_bool("wait")) return;
  const std::string run_dir = job.config.run.dir();
  if (rank0_started(run_dir, launch_id)) return;
  throw UserError(cat("launcher '", launcher.plugin.descriptor->name, "' (", launcher.plugin.file,
                      ") reported success, but no rank 0 of this launch ran: ", run_dir,
                      "/.lock does not hold its launch id. The launcher started no ranks, or "
                      "they ran where this machine cannot see run.output_dir (it must be shared, "
                      "as checkpoint.dir is)"),
                  1);
}

// run --wait: the launcher's own `wait` key set, for this process and the ranks' --set.
void wait_for_batch_job(Job& job, Args& args) {
  if (!has_option(job.launcher.plugin, "wait"))
    throw UserError(cat("--wait: launcher '", job.launcher.plugin.descriptor->name,
                        "' always waits for its ranks; --wait is for launchers that submit a "
                        "batch job (slurm)"));
  Value& wait = job.launcher.options.values.at("wait");
  wait.b = true;
  wait.origin = "--wait";
  args.sets.push_back("launcher.wait=true");
}

// A --set value for a string key: `text` as a TOML basic string.
std::string toml_string(const std::string& text) {
  std::string quoted = "\"";
  for (char c : text) quoted += c == '"' || c == '\\' ? cat('\\', c) : std::string(1, c);
  return quoted + "\"";
}

// dshost eval: the checkpoint --checkpoint names, else the newest in checkpoint.dir.
std::string checkpoint_to_evaluate(const Job& job, const std::string& named) {
  const std::string& dir = job.config.checkpoint.dir;
  std::string note;
  const std::string path =
      named.empty() ? latest_checkpoint(dir, &note) : checkpoint_at(named, &note);
  if (!note.empty()) std::cerr << "dshost: warning: " << note << "\n";
  if (path.empty())
    throw UserError(cat("no checkpoint in ", dir,
                        " (checkpoint.dir) to evaluate; train with "
                        "checkpoint.every_steps or checkpoint.at_epoch_end set, or name one "
                        "with --checkpoint DIR"));
  if (!fs::exists(fs::path(path) / "index.json"))
    throw UserError(cat("--checkpoint ", named,
                        ": no checkpoint there (no index.json, no "
                        "`latest`); name a step-N directory or the directory that holds them"));
  return fs::absolute(path).string();
}

// Starts every rank through the launcher: to train, or (args.evaluate) to evaluate. After a
// rank fails, launcher.max_restarts starts them all again, each resuming from the latest
// checkpoint (checkpoint.resume = "auto").
int run(Args args) {
  Job job = prepare_job(args.manifest, args.sets);
  check_device(job);
  if (args.wait) wait_for_batch_job(job, args);
  if (args.evaluate)
    args.sets.push_back("checkpoint.resume=" +
                        toml_string(checkpoint_to_evaluate(job, args.checkpoint)));
  warn_about_hidden_plugins(job);
  check_data(job);
  std::vector<std::string> argv{this_executable(), "worker", fs::absolute(args.manifest).string()};
  if (args.evaluate) argv.push_back("--eval");
  for (const auto& s : args.sets) argv.insert(argv.end(), {"--set", s});
  const int64_t restarts = args.evaluate ? 0 : job.config.launcher.max_restarts;
  for (int64_t restart = 1;; ++restart) {
    const LaunchResult r = launch_ranks(job, argv);
    if (r.status == DSHOST_OK) {
      check_rank0_started(job, r.launch_id);
      return 0;
    }
    std::cerr << "dshost: error: " << r.message << "\n";
    if (restart > restarts || !worth_restarting(r)) return exit_code_of(r);
    std::cerr << "dshost: restart " << restart << " of " << restarts
              << " (launcher.max_restarts): starting every rank again from the latest "
                 "checkpoint\n";
  }
}

int check(const Args& args) {
  const Job job = prepare_job(args.manifest, args.sets);
  warn_about_hidden_plugins(job);
  check_data(job);
  std::cout << args.manifest << ": OK: model " << job.model.plugin.descriptor->name << ", strategy "
            << job.strategy.plugin.descriptor->name << ", launcher "
            << job.launcher.plugin.descriptor->name << ", dataset "
            << job.dataset.plugin.descriptor->name << "\n";
  return 0;
}

std::string option_text(const dshost_option& o) {
  std::string text = cat("      ", o.name, " = ", o.default_value);
  if (o.allowed) text += cat("  (", o.allowed, ")");
  if (o.has_range) text += cat("  [", o.min, ", ", o.max, "]");
  return text + cat("  ", o.help);
}

void print_plugin(const LoadedPlugin& p) {
  const dshost_plugin_descriptor* d = p.descriptor;
  std::cout << kind_name(d->kind) << " " << d->name << " " << d->version << " (ABI " << d->abi_major
            << "." << d->abi_minor << ")  " << d->description << "\n    " << p.file << "\n";
  for (const dshost_option& o : p.options) std::cout << option_text(o) << "\n";
}

int plugins() {
  const PluginCatalog catalog("");
  const auto files = catalog.files();
  if (files.empty()) std::cout << "no plugins found in " << join(catalog.dirs()) << "\n";
  for (const auto& f : files) {
    try {
      print_plugin(load_plugin_file(f.file));
    } catch (const UserError& e) {
      std::cout << kind_name(f.kind) << " " << f.name << "  unusable: " << e.what() << "\n";
    }
  }
  return 0;
}

// `plugins --check FILE`: every check the loader makes on one file, and the verdict.
int check_plugin(const std::string& file) {
  try {
    const LoadedPlugin p = load_plugin_file(fs::absolute(file).string());
    std::cout << file << ": usable " << kind_name(p.descriptor->kind) << " plugin '"
              << p.descriptor->name << "'\n";
    print_plugin(p);
    return 0;
  } catch (const UserError& e) {
    std::cout << file << ": not a usable plugin: " << e.what() << "\n";
    return 2;
  }
}

int new_plugin(const std::string& kind, const std::string& name, const std::string& parent) {
  const std::string dir = write_scaffold(kind, name, parent);
  std::cout << "wrote " << dir << "/ (CMakeLists.txt, " << name << ".cc, a load test)\n"
            << "build it against an installed dshost:\n"
            << "  cmake -S " << dir << " -B " << dir
            << "/build -DCMAKE_PREFIX_PATH=<dshost prefix>\n"
            << "  cmake --build " << dir << "/build && ctest --test-dir " << dir << "/build\n";
  return 0;
}

// `dshost agent`: this node's ranks of a multi-node job, started by a launcher on another
// machine (the ssh launcher runs it over ssh). Ends when its ranks end; the first rank to
// fail stops the others and prints "dshost: error: rank R on host H <how it ended>" last.
struct AgentArgs {
  LocalRanks ranks;
  double grace_s = 5;
  bool stop_on_stdin_eof = false;
  std::vector<std::string> command;
};

void add_agent_args(CLI::App* cmd, AgentArgs& a) {
  cmd->add_option("--first-rank", a.ranks.first_rank, "global rank of this node's first rank")
      ->required();
  cmd->add_option("--nprocs", a.ranks.count, "ranks on this node")->required();
  cmd->add_option("--world-size", a.ranks.world_size, "ranks in the job")->required();
  cmd->add_option("--master-addr", a.ranks.master_addr, "rank 0's rendezvous address")->required();
  cmd->add_option("--master-port", a.ranks.master_port, "rank 0's rendezvous port")->required();
  cmd->add_option("--host", a.ranks.host, "this node's name in messages (default: hostname)");
  cmd->add_option("--grace-period-s", a.grace_s, "seconds between SIGTERM and SIGKILL");
  cmd->add_flag("--stop-on-stdin-eof", a.stop_on_stdin_eof,
                "stop every rank when stdin closes (the launcher's connection went away)");
  cmd->add_option("command", a.command, "what each rank runs, after --")->required();
}

int agent(AgentArgs a) {
  if (a.ranks.host.empty()) a.ranks.host = hostname();
  if (a.command[0].find('/') == std::string::npos)
    throw UserError(cat("agent: the rank command '", a.command[0], "' must be a path"));
  Supervisor supervisor(std::chrono::duration<double>(a.grace_s));
  start_ranks(supervisor, a.ranks, a.command, {});
  if (a.stop_on_stdin_eof) supervisor.stop_on_eof(STDIN_FILENO);
  const auto outcome =
      supervisor.run([&](const Child& rank) { return describe_rank_exit(rank, a.ranks.host); });
  if (outcome.exit_code != 0) std::cerr << "dshost: error: " << outcome.failure << std::endl;
  return outcome.exit_code;
}

// `dshost export`: the newest checkpoint when given the directory that holds `latest`.
int export_weights(const std::string& from, const std::string& to, const std::string& dtype) {
  const std::string dir = checkpoint_at(from);
  export_checkpoint(dir, to, dtype == "bf16" ? at::kBFloat16 : at::kFloat);
  std::cout << "exported the model weights of " << dir << " to " << to << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "dshost: distributed training of LibTorch models; everything that varies is a "
      "plugin wired by a TOML manifest"};
  app.require_subcommand(1);
  Args args;
  auto* run_cmd = app.add_subcommand("run", "validate the manifest and train on every rank");
  add_manifest_args(run_cmd, args);
  run_cmd->add_flag("--wait", args.wait,
                    "with a batch launcher (slurm): follow the submitted job to its end");
  auto* eval_cmd = app.add_subcommand(
      "eval", "evaluate a checkpoint (of any strategy and world size) on the test split");
  add_manifest_args(eval_cmd, args);
  eval_cmd->add_option("--checkpoint", args.checkpoint,
                       "a checkpoint directory (step-N), or the directory with its `latest` "
                       "(default: the newest in checkpoint.dir)");
  auto* check_cmd = app.add_subcommand("check", "validate a manifest, its plugins and its data");
  add_manifest_args(check_cmd, args);
  auto* plugins_cmd = app.add_subcommand("plugins", "list the plugins found and their options");
  std::string plugin_file;
  plugins_cmd->add_option("--check", plugin_file,
                          "load one plugin file and say whether it is usable, and why not");
  auto* new_cmd = app.add_subcommand("new-plugin", "write a ready-to-build plugin folder");
  std::string new_kind, new_name, new_dir = ".";
  new_cmd->add_option("--kind", new_kind, "model, strategy, launcher or dataset")->required();
  new_cmd->add_option("name", new_name, "the plugin's name, e.g. my_model")->required();
  new_cmd->add_option("--dir", new_dir, "folder to create it in (default: the current one)");
  auto* export_cmd = app.add_subcommand(
      "export",
      "write a checkpoint's model weights to one safetensors file (torchvision's names "
      "where the model mirrors a torchvision one)");
  std::string export_from, export_to, export_dtype = "fp32";
  export_cmd
      ->add_option("checkpoint", export_from,
                   "a checkpoint directory (step-N), or the directory with its `latest`")
      ->required();
  export_cmd->add_option("out", export_to, "the .safetensors file to write")->required();
  export_cmd->add_option("--dtype", export_dtype, "dtype of floating-point tensors")
      ->check(CLI::IsMember({"fp32", "bf16"}));
  auto* pack_cmd = app.add_subcommand("pack",
                                      "write an image folder (train/ and val/) as WebDataset tar "
                                      "shards, for data.dataset = \"webdataset\"");
  std::string pack_folder, pack_prefix;
  int64_t pack_per_shard = 10000;
  pack_cmd->add_option("folder", pack_folder, "the image folder")->required();
  pack_cmd->add_option("out_prefix", pack_prefix, "shards go to OUT_PREFIX-train-000000.tar, ...")
      ->required();
  pack_cmd->add_option("--samples-per-shard", pack_per_shard, "samples in each shard")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 40));
  int64_t pack_max_side = 0;
  pack_cmd
      ->add_option("--max-side", pack_max_side,
                   "store larger images resized to this longest side, as JPEG of quality 90 (0: as "
                   "they are)")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 20));
  auto* worker_cmd = app.add_subcommand("worker", "one rank (started by a launcher)");
  worker_cmd->group("");
  add_manifest_args(worker_cmd, args);
  worker_cmd->add_flag("--eval", args.evaluate, "evaluate checkpoint.resume's checkpoint");
  auto* agent_cmd = app.add_subcommand(
      "agent", "start this node's ranks of a multi-node job (run by the ssh launcher)");
  AgentArgs agent_args;
  add_agent_args(agent_cmd, agent_args);

  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return 2;
  }
  try {
    if (*run_cmd) return run(args);
    if (*eval_cmd) {
      args.evaluate = true;
      return run(args);
    }
    if (*check_cmd) return check(args);
    if (*plugins_cmd) return plugin_file.empty() ? plugins() : check_plugin(plugin_file);
    if (*new_cmd) return new_plugin(new_kind, new_name, new_dir);
    if (*agent_cmd) return agent(agent_args);
    if (*export_cmd) return export_weights(export_from, export_to, export_dtype);
    if (*pack_cmd) {
      std::cout << pack_image_folder(pack_folder, pack_prefix, pack_per_shard, pack_max_side);
      return 0;
    }
    return run_worker(prepare_job(args.manifest, args.sets), args.evaluate);
  } catch (const std::exception& e) {
    return report_error(e);
  }
}
