// Launcher plugins: derive from dshost::Launcher and export with DSHOST_LAUNCHER_PLUGIN.
// Needs no LibTorch.
#pragma once

#include <dshost/plugin.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

namespace dshost {

class Launcher {
 public:
  explicit Launcher(const Services& services) : services_(services) {}
  virtual ~Launcher() = default;

  struct Outcome {
    int exit_code = 0;    // 0, or the first failing rank's code (128 + signal if killed)
    std::string failure;  // names the rank and host when exit_code != 0
  };
  // Runs `argv` as every rank (with `env` added) until all end; see dshost_launcher_api.
  virtual Outcome launch(const std::vector<std::string>& argv,
                         const std::vector<std::string>& env) = 0;

  const Services& services() const { return services_; }

 private:
  Services services_;
};

// The port of rank 0's rendezvous store, picked by the kernel and held until destroyed: the
// socket stays bound (SO_REUSEADDR, never listening, closed on exec), so neither another
// program's bind nor an outgoing connection's automatic port can take it while the ranks
// start, and rank 0's store, which binds with SO_REUSEADDR too, listens on it.
class ReservedPort {
 public:
  ReservedPort() : fd_(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) {
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    socklen_t len = sizeof(addr);
    const int reuse = 1;
    const bool ok = fd_ >= 0 &&
                    setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &reuse, sizeof(reuse)) == 0 &&
                    bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
                    getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) == 0;
    if (!ok) {
      const std::string why = std::strerror(errno);
      if (fd_ >= 0) close(fd_);
      throw Error("could not reserve a free port (" + why + "); set launcher.master_port",
                  DSHOST_IO_ERROR);
    }
    port_ = ntohs(addr.sin_port);
  }
  ~ReservedPort() { close(fd_); }
  ReservedPort(const ReservedPort&) = delete;
  ReservedPort& operator=(const ReservedPort&) = delete;

  int port() const { return port_; }

 private:
  int fd_;
  int port_ = 0;
};

// A TCP port that nothing listens on right now (the kernel's pick). Another program may take
// it before rank 0 binds it: a launcher that starts rank 0 itself holds a ReservedPort.
inline int free_port() { return ReservedPort().port(); }

// A waitpid status in words ("exited with code 3", "was killed by signal 9 (Killed)") and
// as the job's exit code (128 + signal for a signal, as shells report it).
inline std::string describe_exit(int status) {
  if (WIFSIGNALED(status))
    return std::string("was killed by signal ") + std::to_string(WTERMSIG(status)) + " (" +
           strsignal(WTERMSIG(status)) + ")";
  return "exited with code " + std::to_string(WEXITSTATUS(status));
}

// The exit code of a rank that stopped because another rank failed or stopped answering
// (its collective broke or timed out); its last error line names that rank. A launcher
// names a rank that failed for its own reason before one that exited with this code.
constexpr int kStoppedByAnotherRank = 3;

inline int exit_code_of(int status) {
  return WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status);
}

inline std::vector<std::string> to_strings(const char* const* list) {
  std::vector<std::string> out;
  for (; list != nullptr && *list != nullptr; ++list) out.emplace_back(*list);
  return out;
}

template <class L>
const dshost_launcher_api* launcher_api() {
  static const dshost_launcher_api api = {
      sizeof(dshost_launcher_api),
      [](const dshost_services* t, dshost_launcher** out, dshost_error* err) {
        return guarded(err, [&] { *out = reinterpret_cast<dshost_launcher*>(new L(Services(t))); });
      },
      [](dshost_launcher* l) { delete reinterpret_cast<L*>(l); },
      [](dshost_launcher* l, const dshost_launch_request* request, int32_t* exit_code,
         dshost_error* err) {
        Launcher::Outcome outcome;
        const dshost_status status = guarded(err, [&] {
          outcome =
              reinterpret_cast<L*>(l)->launch(to_strings(request->argv), to_strings(request->env));
        });
        if (status != DSHOST_OK) return status;
        *exit_code = outcome.exit_code;
        if (outcome.exit_code == 0) return DSHOST_OK;
        write_error(err, outcome.failure.c_str());
        return DSHOST_RANK_FAILED;
      },
  };
  return &api;
}

}  // namespace dshost

#define DSHOST_LAUNCHER_PLUGIN(CLASS, NAME, VERSION, DESCRIPTION, OPTIONS, OPTION_COUNT) \
  DSHOST_DEFINE_PLUGIN(DSHOST_KIND_LAUNCHER, NAME, VERSION, DESCRIPTION, "", OPTIONS,    \
                       OPTION_COUNT, ::dshost::launcher_api<CLASS>())
