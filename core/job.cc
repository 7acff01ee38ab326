#include "core/job.h"

#include "core/data.h"
#include "core/error.h"

namespace dshost {
namespace {

LoadedSection load_section(const Manifest& m, const PluginCatalog& catalog,
                           dshost_plugin_kind kind, const std::string& section) {
  const Value name = m.plugin_name(section);
  LoadedPlugin plugin = catalog.load(kind, name.s, name.origin);
  const dshost_plugin_descriptor* d = plugin.descriptor;
  Section options = m.resolve(section, {d->options, d->option_count}, /*plugin_section=*/true);
  return {std::move(plugin), std::move(options)};
}

}  // namespace

Job prepare_job(const std::string& manifest_path, const std::vector<std::string>& overrides) {
  Manifest m = Manifest::load(manifest_path, overrides);
  Config config = read_config(m);
  const PluginCatalog catalog(config.plugin_paths);
  LoadedSection model = load_section(m, catalog, DSHOST_KIND_MODEL, "model");
  LoadedSection strategy = load_section(m, catalog, DSHOST_KIND_STRATEGY, "strategy");
  LoadedSection launcher = load_section(m, catalog, DSHOST_KIND_LAUNCHER, "launcher");
  return Job{std::move(m), std::move(config), std::move(model), std::move(strategy),
             std::move(launcher)};
}

void check_data(const Job& job) {
  check_dataset(job.config.data, job.manifest.origin("data", "path"));
}

}  // namespace dshost
