// mobilenet_v2: torchvision's MobileNetV2 (inverted residuals with linear bottlenecks).
// Units: stem (3x3 conv), each inverted residual block, the last 1x1 conv, head.
#include "mobilenet_v2.hpp"

namespace {

const dshost_option kOptions[] = {
    DSHOST_IMAGE_MODEL_OPTIONS,
    DSHOST_OPTION_RANGE("width_mult", DSHOST_OPTION_FLOAT, "1.0", 0.1, 4.0,
                        "channel multiplier (0.35 to 1.4 in the paper)"),
    DSHOST_OPTION_RANGE("dropout", DSHOST_OPTION_FLOAT, "0.2", 0.0, 0.95,
                        "dropout before the classifier"),
};

}  // namespace

DSHOST_MODEL_PLUGIN(dshost_models::mobilenet::MobileNetV2, "mobilenet_v2", "1.0.0",
                    "torchvision's MobileNetV2", kOptions, sizeof(kOptions) / sizeof(kOptions[0]))
