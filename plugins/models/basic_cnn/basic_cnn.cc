// basic_cnn: the guide's basic CNN. Two 3x3 conv + ReLU + 2x2 max-pool stages and two
// fully connected layers, for small grey or colour images (Fashion-MNIST by default).
// Units: conv1, conv2, fc1, fc2 (one per layer group), so every strategy can shard it.
#include <dshost/model.hpp>

#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/pooling.h>

namespace nn = torch::nn;

namespace {

const dshost_option kOptions[] = {
    DSHOST_OPTION_RANGE("in_channels", DSHOST_OPTION_INT, "1", 1, 64, "input image channels"),
    DSHOST_OPTION_RANGE("image_size", DSHOST_OPTION_INT, "28", 4, 4096,
                        "input height = width, a multiple of 4"),
    DSHOST_OPTION_RANGE("num_classes", DSHOST_OPTION_INT, "10", 2, 100000, "output classes"),
    DSHOST_OPTION_RANGE("width", DSHOST_OPTION_INT, "32", 1, 4096,
                        "filters of conv1; conv2 has twice as many"),
    DSHOST_OPTION_RANGE("hidden", DSHOST_OPTION_INT, "128", 1, 65536, "units of fc1"),
    DSHOST_OPTION_RANGE("dropout", DSHOST_OPTION_FLOAT, "0.0", 0.0, 0.95,
                        "dropout probability before fc2"),
    DSHOST_OPTION("channels_last", DSHOST_OPTION_BOOL, "true", nullptr,
                  "keep convolutions channels-last (NHWC): faster with oneDNN and cuDNN"),
};

class BasicCnn : public dshost::Model {
 public:
  explicit BasicCnn(const dshost::Services& s)
      : Model(s),
        channels_(s.get_int("in_channels")),
        size_(s.get_int("image_size")),
        classes_(s.get_int("num_classes")),
        width_(s.get_int("width")),
        hidden_(s.get_int("hidden")),
        channels_last_(s.get_bool("channels_last")) {
    if (size_ % 4 != 0)
      throw dshost::Error("model.image_size = " + std::to_string(size_) +
                          " is not a multiple of 4 (two 2x2 poolings); use 28 or 32, say");
    add_unit("conv1", conv_stage(channels_, width_));
    add_unit("conv2", conv_stage(width_, 2 * width_));
    add_unit("fc1", nn::Sequential(nn::Flatten(), nn::Linear(flat_features(), hidden_), nn::ReLU(),
                                   nn::Dropout(s.get_float("dropout"))));
    add_unit("fc2", nn::Linear(hidden_, classes_));
  }

  std::vector<int64_t> input_shape() const override { return {channels_, size_, size_}; }
  bool channels_last() const override { return channels_last_; }

  // Per unit: the two 3x3 convolutions (the second at half resolution), fc1, fc2.
  int64_t unit_forward_flops(int unit) const override {
    const int64_t flops[] = {2 * 9 * channels_ * width_ * size_ * size_,
                             2 * 9 * width_ * 2 * width_ * (size_ / 2) * (size_ / 2),
                             2 * flat_features() * hidden_, 2 * hidden_ * classes_};
    return flops[unit];
  }
  int64_t forward_flops_per_sample() const override {
    int64_t total = 0;
    for (int u = 0; u < 4; ++u) total += unit_forward_flops(u);
    return total;
  }

 private:
  static nn::Sequential conv_stage(int64_t in, int64_t out) {
    return nn::Sequential(nn::Conv2d(nn::Conv2dOptions(in, out, 3).padding(1)), nn::ReLU(),
                          nn::MaxPool2d(2));
  }
  int64_t flat_features() const { return 2 * width_ * (size_ / 4) * (size_ / 4); }

  int64_t channels_, size_, classes_, width_, hidden_;
  bool channels_last_;
};

}  // namespace

DSHOST_MODEL_PLUGIN(BasicCnn, "basic_cnn", "1.0.0",
                    "the guide's basic CNN: 2 conv + pool stages, 2 fully connected layers",
                    kOptions, sizeof(kOptions) / sizeof(kOptions[0]))
