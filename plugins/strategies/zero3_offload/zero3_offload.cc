// zero3-offload: ZeRO stage 3. Parameters, gradients and optimizer state sharded; units
// gathered only while in use; fp32 masters and AdamW moments in CPU memory, updated by a
// fused multi-threaded CPU AdamW (with offload_optimizer_ratio < 1, the first units' on the
// GPU, updated there). See ../common/zero/zero.h.
#include "../common/zero/zero.h"

namespace {

const dshost_option kOptions[] = {
    DSHOST_ZERO_COMMON_OPTIONS,
    DSHOST_OPTION("offload_optimizer_device", DSHOST_OPTION_STRING, "\"cpu\"", "cpu|none",
                  "where fp32 masters and optimizer state live (DeepSpeed's offload_optimizer)"),
    DSHOST_OPTION_RANGE("offload_optimizer_ratio", DSHOST_OPTION_FLOAT, "1.0", 0.0, 1.0,
                        "share of the optimizer state offloaded, whole units from the last; the "
                        "first units' stay on the GPU and update there (DeepSpeed's "
                        "offload_optimizer.ratio)"),
    DSHOST_OPTION("offload_param_device", DSHOST_OPTION_STRING, "\"none\"", "cpu|none",
                  "where the parameter shard lives between uses (DeepSpeed's offload_param)"),
    DSHOST_OPTION("pin_memory", DSHOST_OPTION_BOOL, "true", nullptr,
                  "page-lock offloaded buffers for faster, asynchronous GPU copies"),
    DSHOST_OPTION("delayed_parameter_update", DSHOST_OPTION_BOOL, "false", nullptr,
                  "overlap the CPU update with the next step, which applies each gradient "
                  "one step late (ZeRO-Offload's DPU; needs both offloads)"),
    DSHOST_OPTION_RANGE(
        "prefetch_bucket_size", DSHOST_OPTION_INT, "50000000", 0, 1e12,
        "elements of the next units gathered ahead of use (the next unit always; 0: none)"),
    DSHOST_OPTION_RANGE("param_persistence_threshold", DSHOST_OPTION_INT, "100000", 0, 1e12,
                        "units with fewer elements stay gathered (saves small collectives)"),
};

class Zero3Offload : public dshost_zero::Zero {
 public:
  explicit Zero3Offload(const dshost::Services& s) : Zero(s, options(s)) {}

 private:
  static dshost_zero::Options options(const dshost::Services& s) {
    dshost_zero::Options o = dshost_zero::common_options(s, 3);
    o.offload_optimizer = s.get_string("offload_optimizer_device") == "cpu";
    o.offload_ratio = s.get_float("offload_optimizer_ratio");
    o.offload_param = s.get_string("offload_param_device") == "cpu";
    o.pin_memory = s.get_bool("pin_memory");
    o.delayed_update = s.get_bool("delayed_parameter_update");
    o.prefetch_bucket_size = s.get_int("prefetch_bucket_size");
    o.param_persistence_threshold = s.get_int("param_persistence_threshold");
    return o;
  }
};

}  // namespace

DSHOST_STRATEGY_PLUGIN(
    Zero3Offload, "zero3-offload", "1.0.0",
    "ZeRO stage 3: parameters sharded and gathered per unit, CPU-offloaded AdamW", kOptions,
    sizeof(kOptions) / sizeof(kOptions[0]))
