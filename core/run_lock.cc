#include "core/run_lock.h"

#include "core/error.h"

#include <dshost/launcher.hpp>  // hostname()

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

namespace dshost {
namespace {

std::string read_all(int fd) {
  std::string text;
  char buf[256];
  for (ssize_t n; (n = pread(fd, buf, sizeof(buf), static_cast<off_t>(text.size()))) > 0;)
    text.append(buf, static_cast<size_t>(n));
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  return text;
}

}  // namespace

RunDirectoryLock::RunDirectoryLock(const std::string& run_dir, const std::string& launch_id) {
  std::error_code ec;
  std::filesystem::create_directories(run_dir, ec);
  const std::string path = run_dir + "/.lock";
  fd_ = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0)
    throw UserError(cat("cannot open ", path, ": ", std::strerror(errno),
                        "; check that run.output_dir is writable"),
                    1);
  if (flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    const int error = errno;
    const std::string holder = read_all(fd_);
    close(fd_);
    fd_ = -1;
    if (error != EWOULDBLOCK)
      throw UserError(cat("cannot lock ", path, ": ", std::strerror(error)), 1);
    throw UserError(cat("run directory ", run_dir, " is in use by another run (",
                        holder.empty() ? "holder unknown" : holder,
                        "); wait for it to end, or give this run another run.name"));
  }
  const std::string me = cat("host ", hostname(), ", pid ", getpid(),
                             launch_id.empty() ? "" : ", launch " + launch_id, "\n");
  if (ftruncate(fd_, 0) != 0 ||
      pwrite(fd_, me.data(), me.size(), 0) != static_cast<ssize_t>(me.size()))
    throw UserError(cat("cannot write ", path, ": ", std::strerror(errno)), 1);
}

bool rank0_started(const std::string& run_dir, const std::string& launch_id) {
  const int fd = open((run_dir + "/.lock").c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  const std::string text = read_all(fd);
  close(fd);
  return text.find(", launch " + launch_id) != std::string::npos;
}

RunDirectoryLock::~RunDirectoryLock() {
  if (fd_ >= 0) close(fd_);
}

}  // namespace dshost
