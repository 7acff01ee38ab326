// Errors the user must act on. They carry the full message (what, where, what to do) and
// the process exit code; report_error() prints them without a stack trace.
#pragma once

#include <dshost/plugin.hpp>  // cat()

#include <stdexcept>
#include <string>

namespace dshost {

// Exit codes: 2 for bad input (manifest, command line, data, plugins), 1 for failures
// while running.
class UserError : public std::runtime_error {
 public:
  explicit UserError(const std::string& message, int exit_code = 2)
      : std::runtime_error(message), exit_code_(exit_code) {}
  int exit_code() const { return exit_code_; }

 private:
  int exit_code_;
};

// Prints `e` to stderr as one line, "dshost: error: ..." (anything but a UserError as an
// internal error, to be reported), and returns the exit code it calls for.
int report_error(const std::exception& e);

// cat() (the SDK's) is the host's one formatting helper: no fmt in translation units that
// see LibTorch, whose bundled fmt differs by version.
}  // namespace dshost
