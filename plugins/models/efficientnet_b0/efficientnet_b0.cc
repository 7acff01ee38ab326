// efficientnet_b0: torchvision's EfficientNet-B0 (MBConv blocks with squeeze-excitation and
// SiLU, stochastic depth rising linearly to 0.2 over the blocks).
// Units: stem (3x3 conv), each MBConv block, the last 1x1 conv, head.
#include "efficientnet_b0.hpp"

namespace {

const dshost_option kOptions[] = {
    DSHOST_IMAGE_MODEL_OPTIONS,
    DSHOST_OPTION_RANGE("width_mult", DSHOST_OPTION_FLOAT, "1.0", 0.1, 4.0,
                        "channel multiplier (B0 = 1.0, B1 = 1.0, B2 = 1.1, ...)"),
    DSHOST_OPTION_RANGE("depth_mult", DSHOST_OPTION_FLOAT, "1.0", 0.1, 4.0,
                        "blocks-per-stage multiplier (B0 = 1.0, B1 = 1.1, ...)"),
    DSHOST_OPTION_RANGE("dropout", DSHOST_OPTION_FLOAT, "0.2", 0.0, 0.95,
                        "dropout before the classifier"),
    DSHOST_OPTION_RANGE("stochastic_depth", DSHOST_OPTION_FLOAT, "0.2", 0.0, 0.95,
                        "drop probability of the last block's branch (earlier blocks: less)"),
};

}  // namespace

DSHOST_MODEL_PLUGIN(dshost_models::efficientnet::EfficientNetB0, "efficientnet_b0", "1.0.0",
                    "torchvision's EfficientNet-B0", kOptions,
                    sizeof(kOptions) / sizeof(kOptions[0]))
