// zero3-offload: ZeRO stage 3. Parameters, gradients and optimizer state sharded; units
// gathered only while in use; fp32 masters and AdamW moments in CPU memory, updated by a
// fused multi-threaded CPU AdamW (with offload_optimizer_ratio < 1, the first units' on the
// GPU, updated there). See ../common/zero/zero.h.
#include "../common/zero/zero.h"

namespace {

const dshost_option kOptions[] = {
    DSHOST_ZERO_COMMON_OPTIONS,
    DSHOST_ZERO_OFFLOAD_OPTIONS("\"cpu\""),
    DSHOST_OPTION("offload_param_device", DSHOST_OPTION_STRING, "\"none\"", "cpu|none",
                  "where the parameter shard lives between uses (DeepSpeed's offload_param)"),
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
    o.offload_param = s.get_string("offload_param_device") == "cpu";
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
