// The ZeRO strategies' options: the keys zero2 and zero3-offload share, and the struct every
// part of them reads.
#pragma once

#include <dshost/plugin.hpp>

#include <ATen/core/ATen_fwd.h>
#include <c10/core/ScalarType.h>

#include <cstdint>

namespace dshost_zero {

struct Options {
  int stage = 2;
  bool overlap_comm = true;
  int64_t reduce_bucket_size = 0;  // elements per reduce-scatter
  at::ScalarType reduce_dtype = at::kFloat;
  at::ScalarType grad_dtype =
      at::kFloat;                  // the gradient shard's (bf16: read by the fused AdamWs only)
  bool offload_optimizer = false;  // fp32 master + moments in CPU memory
  double offload_ratio = 1.0;  // of the shard's optimizer offloaded (the rest stays on the device)
  bool pin_memory = true;
  bool delayed_update = false;  // DPU: the CPU update overlaps the next step
  // stage 3
  bool offload_param = false;               // the parameter shard in CPU memory
  int64_t prefetch_bucket_size = 0;         // elements gathered ahead of use
  int64_t param_persistence_threshold = 0;  // units smaller than this stay gathered
};

// The keys both ZeRO plugins take, for their option tables.
#define DSHOST_ZERO_COMMON_OPTIONS                                                            \
  DSHOST_OPTION("overlap_comm", DSHOST_OPTION_BOOL, "true", nullptr,                          \
                "reduce each unit's gradient while backward goes on (false: one at a time)"), \
      DSHOST_OPTION("reduce_dtype", DSHOST_OPTION_STRING, "\"fp32\"", "fp32|bf16",            \
                    "dtype gradients are reduced in (bf16 halves traffic, loses precision)"), \
      DSHOST_OPTION_RANGE("reduce_bucket_size", DSHOST_OPTION_INT, "5000000", 1, 1e12,        \
                          "gradient elements per reduce-scatter; bounds the staging memory"), \
      DSHOST_OPTION("grad_accum_dtype", DSHOST_OPTION_STRING, "\"fp32\"", "fp32|bf16",        \
                    "dtype of the gradient shard, which micro-batches add into (bf16: half "  \
                    "its memory and copies; needs optimizer.name = \"adamw\")")

// The optimizer offload's keys, as DeepSpeed names them; `device` is the default of
// offload_optimizer_device.
#define DSHOST_ZERO_OFFLOAD_OPTIONS(device)                                                     \
  DSHOST_OPTION("offload_optimizer_device", DSHOST_OPTION_STRING, device, "cpu|none",           \
                "where fp32 masters and optimizer state live (DeepSpeed's offload_optimizer)"), \
      DSHOST_OPTION_RANGE("offload_optimizer_ratio", DSHOST_OPTION_FLOAT, "1.0", 0.0, 1.0,      \
                          "share of the optimizer state offloaded, whole units from the last; " \
                          "the first units' stay on the GPU and update there (DeepSpeed's "     \
                          "offload_optimizer.ratio)"),                                          \
      DSHOST_OPTION("pin_memory", DSHOST_OPTION_BOOL, "true", nullptr,                          \
                    "page-lock offloaded buffers for faster, asynchronous GPU copies"),         \
      DSHOST_OPTION("delayed_parameter_update", DSHOST_OPTION_BOOL, "false", nullptr,           \
                    "overlap the CPU update with the next step, which applies each gradient "   \
                    "one step late (ZeRO-Offload's DPU; needs the optimizer offloaded)")

// Options with the common and the offload keys read from the plugin's section.
inline Options common_options(const dshost::Services& s, int stage) {
  Options o;
  o.stage = stage;
  o.overlap_comm = s.get_bool("overlap_comm");
  o.reduce_bucket_size = s.get_int("reduce_bucket_size");
  o.reduce_dtype = s.get_string("reduce_dtype") == "bf16" ? at::kBFloat16 : at::kFloat;
  o.grad_dtype = s.get_string("grad_accum_dtype") == "bf16" ? at::kBFloat16 : at::kFloat;
  o.offload_optimizer = s.get_string("offload_optimizer_device") == "cpu";
  o.offload_ratio = s.get_float("offload_optimizer_ratio");
  o.pin_memory = s.get_bool("pin_memory");
  o.delayed_update = s.get_bool("delayed_parameter_update");
  return o;
}

// A parameter shard apart from the units' whole buffers: stage 3's, and stage 2's under DPU,
// which the update writes on its own thread while the next step computes from the units.
inline bool has_param_shard(const Options& o) { return o.stage == 3 || o.delayed_update; }

// The parameter shard in host memory: stage 3's offloaded one, or stage 2's under DPU.
inline bool param_shard_on_host(const Options& o) {
  return o.offload_param || (o.stage == 2 && o.delayed_update);
}

}  // namespace dshost_zero
