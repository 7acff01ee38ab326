#include "core/job.h"

#include "core/abi_adapters.h"
#include "core/dataset.h"
#include "core/error.h"
#include "core/gpu_jpeg.h"
#include "core/services.h"

#include <set>

namespace dshost {
namespace {

LoadedSection load_section(const Manifest& m, const PluginCatalog& catalog, dshost_plugin_kind kind,
                           const std::string& section) {
  const Value name = m.plugin_name(section);
  LoadedPlugin plugin = catalog.load(kind, name.s, name.origin);
  Section options =
      m.resolve(section, {plugin.options.data(), plugin.options.size()}, /*plugin_section=*/true);
  return {std::move(plugin), std::move(options)};
}

// train.nonfinite = "skip" is carried out by the strategy, which learned to since ABI 1.5.
void check_skip_support(const Manifest& m, const Config& config, const LoadedSection& strategy) {
  const dshost_plugin_descriptor* d = strategy.plugin.descriptor;
  if (config.train.nonfinite != Nonfinite::skip || can_skip_updates(*d)) return;
  throw UserError(cat(m.origin("train", "nonfinite"),
                      ": error: train.nonfinite = \"skip\" needs a "
                      "strategy built for dshost ABI 1.5 or later, but strategy '",
                      d->name, "' is built for ", d->abi_major, ".", d->abi_minor,
                      " and cannot drop an update; rebuild it against "
                      "this SDK, or set train.nonfinite = \"stop\""));
}

// data.decode = "gpu" decodes with nvJPEG on the rank's GPU.
void check_gpu_decode(const Manifest& m, const Config& config) {
  if (config.data.decode != Decode::gpu) return;
  const char* missing = config.train.device != DeviceKind::cuda ? "train.device = \"cuda\""
                        : !GpuJpegDecoder::built()
                            ? "a dshost built with nvJPEG (a CUDA toolkit that has it)"
                            : nullptr;
  if (missing != nullptr)
    throw UserError(cat(m.origin("data", "decode"), ": error: data.decode = \"gpu\" needs ",
                        missing, "; set data.decode = \"cpu\" or \"auto\""));
}

// [data]: `dataset` names the plugin; the host's keys and the plugin's own share the section,
// validated together. `data` gets the host's.
LoadedSection load_data_section(const Manifest& m, const PluginCatalog& catalog, DataConfig& data) {
  const Value name = m.plugin_name("data", "dataset", kDefaultDataset);
  LoadedPlugin plugin = catalog.load(DSHOST_KIND_DATASET, name.s, name.origin);
  const OptionTable host = host_data_options();
  std::vector<dshost_option> all(host.options, host.options + host.count);
  std::set<std::string> host_keys;
  for (const dshost_option& o : all) host_keys.insert(o.name);
  for (const dshost_option& o : plugin.options) {
    if (host_keys.count(o.name))
      throw UserError(cat("plugin ", plugin.file, ": option '", o.name, "' is the host's data.",
                          o.name, "; the plugin's author must rename it"));
    all.push_back(o);
  }
  const Section section = m.resolve("data", {all.data(), all.size()});
  data = read_data_config(section);
  Section own{"data", {}};
  for (const dshost_option& o : plugin.options) own.values[o.name] = section.at(o.name);
  return {std::move(plugin), std::move(own)};
}

}  // namespace

Job prepare_job(const std::string& manifest_path, const std::vector<std::string>& overrides) {
  Manifest m = Manifest::load(manifest_path, overrides);
  Config config = read_config(m);
  const PluginCatalog catalog(config.plugins.paths);
  LoadedSection model = load_section(m, catalog, DSHOST_KIND_MODEL, "model");
  LoadedSection strategy = load_section(m, catalog, DSHOST_KIND_STRATEGY, "strategy");
  check_skip_support(m, config, strategy);
  LoadedSection launcher = load_section(m, catalog, DSHOST_KIND_LAUNCHER, "launcher");
  LoadedSection dataset = load_data_section(m, catalog, config.data);
  check_gpu_decode(m, config);
  return Job{std::move(m),        std::move(config),   std::move(model),
             std::move(strategy), std::move(launcher), std::move(dataset)};
}

void check_data(const Job& job) { const DatasetPlugin opened(job, RankInfo{}, {}); }

}  // namespace dshost
