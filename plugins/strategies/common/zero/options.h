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
      at::kFloat;  // the gradient shard's (bf16: read by the fused AdamWs only)
  // stage 3
  bool offload_optimizer = false;  // fp32 master + moments in CPU memory
  bool offload_param = false;      // the parameter shard in CPU memory
  double offload_ratio = 1.0;  // of the shard's optimizer offloaded (the rest stays on the device)
  bool pin_memory = true;
  bool delayed_update = false;              // DPU: the CPU update overlaps the next step
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

// Options with the common keys read from the plugin's section.
inline Options common_options(const dshost::Services& s, int stage) {
  Options o;
  o.stage = stage;
  o.overlap_comm = s.get_bool("overlap_comm");
  o.reduce_bucket_size = s.get_int("reduce_bucket_size");
  o.reduce_dtype = s.get_string("reduce_dtype") == "bf16" ? at::kBFloat16 : at::kFloat;
  o.grad_dtype = s.get_string("grad_accum_dtype") == "bf16" ? at::kBFloat16 : at::kFloat;
  return o;
}

}  // namespace dshost_zero
