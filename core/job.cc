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

// train.nonfinite = "skip" is carried out by the strategy, which learned to since ABI 1.5.
void check_skip_support(const Manifest& m, const Config& config, const LoadedSection& strategy) {
  const dshost_plugin_descriptor* d = strategy.plugin.descriptor;
  if (config.train.nonfinite != "skip" || d->abi_minor >= 5) return;
  throw UserError(cat(m.origin("train", "nonfinite"), ": error: train.nonfinite = \"skip\" needs a "
                      "strategy built for dshost ABI 1.5 or later, but strategy '", d->name, "' is built for ",
                      d->abi_major, ".", d->abi_minor, " and cannot drop an update; rebuild it against "
                      "this SDK, or set train.nonfinite = \"stop\""));
}

}  // namespace

Job prepare_job(const std::string& manifest_path, const std::vector<std::string>& overrides) {
  Manifest m = Manifest::load(manifest_path, overrides);
  Config config = read_config(m);
  const PluginCatalog catalog(config.plugin_paths);
  LoadedSection model = load_section(m, catalog, DSHOST_KIND_MODEL, "model");
  LoadedSection strategy = load_section(m, catalog, DSHOST_KIND_STRATEGY, "strategy");
  check_skip_support(m, config, strategy);
  LoadedSection launcher = load_section(m, catalog, DSHOST_KIND_LAUNCHER, "launcher");
  return Job{std::move(m), std::move(config), std::move(model), std::move(strategy),
             std::move(launcher)};
}

void check_data(const Job& job) {
  check_dataset(job.config.data, job.manifest.origin("data", "path"));
}

}  // namespace dshost
