// Finding and loading plugins. A plugin is a shared object named
// dshost_<kind>_<name>.so that exports dshost_plugin_v1. It is searched for, in order, in
// the manifest's [plugins] paths, $DSHOST_PLUGIN_PATH, <exe dir>/plugins (build tree) and
// <exe dir>/../lib/dshost/plugins (install tree); the first file of a kind and name wins,
// and `dshost run` and `check` warn about the files it hides.
#pragma once

#include <dshost/abi.h>

#include <memory>
#include <string>
#include <vector>

namespace dshost {

struct LoadedPlugin {
  std::string file;
  const dshost_plugin_descriptor* descriptor = nullptr;
  std::shared_ptr<void> library;  // keeps the shared object loaded
  // Files of the same kind and name later in the search path, which this one hides.
  std::vector<std::string> hidden;
  // The kind's api table and the declared options, as this host's ABI has them
  // (core/abi_adapters.h): read these, not the descriptor's.
  std::shared_ptr<const void> table;
  std::vector<dshost_option> options;

  template <class Api>
  const Api* api() const {
    return static_cast<const Api*>(table.get());
  }
};

struct PluginFile {
  dshost_plugin_kind kind;
  std::string name, file;
};

const char* kind_name(dshost_plugin_kind kind);

// Loads `file` and checks it: an ELF shared object exporting dshost_plugin_v1 (read from the
// symbol table before any of its code runs), ABI major equal and minor not newer than the
// host's, the host's LibTorch version and C++ ABI, a known kind and a complete table.
// Throws UserError (exit 2) saying which check failed.
LoadedPlugin load_plugin_file(const std::string& file);

class PluginCatalog {
 public:
  // `extra_paths`: ':'-separated folders searched before the defaults.
  explicit PluginCatalog(const std::string& extra_paths);

  const std::vector<std::string>& dirs() const { return dirs_; }
  std::vector<PluginFile> files() const;
  // Loads the plugin of `kind` named `name`; `origin` locates the name in the manifest.
  // An unknown name is refused with the known names of that kind.
  LoadedPlugin load(dshost_plugin_kind kind, const std::string& name,
                    const std::string& origin) const;

 private:
  std::vector<PluginFile> all_files() const;
  std::vector<std::string> dirs_;
};

}  // namespace dshost
