// Starting every rank of a job through its launcher plugin, once, and whether a failed start
// is worth starting again (launcher.max_restarts).
#pragma once

#include "core/job.h"

#include <dshost/abi.h>

#include <cstdint>
#include <string>
#include <vector>

namespace dshost {

struct LaunchResult {
  dshost_status status = DSHOST_OK;
  int32_t exit_code = 0;  // the failing rank's (128 + signal for signals) under RANK_FAILED
  std::string message;    // what failed, naming the rank and host
  std::string launch_id;  // what rank 0 wrote into run_dir/.lock
};

// Runs `argv` (this program's `worker` command line) on every rank through the job's
// launcher and waits for them as the launcher does.
LaunchResult launch_ranks(const Job& job, const std::vector<std::string>& argv);

// A rank that failed by itself (an error while running, a crash, a killed process) is worth
// a restart; bad input (exit 2) would fail again, and an interruption (SIGINT, SIGTERM) is
// the user's stop.
bool worth_restarting(const LaunchResult& r);

// The process exit code for a failed launch.
int exit_code_of(const LaunchResult& r);

}  // namespace dshost
