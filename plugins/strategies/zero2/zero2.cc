// zero2: ZeRO stage 2. Optimizer state and gradients sharded, parameters whole on every
// rank; see ../common/zero.hpp for the memory and the step.
#include "../common/zero.hpp"

namespace {

const dshost_option kOptions[] = {
    DSHOST_OPTION("overlap_comm", DSHOST_OPTION_BOOL, "true", nullptr,
                  "reduce each unit's gradient while backward goes on (false: one at a time)"),
    DSHOST_OPTION("reduce_dtype", DSHOST_OPTION_STRING, "\"fp32\"", "fp32|bf16",
                  "dtype gradients are reduced in (bf16 halves traffic, loses precision)"),
};

class Zero2 : public dshost_zero::Zero {
 public:
  explicit Zero2(const dshost::Services& s) : Zero(s, options(s)) {}

 private:
  static dshost_zero::Options options(const dshost::Services& s) {
    dshost_zero::Options o;
    o.stage = 2;
    o.overlap_comm = s.get_bool("overlap_comm");
    o.reduce_dtype = s.get_string("reduce_dtype") == "bf16" ? at::kBFloat16 : at::kFloat;
    return o;
  }
};

}  // namespace

DSHOST_STRATEGY_PLUGIN(Zero2, "zero2", "1.0.0",
                       "ZeRO stage 2: gradients reduce-scattered per unit, optimizer state sharded",
                       kOptions, sizeof(kOptions) / sizeof(kOptions[0]))
