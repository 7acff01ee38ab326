// A launcher that starts no rank and says it succeeded: the idle test plugin, and the body
// of bad_plugins.cc's deliberately broken ones.
#pragma once

#include <dshost/launcher.hpp>

class Idle : public dshost::Launcher {
 public:
  using Launcher::Launcher;
  Outcome launch(const std::vector<std::string>&, const std::vector<std::string>&) override {
    return {};
  }
};
