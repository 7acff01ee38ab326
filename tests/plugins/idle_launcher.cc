// A launcher that reports success without starting any rank, as a broken third-party
// launcher might: `dshost run` must not take that for a finished job.
#include "idle.hpp"

#ifndef PLUGIN_NAME  // (tests/CMakeLists.txt builds it again against the frozen ABI 1.4 SDK)
#define PLUGIN_NAME "idle"
#endif

DSHOST_LAUNCHER_PLUGIN(Idle, PLUGIN_NAME, "0.0.1", "starts no rank and says it succeeded", nullptr,
                       0)
