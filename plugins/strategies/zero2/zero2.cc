// zero2: ZeRO stage 2. Optimizer state and gradients sharded, parameters whole on every
// rank; see ../common/zero/zero.h for the memory and the step.
#include "../common/zero/zero.h"

namespace {

const dshost_option kOptions[] = {DSHOST_ZERO_COMMON_OPTIONS};

class Zero2 : public dshost_zero::Zero {
 public:
  explicit Zero2(const dshost::Services& s) : Zero(s, dshost_zero::common_options(s, 2)) {}
};

}  // namespace

DSHOST_STRATEGY_PLUGIN(Zero2, "zero2", "1.0.0",
                       "ZeRO stage 2: gradients reduce-scattered per unit, optimizer state sharded",
                       kOptions, sizeof(kOptions) / sizeof(kOptions[0]))
