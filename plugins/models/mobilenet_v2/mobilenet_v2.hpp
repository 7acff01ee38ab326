// mobilenet_v2: torchvision's MobileNetV2 (inverted residuals with linear bottlenecks).
// Units: stem (3x3 conv), each inverted residual block, the last 1x1 conv, head.
// The class lives in this header so that the ensemble can build it as a member.
#pragma once

#include "../common/image.hpp"

#include <regex>

namespace dshost_models::mobilenet {

struct Stage {
  int64_t expand, channels, blocks, stride;
};
constexpr Stage kStages[] = {{1, 16, 1, 1}, {6, 24, 2, 2},  {6, 32, 3, 2}, {6, 64, 4, 2},
                             {6, 96, 3, 1}, {6, 160, 3, 2}, {6, 320, 1, 1}};

class MobileNetV2 : public ImageModel {
 public:
  explicit MobileNetV2(const dshost::Services& s) : ImageModel(s) {
    const double width = s.get_float("width_mult");
    add_unit("stem", stack_.conv_bn(round_channels(32 * width), 3, 2, Act::relu6));
    int index = 1;
    for (const Stage& st : kStages)
      for (int64_t b = 0; b < st.blocks; ++b)
        add_inverted_residual("block" + std::to_string(index++),
                              round_channels(st.channels * width), b == 0 ? st.stride : 1,
                              st.expand);
    const int64_t last = round_channels(1280 * std::max(1.0, width));
    add_unit("last_conv", stack_.conv_bn(last, 1, 1, Act::relu6));
    add_unit("head", Chain(stack_.pool_flatten(), nn::Dropout(s.get_float("dropout")),
                           stack_.linear(last, spec_.classes)));
  }

  // torchvision's names: features.0 the stem, features.N block N (its last conv and batch
  // norm flattened into conv.K and conv.K+1), features.<blocks + 1> the last conv,
  // classifier.1 the linear layer.
  std::string export_name(const std::string& name) const override {
    static const std::regex stem(R"(stem\.(.*))"), last_conv(R"(last_conv\.(.*))"),
        head(R"(head\.2\.(.*))"), block(R"(block(\d+)\.(?:main\.)?(\d+)\.(\d+)\.(.*))");
    std::smatch m;
    if (std::regex_match(name, m, stem)) return "features.0." + m[1].str();
    if (std::regex_match(name, m, last_conv))
      return "features." + std::to_string(block_parts_.size() + 1) + "." + m[1].str();
    if (std::regex_match(name, m, head)) return "classifier.1." + m[1].str();
    if (std::regex_match(name, m, block)) {
      const int index = std::stoi(m[1].str()), part = std::stoi(m[2].str()),
                layer = std::stoi(m[3].str());
      const bool projection = part + 1 == block_parts_.at(index - 1);
      return "features." + m[1].str() + ".conv." +
             (projection ? std::to_string(part + layer) : m[2].str() + "." + m[3].str()) + "." +
             m[4].str();
    }
    return name;
  }

 private:
  // 1x1 expansion (when expand > 1), 3x3 depthwise, 1x1 linear projection; the input is
  // added back when the shape stays.
  void add_inverted_residual(const std::string& name, int64_t out, int64_t stride, int64_t expand) {
    const int64_t in = stack_.channels(), hidden = in * expand;
    Chain main;
    if (expand != 1) main->push_back(stack_.conv_bn(hidden, 1, 1, Act::relu6));
    main->push_back(stack_.conv_bn(hidden, 3, stride, Act::relu6, /*groups=*/hidden));
    main->push_back(stack_.conv_bn(out, 1, 1, Act::none));
    block_parts_.push_back(static_cast<int>(main->size()));
    if (stride == 1 && in == out)
      add_unit(name, Residual(main, Chain(), false));
    else
      add_unit(name, main);
  }

  std::vector<int> block_parts_;  // per block: conv + batch norm pairs in its main path
};

}  // namespace dshost_models::mobilenet
