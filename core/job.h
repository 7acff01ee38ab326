// A job: the manifest validated end to end (host sections, plugins found and checked,
// each plugin's section validated against the options it declares), before any rank runs.
#pragma once

#include "core/config.h"
#include "core/manifest.h"
#include "core/plugin_loader.h"

namespace dshost {

struct LoadedSection {
  LoadedPlugin plugin;
  Section options;
};

struct Job {
  Manifest manifest;
  Config config;
  LoadedSection model, strategy, launcher;
  LoadedSection dataset;  // [data]; options: the plugin's own keys only
};

// Throws UserError (exit 2) with file:line:column for anything wrong.
Job prepare_job(const std::string& manifest_path, const std::vector<std::string>& overrides);

// Opens the dataset as the workers do (its files read, without a model), so `dshost check`
// and `dshost run` refuse bad data before starting ranks.
void check_data(const Job& job);

// train.device = "cuda" in a dshost built without CUDA: refused at the key where a run starts,
// before any rank does (`dshost check` passes a GPU manifest on any build).
void check_device(const Job& job);

}  // namespace dshost
