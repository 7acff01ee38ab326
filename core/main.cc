// dshost: the command line. `run` validates a manifest and starts every rank through the
// launcher plugin; each rank is this same program as `dshost worker`.
#include <dshost/torch.hpp>

#include "core/error.h"
#include "core/job.h"
#include "core/scaffold.h"
#include "core/services.h"
#include "core/train.h"

#include <CLI/CLI.hpp>

#include <filesystem>
#include <iostream>

namespace fs = std::filesystem;
using namespace dshost;

namespace {

struct Args {
  std::string manifest;
  std::vector<std::string> sets;
};

void add_manifest_args(CLI::App* cmd, Args& args) {
  cmd->add_option("manifest", args.manifest, "TOML manifest (see configs/)")->required();
  cmd->add_option("--set", args.sets,
                  "override a manifest value: section.key=value (repeatable), e.g. "
                  "--set strategy.plugin=zero2");
}

int run(const Args& args) {
  const Job job = prepare_job(args.manifest, args.sets);
  check_data(job);
  PluginHost host(job.launcher.plugin.descriptor->name, job.launcher.options, RankInfo{}, nullptr);
  const auto* api = job.launcher.plugin.api<dshost_launcher_api>();
  dshost_error err{sizeof(dshost_error), {}};
  dshost_launcher* launcher = nullptr;
  if (api->create(host.table(), &launcher, &err) != DSHOST_OK)
    throw UserError(cat("launcher ", job.launcher.plugin.descriptor->name, ": ", err.message));
  std::vector<std::string> argv{fs::read_symlink("/proc/self/exe").string(), "worker",
                                fs::absolute(args.manifest).string()};
  for (const auto& s : args.sets) argv.insert(argv.end(), {"--set", s});
  std::vector<const char*> cargv;
  for (const auto& a : argv) cargv.push_back(a.c_str());
  cargv.push_back(nullptr);
  const char* no_env[] = {nullptr};
  const dshost_launch_request request{sizeof(dshost_launch_request), cargv.data(), no_env};
  int32_t exit_code = 0;
  const dshost_status status = api->launch(launcher, &request, &exit_code, &err);
  api->destroy(launcher);
  if (status == DSHOST_OK) return 0;
  std::cerr << "dshost: error: " << err.message << "\n";
  return status == DSHOST_RANK_FAILED ? exit_code : 1;
}

int check(const Args& args) {
  const Job job = prepare_job(args.manifest, args.sets);
  check_data(job);
  std::cout << args.manifest << ": OK: model " << job.model.plugin.descriptor->name
            << ", strategy " << job.strategy.plugin.descriptor->name << ", launcher "
            << job.launcher.plugin.descriptor->name << "\n";
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
  std::cout << kind_name(d->kind) << " " << d->name << " " << d->version << " (ABI "
            << d->abi_major << "." << d->abi_minor << ")  " << d->description << "\n    "
            << p.file << "\n";
  for (size_t k = 0; k < d->option_count; ++k) std::cout << option_text(d->options[k]) << "\n";
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
            << "  cmake -S " << dir << " -B " << dir << "/build -DCMAKE_PREFIX_PATH=<dshost prefix>\n"
            << "  cmake --build " << dir << "/build && ctest --test-dir " << dir << "/build\n";
  return 0;
}

void print_error(const std::string& message) {
  const bool located = message.find(": error: ") != std::string::npos;
  std::cerr << "dshost: " << (located ? "" : "error: ") << message << "\n";
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"dshost: distributed training of LibTorch models; everything that varies is a "
               "plugin wired by a TOML manifest"};
  app.require_subcommand(1);
  Args args;
  auto* run_cmd = app.add_subcommand("run", "validate the manifest and train on every rank");
  add_manifest_args(run_cmd, args);
  auto* check_cmd = app.add_subcommand("check", "validate a manifest, its plugins and its data");
  add_manifest_args(check_cmd, args);
  auto* plugins_cmd = app.add_subcommand("plugins", "list the plugins found and their options");
  std::string plugin_file;
  plugins_cmd->add_option("--check", plugin_file,
                          "load one plugin file and say whether it is usable, and why not");
  auto* new_cmd = app.add_subcommand("new-plugin", "write a ready-to-build plugin folder");
  std::string new_kind, new_name, new_dir = ".";
  new_cmd->add_option("--kind", new_kind, "model, strategy or launcher")->required();
  new_cmd->add_option("name", new_name, "the plugin's name, e.g. my_model")->required();
  new_cmd->add_option("--dir", new_dir, "folder to create it in (default: the current one)");
  auto* worker_cmd = app.add_subcommand("worker", "one rank (started by a launcher)");
  worker_cmd->group("");
  add_manifest_args(worker_cmd, args);

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
    if (*check_cmd) return check(args);
    if (*plugins_cmd) return plugin_file.empty() ? plugins() : check_plugin(plugin_file);
    if (*new_cmd) return new_plugin(new_kind, new_name, new_dir);
    return run_worker(prepare_job(args.manifest, args.sets));
  } catch (const UserError& e) {
    print_error(e.what());
    return e.exit_code();
  } catch (const std::exception& e) {
    print_error(cat("internal error: ", without_backtrace(e.what()), " (please report this)"));
    return 1;
  }
}
