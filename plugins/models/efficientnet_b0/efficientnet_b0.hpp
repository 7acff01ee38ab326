// efficientnet_b0: torchvision's EfficientNet-B0 (MBConv blocks with squeeze-excitation and
// SiLU, stochastic depth rising linearly to 0.2 over the blocks).
// Units: stem (3x3 conv), each MBConv block, the last 1x1 conv, head.
// The class lives in this header so that the ensemble can build it as a member.
#pragma once

#include "../common/image.hpp"
#include "../common/squeeze_excitation.hpp"

#include <cmath>
#include <iterator>
#include <regex>
#include <string>
#include <vector>

namespace dshost_models::efficientnet {

struct Stage {
  int64_t expand, kernel, stride, channels, blocks;
};
constexpr int64_t kStemChannels = 32;
constexpr Stage kStages[] = {{1, 3, 1, 16, 1}, {6, 3, 2, 24, 2},  {6, 5, 2, 40, 2},
                             {6, 3, 2, 80, 3}, {6, 5, 1, 112, 3}, {6, 5, 2, 192, 4},
                             {6, 3, 1, 320, 1}};

class EfficientNetB0 : public ImageModel {
 public:
  explicit EfficientNetB0(const dshost::Services& s) : ImageModel(s) {
    const double width = s.get_float("width_mult"), depth = s.get_float("depth_mult");
    const double drop_path = s.get_float("stochastic_depth");
    add_unit("stem", stack_.conv_bn(round_channels(kStemChannels * width), 3, 2, Act::silu));
    int64_t total = 0;
    for (const Stage& st : kStages) total += static_cast<int64_t>(std::ceil(st.blocks * depth));
    int64_t index = 0;
    for (size_t stage = 0; stage < std::size(kStages); ++stage) {
      const Stage& st = kStages[stage];
      for (int64_t b = 0, n = static_cast<int64_t>(std::ceil(st.blocks * depth)); b < n;
           ++b, ++index) {
        add_mbconv("block" + std::to_string(index + 1), st, round_channels(st.channels * width),
                   b == 0 ? st.stride : 1, drop_path * index / total);
        block_places_.push_back(std::to_string(stage + 1) + "." + std::to_string(b));
      }
    }
    const int64_t last = 4 * stack_.channels();
    add_unit("last_conv", stack_.conv_bn(last, 1, 1, Act::silu));
    add_unit("head", Chain(stack_.pool_flatten(), nn::Dropout(s.get_float("dropout")),
                           stack_.linear(last, spec_.classes)));
  }

  // torchvision's names: features.0 the stem, features.S.B block B of stage S (its layers
  // under .block), features.<stages + 1> the last conv, classifier.1 the linear layer.
  std::string export_name(const std::string& name) const override {
    static const std::regex stem(R"(stem\.(.*))"), last_conv(R"(last_conv\.(.*))"),
        head(R"(head\.2\.(.*))"), block(R"(block(\d+)\.(?:main\.)?(.*))");
    std::smatch m;
    if (std::regex_match(name, m, stem)) return "features.0." + m[1].str();
    if (std::regex_match(name, m, last_conv))
      return "features." + std::to_string(std::size(kStages) + 1) + "." + m[1].str();
    if (std::regex_match(name, m, head)) return "classifier.1." + m[1].str();
    if (std::regex_match(name, m, block))
      return "features." + block_places_.at(std::stoi(m[1].str()) - 1) + ".block." + m[2].str();
    return name;
  }

 private:
  // 1x1 expansion (when expand > 1), k x k depthwise, squeeze-excitation (to a quarter of
  // the block's input channels), 1x1 linear projection; a residual with stochastic depth
  // when the shape stays.
  void add_mbconv(const std::string& name, const Stage& st, int64_t out, int64_t stride,
                  double drop_path) {
    const int64_t in = stack_.channels(), hidden = round_channels(in * st.expand);
    Chain main;
    if (hidden != in) main->push_back(stack_.conv_bn(hidden, 1, 1, Act::silu));
    main->push_back(stack_.conv_bn(hidden, st.kernel, stride, Act::silu, /*groups=*/hidden));
    const int64_t squeeze = std::max<int64_t>(1, in / 4);
    main->push_back(SqueezeExcitation(hidden, squeeze));
    stack_.add_flops(4 * hidden * squeeze + hidden * stack_.size() * stack_.size());
    main->push_back(stack_.conv_bn(out, 1, 1, Act::none));
    if (stride == 1 && in == out)
      add_unit(name, Residual(main, Chain(), false, drop_path));
    else
      add_unit(name, main);
  }

  std::vector<std::string> block_places_;  // [block - 1]: "S.B", its torchvision stage and index
};

}  // namespace dshost_models::efficientnet
