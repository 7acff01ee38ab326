// resnet18 / resnet50: torchvision's ResNet, see resnet.hpp.
// Built twice, as dshost_model_resnet18.so and dshost_model_resnet50.so (RESNET_DEPTH).
#include "resnet.hpp"

namespace {

const dshost_option kOptions[] = {
    DSHOST_IMAGE_MODEL_OPTIONS,
    DSHOST_OPTION_RANGE("width", DSHOST_OPTION_INT, "64", 1, 4096,
                        "channels of the first stage (64 in the paper); later stages double"),
};

#if RESNET_DEPTH == 18
#define RESNET_NAME "resnet18"
constexpr auto kDepth = dshost_models::resnet::kResNet18;
#elif RESNET_DEPTH == 50
#define RESNET_NAME "resnet50"
constexpr auto kDepth = dshost_models::resnet::kResNet50;
#else
#error "RESNET_DEPTH must be 18 or 50"
#endif

class ResNetPlugin : public dshost_models::resnet::ResNet {
 public:
  explicit ResNetPlugin(const dshost::Services& s) : ResNet(s, kDepth) {}
};

}  // namespace

DSHOST_MODEL_PLUGIN(ResNetPlugin, RESNET_NAME, "1.0.0", "torchvision's " RESNET_NAME " (v1.5)",
                    kOptions, sizeof(kOptions) / sizeof(kOptions[0]))
