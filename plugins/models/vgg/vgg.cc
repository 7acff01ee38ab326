// vgg11 / vgg16: torchvision's VGG (configurations A and D), with or without batch norm.
// Units: each stage of 3x3 convs ending in a max-pool, then the classifier's three layers
// (fc1 alone holds 103M of vgg16's 138M parameters, so it is a unit of its own).
// Built twice, as dshost_model_vgg11.so and dshost_model_vgg16.so (VGG_DEPTH).
#include "../common/image.hpp"

#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/batchnorm.h>

#include <regex>
#include <string>

namespace {

using namespace dshost_models;

#if VGG_DEPTH == 11
constexpr int kConvsPerStage[5] = {1, 1, 2, 2, 2};
#define VGG_NAME "vgg11"
#elif VGG_DEPTH == 16
constexpr int kConvsPerStage[5] = {2, 2, 3, 3, 3};
#define VGG_NAME "vgg16"
#else
#error "VGG_DEPTH must be 11 or 16"
#endif

const dshost_option kOptions[] = {
    DSHOST_IMAGE_MODEL_OPTIONS,
    DSHOST_OPTION("batch_norm", DSHOST_OPTION_BOOL, "false", nullptr,
                  "batch norm after each conv (torchvision's " VGG_NAME "_bn)"),
    DSHOST_OPTION_RANGE("dropout", DSHOST_OPTION_FLOAT, "0.5", 0.0, 0.95,
                        "dropout after fc1 and fc2"),
};

class Vgg : public ImageModel {
 public:
  explicit Vgg(const dshost::Services& s) : ImageModel(s), bn_(s.get_bool("batch_norm")) {
    const double dropout = s.get_float("dropout");
    for (int stage = 0; stage < 5; ++stage) {
      const int64_t channels = std::min<int64_t>(64 << stage, 512);
      Chain seq;
      for (int c = 0; c < kConvsPerStage[stage]; ++c) {
        if (bn_) {
          seq->push_back(stack_.conv(channels, 3, 1, 1, /*bias=*/true));  // biased even with bn
          seq->push_back(nn::BatchNorm2d(channels));
          seq->push_back(nn::ReLU(nn::ReLUOptions().inplace(true)));
        } else {
          seq->push_back(stack_.conv_relu(channels, 3));
          seq->push_back(nn::Identity());  // (the ReLU, in conv_relu; torchvision's indices kept)
        }
      }
      seq->push_back(stack_.max_pool2x2());
      add_unit("stage" + std::to_string(stage + 1), seq);
    }
    if (stack_.size() < 1)
      throw dshost::Error("model.image_size = " + std::to_string(spec_.size) +
                          " is too small for " + VGG_NAME +
                          ", which halves it five times; use 32 or more");
    // The classifier sees a 7 x 7 map whatever the input size (adaptive pooling).
    const int64_t features = stack_.channels() * 7 * 7;
    add_unit("fc1", Chain(nn::AdaptiveAvgPool2d(nn::AdaptiveAvgPool2dOptions(7)), nn::Flatten(),
                          stack_.linear(features, 4096), nn::ReLU(nn::ReLUOptions().inplace(true)),
                          nn::Dropout(dropout)));
    add_unit("fc2", Chain(stack_.linear(4096, 4096), nn::ReLU(nn::ReLUOptions().inplace(true)),
                          nn::Dropout(dropout)));
    add_unit("fc3", stack_.linear(4096, spec_.classes));
  }

  // torchvision's names: every layer of the five stages numbered in turn under features
  // (conv, [batch norm,] relu, ..., max-pool), the three linear layers classifier.0, .3, .6.
  std::string export_name(const std::string& name) const override {
    static const std::regex stage(R"(stage(\d)\.(\d+)\.(.*))"), fc(R"(fc(\d)\.(?:\d\.)?(.*))");
    std::smatch m;
    if (std::regex_match(name, m, stage)) {
      int index = std::stoi(m[2].str());
      for (int s = 0; s + 1 < std::stoi(m[1].str()); ++s)
        index += kConvsPerStage[s] * (bn_ ? 3 : 2) + 1;
      return "features." + std::to_string(index) + "." + m[3].str();
    }
    if (std::regex_match(name, m, fc))
      return "classifier." + std::to_string(3 * (std::stoi(m[1].str()) - 1)) + "." + m[2].str();
    return name;
  }

 private:
  const bool bn_;
};

}  // namespace

DSHOST_MODEL_PLUGIN(Vgg, VGG_NAME, "1.0.0", "torchvision's " VGG_NAME ", batch norm optional",
                    kOptions, sizeof(kOptions) / sizeof(kOptions[0]))
