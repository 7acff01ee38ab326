#include "core/services.h"

#include "core/comm.h"
#include "core/error.h"
#include "core/log.h"

#include <dshost/plugin.hpp>
#include <dshost/torch.hpp>

namespace dshost {
namespace {

void put(dshost_error* err, const std::string& message) { write_error(err, message.c_str()); }

}  // namespace

PluginHost::PluginHost(std::string plugin, Section config, const RankInfo& info, Comm* comm)
    : plugin_(std::move(plugin)), config_(std::move(config)), info_(info), comm_(comm) {
  table_ = dshost_services{};
  table_.struct_size = sizeof(dshost_services);
  table_.host = reinterpret_cast<dshost_host*>(this);
  table_.rank = info_.rank;
  table_.world_size = info_.world_size;
  table_.local_rank = info_.local_rank;
  table_.local_world_size = info_.local_world_size;
  table_.device = info_.device;
  table_.precision = info_.precision;
  table_.fp8 = info_.fp8 ? 1 : 0;
  table_.seed = info_.seed;
  table_.optimizer = &info_.optimizer;

  table_.log = [](dshost_host* h, dshost_log_level level, const char* message) {
    log::write(static_cast<log::Level>(level), self(h).plugin_, message);
  };
  table_.get_int = [](dshost_host* h, const char* key, int64_t* out, dshost_error* err) {
    const Value* v = self(h).option(key, DSHOST_OPTION_INT, err);
    if (v) *out = v->i;
    return v ? DSHOST_OK : DSHOST_INVALID_ARGUMENT;
  };
  table_.get_float = [](dshost_host* h, const char* key, double* out, dshost_error* err) {
    const Value* v = self(h).option(key, DSHOST_OPTION_FLOAT, err);
    if (v) *out = v->f;
    return v ? DSHOST_OK : DSHOST_INVALID_ARGUMENT;
  };
  table_.get_bool = [](dshost_host* h, const char* key, int32_t* out, dshost_error* err) {
    const Value* v = self(h).option(key, DSHOST_OPTION_BOOL, err);
    if (v) *out = v->b ? 1 : 0;
    return v ? DSHOST_OK : DSHOST_INVALID_ARGUMENT;
  };
  table_.get_string = [](dshost_host* h, const char* key, const char** out, dshost_error* err) {
    const Value* v = self(h).option(key, DSHOST_OPTION_STRING, err);
    if (v) *out = v->s.c_str();
    return v ? DSHOST_OK : DSHOST_INVALID_ARGUMENT;
  };

  table_.register_buffer = [](dshost_host* h, DLManagedTensor* t, int32_t* id, dshost_error* err) {
    PluginHost& me = self(h);
    return guarded(err, [&] {
      const at::Tensor buffer = from_dlpack(t);
      if (me.comm_ == nullptr) throw Error("collectives are not available to this plugin");
      *id = me.comm_->register_buffer(buffer);
    });
  };
  table_.all_reduce = [](dshost_host* h, const dshost_slice* s, dshost_reduce_op op,
                         dshost_work** w, dshost_error* err) {
    return self(h).collective("all_reduce", w, err, [&](Comm& c) { return c.all_reduce(*s, op); });
  };
  table_.all_gather = [](dshost_host* h, const dshost_slice* in, const dshost_slice* out,
                         dshost_work** w, dshost_error* err) {
    return self(h).collective("all_gather", w, err,
                              [&](Comm& c) { return c.all_gather(*in, *out); });
  };
  table_.reduce_scatter = [](dshost_host* h, const dshost_slice* in, const dshost_slice* out,
                             dshost_reduce_op op, dshost_work** w, dshost_error* err) {
    return self(h).collective("reduce_scatter", w, err,
                              [&](Comm& c) { return c.reduce_scatter(*in, *out, op); });
  };
  table_.broadcast = [](dshost_host* h, const dshost_slice* s, int32_t root, dshost_work** w,
                        dshost_error* err) {
    return self(h).collective("broadcast", w, err, [&](Comm& c) { return c.broadcast(*s, root); });
  };
  table_.wait = [](dshost_host* h, dshost_work* w, dshost_error* err) {
    std::unique_ptr<PendingWork> work(reinterpret_cast<PendingWork*>(w));
    PluginHost& me = self(h);
    try {
      work->finish(me.comm_->timeout());
      return DSHOST_OK;
    } catch (const std::exception& e) {
      const auto& rv = me.comm_->rendezvous();
      put(err, cat("rank ", rv.rank, " on ", hostname(), ": ", work->what(),
                   " failed: ", without_backtrace(e.what()),
                   ". If a peer rank died or hangs, its log says why (this rank waits at most ",
                   me.comm_->timeout().count() / 1000.0, " s, comm.timeout_s)"));
      return DSHOST_COMM_ERROR;
    }
  };
  table_.unit_event = [](dshost_host* h, dshost_unit_event event, int32_t unit, dshost_error* err) {
    PluginHost& me = self(h);
    return me.sink_ ? me.sink_(event, unit, err) : DSHOST_OK;
  };
}

const Value* PluginHost::option(const char* key, dshost_option_type type, dshost_error* err) const {
  const auto it = config_.values.find(key);
  if (it == config_.values.end() || it->second.type != type) {
    put(err, cat("plugin ", plugin_, " asked for option '", key, "' of a type it did not declare"));
    return nullptr;
  }
  return &it->second;
}

template <class Start>
dshost_status PluginHost::collective(const char* what, dshost_work** work, dshost_error* err,
                                     Start&& start) {
  if (comm_ == nullptr) {
    put(err, cat(what, ": collectives are not available to ", plugin_));
    return DSHOST_UNSUPPORTED;
  }
  try {
    *work = reinterpret_cast<dshost_work*>(start(*comm_).release());
    return DSHOST_OK;
  } catch (const std::exception& e) {
    put(err, cat("rank ", comm_->rendezvous().rank, " on ", hostname(), ": ", what,
                 " could not start: ", without_backtrace(e.what())));
    return DSHOST_COMM_ERROR;
  }
}

}  // namespace dshost
