#include "core/error.h"

#include <iostream>

namespace dshost {

int report_error(const std::exception& e) {
  const auto* user = dynamic_cast<const UserError*>(&e);
  const std::string message = user != nullptr ? e.what()
                                              : cat("internal error: ", without_backtrace(e.what()),
                                                    " (please report this)");
  const bool located = message.find(": error: ") != std::string::npos;
  std::cerr << "dshost: " << (located ? "" : "error: ") << message << "\n";
  return user != nullptr ? user->exit_code() : 1;
}

}  // namespace dshost
