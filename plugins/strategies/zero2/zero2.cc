// zero2: ZeRO stage 2. Optimizer state and gradients sharded, parameters whole on every
// rank; the optimizer (fp32 masters, moments and the gradient shard) optionally in CPU memory,
// updated by the fused CPU AdamW, as ZeRO-Offload does. See ../common/zero/zero.h.
#include "../common/zero/zero.h"

namespace {

const dshost_option kOptions[] = {DSHOST_ZERO_COMMON_OPTIONS,
                                  DSHOST_ZERO_OFFLOAD_OPTIONS("\"none\"")};

class Zero2 : public dshost_zero::Zero {
 public:
  explicit Zero2(const dshost::Services& s) : Zero(s, dshost_zero::common_options(s, 2)) {}
};

}  // namespace

DSHOST_STRATEGY_PLUGIN(Zero2, "zero2", "1.0.0",
                       "ZeRO stage 2: gradients reduce-scattered per unit, optimizer state sharded",
                       kOptions, sizeof(kOptions) / sizeof(kOptions[0]))
