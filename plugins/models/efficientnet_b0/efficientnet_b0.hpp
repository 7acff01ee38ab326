// efficientnet_b0: torchvision's EfficientNet-B0 (MBConv blocks with squeeze-excitation and
// SiLU, stochastic depth rising linearly to 0.2 over the blocks).
// Units: stem (3x3 conv), each MBConv block, the last 1x1 conv, head.
// The class lives in this header so that the ensemble can build it as a member.
#pragma once

#include "../common/image.hpp"

#include <cmath>

namespace dshost_models::efficientnet {

struct Stage {
  int64_t expand, kernel, stride, channels, blocks;
};
constexpr int64_t kStemChannels = 32;
constexpr Stage kStages[] = {{1, 3, 1, 16, 1}, {6, 3, 2, 24, 2},  {6, 5, 2, 40, 2},
                             {6, 3, 2, 80, 3}, {6, 5, 1, 112, 3}, {6, 5, 2, 192, 4},
                             {6, 3, 1, 320, 1}};

// Squeeze-excitation: x * sigmoid(fc2(silu(fc1(mean over space of x)))), fc as 1x1 convs.
struct SqueezeExcitationImpl : nn::Module {
  SqueezeExcitationImpl(int64_t channels, int64_t squeeze)
      : fc1(register_module("fc1", nn::Conv2d(nn::Conv2dOptions(channels, squeeze, 1)))),
        fc2(register_module("fc2", nn::Conv2d(nn::Conv2dOptions(squeeze, channels, 1)))) {}
  at::Tensor forward(const at::Tensor& x) {
    const at::Tensor scale = fc2->forward(at::silu(fc1->forward(x.mean({2, 3}, true)))).sigmoid();
    return x * scale;
  }
  nn::Conv2d fc1, fc2;
};
TORCH_MODULE(SqueezeExcitation);

class EfficientNetB0 : public ImageModel {
 public:
  explicit EfficientNetB0(const dshost::Services& s) : ImageModel(s) {
    const double width = s.get_float("width_mult"), depth = s.get_float("depth_mult");
    const double drop_path = s.get_float("stochastic_depth");
    add_unit("stem", stack_.conv_bn(round_channels(kStemChannels * width), 3, 2, Act::silu));
    int64_t total = 0;
    for (const Stage& st : kStages) total += static_cast<int64_t>(std::ceil(st.blocks * depth));
    int64_t index = 0;
    for (const Stage& st : kStages)
      for (int64_t b = 0, n = static_cast<int64_t>(std::ceil(st.blocks * depth)); b < n;
           ++b, ++index)
        add_mbconv("block" + std::to_string(index + 1), st, round_channels(st.channels * width),
                   b == 0 ? st.stride : 1, drop_path * index / total);
    const int64_t last = 4 * stack_.channels();
    add_unit("last_conv", stack_.conv_bn(last, 1, 1, Act::silu));
    add_unit("head", Chain(stack_.pool_flatten(), nn::Dropout(s.get_float("dropout")),
                           stack_.linear(last, spec_.classes)));
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
};

}  // namespace dshost_models::efficientnet
