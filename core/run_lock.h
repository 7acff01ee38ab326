// An exclusive lock on a run directory for the whole life of the run that writes it, so a
// second run started there by mistake refuses at once instead of resuming from the first's
// live checkpoint and interleaving its metrics.
#pragma once

#include <string>

namespace dshost {

class RunDirectoryLock {
 public:
  // Creates `run_dir` if needed and locks its `.lock` file (flock: the kernel releases it
  // when the holder ends, SIGKILL included), writing this host and pid into it. Throws
  // UserError naming the holder's host and pid when another process holds it.
  explicit RunDirectoryLock(const std::string& run_dir);
  ~RunDirectoryLock();
  RunDirectoryLock(const RunDirectoryLock&) = delete;
  RunDirectoryLock& operator=(const RunDirectoryLock&) = delete;

 private:
  int fd_ = -1;
};

}  // namespace dshost
