#include "core/plugin_loader.h"

#include "core/abi_adapters.h"

#include "core/error.h"
#include "core/manifest.h"

#define BOOST_DLL_USE_STD_FS 1
#include <boost/dll/library_info.hpp>
#include <boost/dll/shared_library.hpp>
#include <dlfcn.h>
#include <torch/version.h>

#include <algorithm>
#include <cstddef>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>

namespace fs = std::filesystem;

namespace dshost {
namespace {

constexpr int kHostCxx11Abi = _GLIBCXX_USE_CXX11_ABI;

std::vector<std::string> split_paths(const std::string& paths) {
  std::vector<std::string> out;
  for (const std::string& item : split(paths, ':'))
    if (!item.empty()) out.push_back(item);
  return out;
}

fs::path exe_dir() { return fs::path(this_executable()).parent_path(); }

bool is_elf(const std::string& file) {
  std::ifstream in(file, std::ios::binary);
  char magic[4] = {};
  in.read(magic, 4);
  return in.gcount() == 4 && magic[0] == 0x7f && magic[1] == 'E' && magic[2] == 'L' &&
         magic[3] == 'F';
}

bool exports_entry(const std::string& file) {
  boost::dll::library_info info(fs::path(file), false);
  for (const auto& symbol : info.symbols())
    if (symbol == DSHOST_ENTRY_SYMBOL_V1) return true;
  return false;
}

// Every option the plugin declares can be used as `run` uses it: a section with none of its
// keys given takes every default, so a default its own declaration refuses is the author's
// mistake, found here rather than reported as the user's.
template <class Refuse>
std::vector<dshost_option> checked_options(const dshost_plugin_descriptor* d,
                                           const Refuse& refuse) {
  if (d->option_count > 0 && d->options == nullptr)
    throw refuse(cat("it declares ", d->option_count, " options but no option table"));
  bool ok = false;
  std::vector<dshost_option> options = current_options(*d, &ok);
  if (!ok)
    throw refuse(cat("its options are ", d->options[0].struct_size, " bytes each, fewer than the ",
                     DSHOST_STRUCT_SIZE(dshost_option, help),
                     " of ABI 1.0; rebuild it against the dshost SDK"));
  std::vector<std::string> names;
  for (const dshost_option& o : options) {
    try {
      check_option_declaration(o);
    } catch (const UserError& e) {
      throw refuse(cat(e.what(), "; the plugin's author must correct its declaration"));
    }
    if (std::find(names.begin(), names.end(), o.name) != names.end())
      throw refuse(
          cat("option '", o.name, "' is declared twice; the plugin's author must remove one"));
    names.emplace_back(o.name);
  }
  return options;
}

// The catalog finds a plugin by its file name, dshost_<kind>_<name>.so: the table inside
// must declare that kind and name.
template <class Refuse>
void check_file_name(const std::string& file, const dshost_plugin_descriptor* d,
                     const Refuse& refuse) {
  const std::string expected = cat("dshost_", kind_name(d->kind), "_", d->name);
  if (fs::path(file).stem().string() != expected)
    throw refuse(cat("it declares ", kind_name(d->kind), " '", d->name,
                     "', so its file must be named ", expected,
                     ".so to be found; rename the file or the plugin"));
}

// Checks the table of `plugin` and gives it its current api table and options.
void check_descriptor(LoadedPlugin& plugin) {
  const std::string& file = plugin.file;
  const dshost_plugin_descriptor* d = plugin.descriptor;
  const auto refuse = [&](const std::string& why) {
    return UserError(cat("plugin ", file, ": ", why));
  };
  if (d == nullptr) throw refuse("dshost_plugin_v1() returned no table");
  if (d->struct_size < offsetof(dshost_plugin_descriptor, api) + sizeof(void*))
    throw refuse(cat("its plugin table is ", d->struct_size, " bytes, smaller than the ",
                     sizeof(dshost_plugin_descriptor),
                     " of ABI 1.0; rebuild it against the dshost SDK"));
  if (d->abi_major != DSHOST_ABI_MAJOR || d->abi_minor > DSHOST_ABI_MINOR)
    throw refuse(cat("built for dshost ABI ", d->abi_major, ".", d->abi_minor,
                     ", but this host implements ABI ", DSHOST_ABI_MAJOR, ".", DSHOST_ABI_MINOR,
                     "; rebuild the plugin against this host's SDK"));
  if (d->torch_version != nullptr && d->torch_version[0] != '\0' &&
      (std::string(d->torch_version) != TORCH_VERSION || d->cxx11_abi != kHostCxx11Abi))
    throw refuse(cat("built against LibTorch ", d->torch_version,
                     " (_GLIBCXX_USE_CXX11_ABI=", d->cxx11_abi, "), but this host runs LibTorch ",
                     TORCH_VERSION, " (_GLIBCXX_USE_CXX11_ABI=", kHostCxx11Abi,
                     "); rebuild the plugin against the host's LibTorch"));
  if (first_api_size(d->kind) == 0)
    throw refuse(cat("unknown plugin kind ", static_cast<int>(d->kind)));
  if (d->name == nullptr || d->api == nullptr) throw refuse("its table has no name or no api");
  plugin.table = current_api(*d);
  if (plugin.table == nullptr)
    throw refuse(cat("its ", kind_name(d->kind), " table is ", *static_cast<const size_t*>(d->api),
                     " bytes, smaller than the ", first_api_size(d->kind),
                     " that its first ABI requires"));
  plugin.options = checked_options(d, refuse);
  check_file_name(file, d, refuse);
}

}  // namespace

const char* kind_name(dshost_plugin_kind kind) {
  switch (kind) {
    case DSHOST_KIND_MODEL:
      return "model";
    case DSHOST_KIND_STRATEGY:
      return "strategy";
    case DSHOST_KIND_LAUNCHER:
      return "launcher";
    case DSHOST_KIND_DATASET:
      return "dataset";
  }
  return "unknown";
}

LoadedPlugin load_plugin_file(const std::string& file) {
  if (!fs::is_regular_file(file)) throw UserError(cat("plugin ", file, ": no such file"));
  if (!is_elf(file))
    throw UserError(cat("plugin ", file, ": not a shared library (no ELF header); a plugin is ",
                        "a .so built with dshost_add_plugin()"));
  bool has_entry = false;
  try {
    has_entry = exports_entry(file);
  } catch (const std::exception& e) {
    throw UserError(cat("plugin ", file, ": unreadable shared library: ", e.what()));
  }
  if (!has_entry)
    throw UserError(cat("plugin ", file, ": a shared library but not a dshost plugin: it exports ",
                        "no ", DSHOST_ENTRY_SYMBOL_V1, " symbol"));
  auto library = std::make_shared<boost::dll::shared_library>();
  boost::dll::fs::error_code ec;
  const auto mode = static_cast<boost::dll::load_mode::type>(RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
  library->load(fs::path(file), mode, ec);
  if (ec) {
    const char* detail = dlerror();
    throw UserError(cat("plugin ", file, ": cannot be loaded: ", detail ? detail : ec.message()));
  }
  const auto entry = library->get<const dshost_plugin_descriptor*()>(DSHOST_ENTRY_SYMBOL_V1);
  LoadedPlugin plugin{file, entry(), library};
  check_descriptor(plugin);
  return plugin;
}

PluginCatalog::PluginCatalog(const std::string& extra_paths) {
  dirs_ = split_paths(extra_paths);
  if (const char* env = std::getenv("DSHOST_PLUGIN_PATH")) {
    const auto more = split_paths(env);
    dirs_.insert(dirs_.end(), more.begin(), more.end());
  }
  dirs_.push_back((exe_dir() / "plugins").string());
  dirs_.push_back((exe_dir() / ".." / "lib" / "dshost" / "plugins").lexically_normal().string());
}

// Every plugin file in search order, including those a file found earlier hides.
std::vector<PluginFile> PluginCatalog::all_files() const {
  std::vector<PluginFile> out;
  for (const auto& dir : dirs_) {
    std::error_code ec;
    std::vector<fs::path> entries;
    for (const auto& e : fs::directory_iterator(dir, ec)) entries.push_back(e.path());
    std::sort(entries.begin(), entries.end());
    for (const auto& path : entries) {
      const std::string stem = path.stem().string();
      if (path.extension() != ".so") continue;
      for (auto kind :
           {DSHOST_KIND_MODEL, DSHOST_KIND_STRATEGY, DSHOST_KIND_LAUNCHER, DSHOST_KIND_DATASET}) {
        const std::string prefix = cat("dshost_", kind_name(kind), "_");
        if (stem.rfind(prefix, 0) == 0)
          out.push_back({kind, stem.substr(prefix.size()), path.string()});
      }
    }
  }
  return out;
}

std::vector<PluginFile> PluginCatalog::files() const {
  std::vector<PluginFile> out;
  std::set<std::pair<dshost_plugin_kind, std::string>> seen;
  for (auto& f : all_files())
    if (seen.insert({f.kind, f.name}).second) out.push_back(std::move(f));
  return out;
}

LoadedPlugin PluginCatalog::load(dshost_plugin_kind kind, const std::string& name,
                                 const std::string& origin) const {
  std::vector<std::string> known;
  for (const auto& f : files())
    if (f.kind == kind && f.name != name) known.push_back(f.name);
  std::vector<std::string> found;
  for (const auto& f : all_files())
    if (f.kind == kind && f.name == name) found.push_back(f.file);
  if (!found.empty()) {
    LoadedPlugin plugin = load_plugin_file(found[0]);
    plugin.hidden.assign(found.begin() + 1, found.end());
    return plugin;
  }
  const std::string best = closest(name, known);
  throw UserError(cat(origin, ": error: unknown ", kind_name(kind), " plugin '", name, "'",
                      best.empty() ? "" : "; did you mean '" + best + "'?", " Known: ",
                      known.empty() ? "(none)" : join(known), ". Searched: ", join(dirs_),
                      " (add folders with [plugins] paths or DSHOST_PLUGIN_PATH)."));
}

}  // namespace dshost
