#include "core/launch.h"

#include "core/error.h"
#include "core/run_lock.h"  // kLaunchIdVariable
#include "core/services.h"

#include <dshost/plugin.hpp>

#include <unistd.h>

#include <chrono>
#include <csignal>

namespace dshost {

LaunchResult launch_ranks(const Job& job, const std::vector<std::string>& argv) {
  PluginHost host(job.launcher.plugin.descriptor->name, job.launcher.options, RankInfo{}, nullptr);
  const auto* api = job.launcher.plugin.api<dshost_launcher_api>();
  dshost_error err{sizeof(dshost_error), {}};
  dshost_launcher* launcher = nullptr;
  if (api->create(host.table(), &launcher, &err) != DSHOST_OK)
    throw UserError(cat("launcher ", job.launcher.plugin.descriptor->name, ": ", err.message));
  std::vector<const char*> cargv;
  for (const auto& a : argv) cargv.push_back(a.c_str());
  cargv.push_back(nullptr);
  LaunchResult r;
  r.launch_id = cat(hostname(), "-", getpid(), "-",
                    std::chrono::steady_clock::now().time_since_epoch().count());
  const std::string launch_variable = cat(kLaunchIdVariable, "=", r.launch_id);
  const char* env[] = {launch_variable.c_str(), nullptr};
  const dshost_launch_request request{sizeof(dshost_launch_request), cargv.data(), env};
  r.status = api->launch(launcher, &request, &r.exit_code, &err);
  api->destroy(launcher);
  if (r.status != DSHOST_OK) r.message = err.message;
  return r;
}

bool worth_restarting(const LaunchResult& r) {
  return r.status == DSHOST_RANK_FAILED && r.exit_code != 2 && r.exit_code != 128 + SIGINT &&
         r.exit_code != 128 + SIGTERM;
}

int exit_code_of(const LaunchResult& r) {
  if (r.status == DSHOST_OK) return 0;
  if (r.status == DSHOST_RANK_FAILED) return r.exit_code;
  return r.status == DSHOST_INVALID_ARGUMENT ? 2 : 1;
}

}  // namespace dshost
