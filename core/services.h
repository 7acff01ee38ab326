// The services table (dshost_services) the host gives each plugin instance: logging tagged
// with the plugin's name, its validated manifest section, collectives, and unit events.
#pragma once

#include "core/manifest.h"

#include <dshost/abi.h>

#include <functional>
#include <string>

namespace dshost {

class Comm;

struct RankInfo {
  int rank = 0, world_size = 1, local_rank = 0, local_world_size = 1;
  DLDevice device{kDLCPU, 0};
  dshost_precision precision = DSHOST_FP32;
  bool fp8 = false;  // train.precision = "fp8" (precision is then bf16)
  uint64_t seed = 0;
  dshost_optimizer_config optimizer{
      sizeof(dshost_optimizer_config), DSHOST_ADAMW, 0.9, 0.999, 1e-8, 0.0, 0.0};
};

// Receives a model's unit events; returns non-OK with err filled to fail the call.
using UnitEventSink = std::function<dshost_status(dshost_unit_event, int32_t, dshost_error*)>;

class PluginHost {
 public:
  // `comm` may be null (launchers): collectives then fail with a clear status.
  PluginHost(std::string plugin, Section config, const RankInfo& info, Comm* comm);
  PluginHost(const PluginHost&) = delete;
  PluginHost& operator=(const PluginHost&) = delete;

  const dshost_services* table() const { return &table_; }
  void set_unit_event_sink(UnitEventSink sink) { sink_ = std::move(sink); }

 private:
  static PluginHost& self(dshost_host* host) { return *reinterpret_cast<PluginHost*>(host); }
  const Value* option(const char* key, dshost_option_type type, dshost_error* err) const;
  template <class Start>
  dshost_status collective(const char* what, dshost_work** work, dshost_error* err, Start&& start);

  std::string plugin_;
  Section config_;
  RankInfo info_;
  Comm* comm_;
  UnitEventSink sink_;
  dshost_services table_;
};

}  // namespace dshost
