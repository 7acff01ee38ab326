// An exclusive lock on a run directory for the whole life of the run that writes it, so a
// second run started there by mistake refuses at once instead of resuming from the first's
// live checkpoint and interleaving its metrics.
#pragma once

#include <string>

namespace dshost {

class RunDirectoryLock {
 public:
  // Creates `run_dir` if needed and locks its `.lock` file (flock: the kernel releases it
  // when the holder ends, SIGKILL included), writing this host, pid and `launch_id` (the
  // id of the `dshost run` that started this rank, which checks it) into it. Throws
  // UserError naming the holder's host and pid when another process holds it.
  RunDirectoryLock(const std::string& run_dir, const std::string& launch_id);
  ~RunDirectoryLock();
  RunDirectoryLock(const RunDirectoryLock&) = delete;
  RunDirectoryLock& operator=(const RunDirectoryLock&) = delete;

 private:
  int fd_ = -1;
};

// The environment variable that carries a `dshost run`'s launch id to its ranks, and
// whether rank 0 of that launch wrote run_dir/.lock.
constexpr const char* kLaunchIdVariable = "DSHOST_LAUNCH_ID";
bool rank0_started(const std::string& run_dir, const std::string& launch_id);

}  // namespace dshost
