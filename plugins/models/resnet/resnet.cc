// resnet18 / resnet50: torchvision's ResNet (v1.5: a bottleneck's stride on its 3x3 conv).
// Units: stem (7x7 conv, bn, relu, max-pool), each residual block, head (pool, fc).
// Built twice, as dshost_model_resnet18.so and dshost_model_resnet50.so (RESNET_DEPTH).
#include "../common/image.hpp"

namespace {

using namespace dshost_models;

const dshost_option kOptions[] = {
    DSHOST_IMAGE_MODEL_OPTIONS,
    DSHOST_OPTION_RANGE("width", DSHOST_OPTION_INT, "64", 1, 4096,
                        "channels of the first stage (64 in the paper); later stages double"),
};

struct Depth {
  bool bottleneck;
  int blocks[4];
};
#if RESNET_DEPTH == 18
constexpr Depth kDepth{false, {2, 2, 2, 2}};
#define RESNET_NAME "resnet18"
#elif RESNET_DEPTH == 50
constexpr Depth kDepth{true, {3, 4, 6, 3}};
#define RESNET_NAME "resnet50"
#else
#error "RESNET_DEPTH must be 18 or 50"
#endif

class ResNet : public ImageModel {
 public:
  explicit ResNet(const dshost::Services& s) : ImageModel(s) {
    const int64_t width = s.get_int("width");
    Chain stem = stack_.conv_bn(width, 7, 2, Act::relu);
    stem->push_back(stack_.max_pool(3, 2, 1));  // after the conv: the stack follows the order
    add_unit("stem", stem);
    for (int stage = 0; stage < 4; ++stage)
      for (int b = 0; b < kDepth.blocks[stage]; ++b)
        add_unit("layer" + std::to_string(stage + 1) + "_" + std::to_string(b),
                 block(width << stage, b == 0 && stage > 0 ? 2 : 1));
    const int64_t features = stack_.channels();
    add_unit("head", Chain(stack_.pool_flatten(), stack_.linear(features, spec_.classes)));
  }

 private:
  // A basic block (two 3x3 convs) or a bottleneck (1x1 down to `planes`, 3x3, 1x1 up to
  // 4 x planes); a 1x1 projection shortcut where the shape changes.
  Residual block(int64_t planes, int64_t stride) {
    const int64_t in = stack_.channels(), in_size = stack_.size();
    Chain main;
    if (kDepth.bottleneck) {
      main->push_back(stack_.conv_bn(planes, 1, 1, Act::relu));
      main->push_back(stack_.conv_bn(planes, 3, stride, Act::relu));
      main->push_back(stack_.conv_bn(planes * 4, 1, 1, Act::none));
    } else {
      main->push_back(stack_.conv_bn(planes, 3, stride, Act::relu));
      main->push_back(stack_.conv_bn(planes, 3, 1, Act::none));
    }
    Chain shortcut;
    if (stride != 1 || in != stack_.channels()) {
      Stack side(in, in_size);
      shortcut = side.conv_bn(stack_.channels(), 1, stride, Act::none);
      stack_.add_flops(side.flops());
    }
    return Residual(main, shortcut, /*relu_after=*/true);
  }
};

}  // namespace

DSHOST_MODEL_PLUGIN(ResNet, RESNET_NAME, "1.0.0", "torchvision's " RESNET_NAME " (v1.5)", kOptions,
                    sizeof(kOptions) / sizeof(kOptions[0]))
