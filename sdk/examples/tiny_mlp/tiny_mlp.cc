// tiny_mlp: a multilayer perceptron for 28x28 grey images (Fashion-MNIST), as a model plugin
// built against the installed dshost SDK alone. Two units, hidden and head: a strategy may
// shard, gather and free each on its own.
#include <dshost/model.hpp>

#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/linear.h>

namespace nn = torch::nn;

namespace {

// The keys of the manifest's [model] section; the host validates them before any code here
// runs and fills in the defaults.
const dshost_option kOptions[] = {
    DSHOST_OPTION_RANGE("hidden", DSHOST_OPTION_INT, "256", 1, 65536, "units of the hidden layer"),
};

class TinyMlp : public dshost::Model {
 public:
  explicit TinyMlp(const dshost::Services& s) : Model(s), hidden_(s.get_int("hidden")) {
    add_unit("hidden", nn::Sequential(nn::Flatten(), nn::Linear(kPixels, hidden_), nn::ReLU()));
    add_unit("head", nn::Linear(hidden_, kClasses));
  }

  std::vector<int64_t> input_shape() const override { return {1, 28, 28}; }
  int64_t forward_flops_per_sample() const override {
    return 2 * (kPixels * hidden_ + hidden_ * kClasses);
  }

 private:
  static constexpr int64_t kPixels = 28 * 28, kClasses = 10;
  const int64_t hidden_;
};

}  // namespace

DSHOST_MODEL_PLUGIN(TinyMlp, "tiny_mlp", "1.0.0", "a one-hidden-layer perceptron for 28x28 images",
                    kOptions, sizeof(kOptions) / sizeof(kOptions[0]))
