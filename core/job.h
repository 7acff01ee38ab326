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
};

// Throws UserError (exit 2) with file:line:column for anything wrong.
Job prepare_job(const std::string& manifest_path, const std::vector<std::string>& overrides);

// The same check of the data files that workers do, so `dshost check` and `dshost run`
// refuse a bad data.path before starting ranks.
void check_data(const Job& job);

}  // namespace dshost
