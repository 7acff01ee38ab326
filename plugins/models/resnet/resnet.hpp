// torchvision's ResNet (v1.5: a bottleneck's stride on its 3x3 conv) at depth 18 or 50.
// Units: stem (7x7 conv, bn, relu, max-pool), each residual block, head (pool, fc).
// The class lives in this header so that the ensemble can build it as a member.
#pragma once

#include "../common/image.hpp"

#include <regex>
#include <string>

namespace dshost_models::resnet {

struct Depth {
  bool bottleneck;
  int blocks[4];
};
constexpr Depth kResNet18{false, {2, 2, 2, 2}};
constexpr Depth kResNet50{true, {3, 4, 6, 3}};

class ResNet : public ImageModel {
 public:
  ResNet(const dshost::Services& s, Depth depth) : ImageModel(s), depth_(depth) {
    const int64_t width = s.get_int("width");
    Chain stem = stack_.conv_bn(width, 7, 2, Act::relu);
    stem->push_back(stack_.max_pool(3, 2, 1));  // after the conv: the stack follows the order
    add_unit("stem", stem);
    for (int stage = 0; stage < 4; ++stage)
      for (int b = 0; b < depth_.blocks[stage]; ++b)
        add_unit("layer" + std::to_string(stage + 1) + "_" + std::to_string(b),
                 block(width << stage, b == 0 && stage > 0 ? 2 : 1));
    const int64_t features = stack_.channels();
    add_unit("head", Chain(stack_.pool_flatten(), stack_.linear(features, spec_.classes)));
  }

  // torchvision's names: the stem's conv and batch norm are conv1 and bn1, block B of stage S
  // is layerS.B with its convs and batch norms conv1.. and bn1.. and its projection
  // downsample.0 and .1, the head's linear layer fc.
  std::string export_name(const std::string& name) const override {
    static const std::regex stem(R"(stem\.(\d)\.(.*))"), head(R"(head\.1\.(.*))"),
        main(R"(layer(\d)_(\d+)\.main\.(\d)\.(\d)\.(.*))"),
        shortcut(R"(layer(\d)_(\d+)\.shortcut\.(\d\..*))");
    std::smatch m;
    if (std::regex_match(name, m, stem)) return (m[1] == "0" ? "conv1." : "bn1.") + m[2].str();
    if (std::regex_match(name, m, head)) return "fc." + m[1].str();
    if (std::regex_match(name, m, main))
      return "layer" + m[1].str() + "." + m[2].str() + (m[4] == "0" ? ".conv" : ".bn") +
             std::to_string(std::stoi(m[3].str()) + 1) + "." + m[5].str();
    if (std::regex_match(name, m, shortcut))
      return "layer" + m[1].str() + "." + m[2].str() + ".downsample." + m[3].str();
    return name;
  }

 private:
  // A basic block (two 3x3 convs) or a bottleneck (1x1 down to `planes`, 3x3, 1x1 up to
  // 4 x planes); a 1x1 projection shortcut where the shape changes.
  Residual block(int64_t planes, int64_t stride) {
    const int64_t in = stack_.channels(), in_size = stack_.size();
    Chain main;
    if (depth_.bottleneck) {
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

  const Depth depth_;
};

}  // namespace dshost_models::resnet
