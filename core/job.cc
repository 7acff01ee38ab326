#include "core/job.h"

#include "core/abi_adapters.h"
#include "core/dataset.h"
#include "core/error.h"
#include "core/fp8_support.h"
#include "core/gpu_jpeg.h"
#include "core/services.h"

#include <filesystem>
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

// model.freeze binds parameters without a gradient, which models learned to take in ABI 1.8.
void check_freeze_support(const Manifest& m, const Config& config, const LoadedSection& model) {
  const dshost_plugin_descriptor* d = model.plugin.descriptor;
  if (config.model.freeze.empty() || can_freeze(*d)) return;
  throw UserError(cat(m.origin("model", "freeze"), ": error: model.freeze needs a model built for ",
                      "dshost ABI 1.8 or later, but model '", d->name, "' is built for ",
                      d->abi_major, ".", d->abi_minor,
                      " and cannot keep a parameter frozen; rebuild it against this SDK"));
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

// model.init_from names a file that is there (whether it fits the model, each rank checks).
void check_init_from(const Manifest& m, const ModelConfig& model) {
  if (model.init_from.empty() || std::filesystem::is_regular_file(model.init_from)) return;
  throw UserError(cat(m.origin("model", "init_from"), ": error: model.init_from = \"",
                      model.init_from,
                      "\": no such file; name a safetensors file of the model's "
                      "weights (`dshost export` writes one from a checkpoint)"));
}

// [data], [model] and [launcher] hold the host's keys (`host`) beside the plugin's own,
// validated together. The plugin is named by `plugin_key` (`plugin`, which only plugin
// sections have, or a host key such as data.dataset; `fallback` where absent). Returns the
// plugin with its own keys; *host_values gets the host's.
template <class S>
LoadedSection load_shared_section(const Manifest& m, const PluginCatalog& catalog,
                                  dshost_plugin_kind kind, const std::string& name,
                                  const Keys<S>& host, S* host_values,
                                  const std::string& plugin_key = "plugin",
                                  const std::string& fallback = "") {
  const Value plugin_name = m.plugin_name(name, plugin_key, fallback);
  LoadedPlugin plugin = catalog.load(kind, plugin_name.s, plugin_name.origin);
  const OptionTable table = host.table();
  std::vector<dshost_option> all(table.options, table.options + table.count);
  std::set<std::string> host_keys;
  for (const dshost_option& o : all) host_keys.insert(o.name);
  for (const dshost_option& o : plugin.options) {
    if (host_keys.count(o.name))
      throw UserError(cat("plugin ", plugin.file, ": option '", o.name, "' is the host's ", name,
                          ".", o.name, "; the plugin's author must rename it"));
    all.push_back(o);
  }
  const Section whole = m.resolve(name, {all.data(), all.size()}, plugin_key == "plugin");
  *host_values = host.read(whole);
  Section own{name, {}};
  for (const dshost_option& o : plugin.options) own.values[o.name] = whole.at(o.name);
  return {std::move(plugin), std::move(own)};
}

}  // namespace

Job prepare_job(const std::string& manifest_path, const std::vector<std::string>& overrides) {
  Manifest m = Manifest::load(manifest_path, overrides);
  Config config = read_config(m);
  const PluginCatalog catalog(config.plugins.paths);
  LoadedSection model =
      load_shared_section(m, catalog, DSHOST_KIND_MODEL, "model", model_keys(), &config.model);
  check_init_from(m, config.model);
  check_freeze_support(m, config, model);
  check_fp8_job(m, config, *model.plugin.descriptor);
  LoadedSection strategy = load_section(m, catalog, DSHOST_KIND_STRATEGY, "strategy");
  check_skip_support(m, config, strategy);
  LoadedSection launcher = load_shared_section(m, catalog, DSHOST_KIND_LAUNCHER, "launcher",
                                               launcher_keys(), &config.launcher);
  LoadedSection dataset = load_shared_section(m, catalog, DSHOST_KIND_DATASET, "data", data_keys(),
                                              &config.data, "dataset", kDefaultDataset);
  check_gpu_decode(m, config);
  return Job{std::move(m),        std::move(config),   std::move(model),
             std::move(strategy), std::move(launcher), std::move(dataset)};
}

void check_data(const Job& job) { const DatasetPlugin opened(job, RankInfo{}, {}); }

void check_device(const Job& job) {
  if (DSHOST_CUDA || job.config.train.device != DeviceKind::cuda) return;
  throw UserError(cat(job.manifest.origin("train", "device"),
                      ": error: train.device = \"cuda\", but this dshost was built without CUDA "
                      "(against a CPU LibTorch); set train.device = \"cpu\", or build dshost "
                      "against a CUDA LibTorch (README, \"Building on the GPU machine\")"));
}

}  // namespace dshost
