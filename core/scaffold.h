// `dshost new-plugin`: a ready-to-build plugin folder, made from the SDK's examples.
#pragma once

#include <string>

namespace dshost {

// Writes <parent>/<name>/ with CMakeLists.txt, <name>.cc and a load test for a plugin of
// `kind` (model, strategy or launcher) named `name`. Refuses a bad name or kind and an
// existing folder (nothing is overwritten). Returns the folder written.
std::string write_scaffold(const std::string& kind, const std::string& name,
                           const std::string& parent);

}  // namespace dshost
