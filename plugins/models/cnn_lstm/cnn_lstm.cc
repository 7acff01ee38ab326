// cnn_lstm: the guide's CNN-LSTM image classifier. Two convolution stages extract a feature
// map, an LSTM reads it as a sequence, a linear layer classifies the LSTM's last output.
//
// The sequence is the feature map's rows, top to bottom: an image of [C, S, S] becomes
// [2 x width, S/4, S/4] after the two stages (each conv, batch norm, ReLU, 2x2 max-pool), so
// the LSTM takes S/4 steps, step t seeing row t of every channel (2 x width x S/4 values).
// Units: features (both stages), lstm (all its layers), head.
#include "../common/image.hpp"

#include <torch/nn/modules/rnn.h>

#include <tuple>

namespace {

using namespace dshost_models;

const dshost_option kOptions[] = {
    DSHOST_IMAGE_MODEL_OPTIONS,
    DSHOST_OPTION_RANGE("width", DSHOST_OPTION_INT, "32", 1, 4096,
                        "channels of the first stage (the second has twice as many)"),
    DSHOST_OPTION_RANGE("hidden", DSHOST_OPTION_INT, "256", 1, 65536, "LSTM hidden size"),
    DSHOST_OPTION_RANGE("lstm_layers", DSHOST_OPTION_INT, "2", 1, 16, "stacked LSTM layers"),
    DSHOST_OPTION_RANGE("dropout", DSHOST_OPTION_FLOAT, "0.2", 0.0, 0.95,
                        "dropout between LSTM layers and before the classifier"),
};

// [B, C, H, W] feature maps read row by row: [B, H, C x W] into the LSTM, the output of
// its last step [B, hidden] out.
struct RowsLstmImpl : nn::Module {
  RowsLstmImpl(int64_t step_input, int64_t hidden, int64_t layers, double dropout)
      : lstm(register_module("lstm", nn::LSTM(nn::LSTMOptions(step_input, hidden)
                                                  .num_layers(layers)
                                                  .batch_first(true)
                                                  .dropout(layers > 1 ? dropout : 0.0)))) {}
  at::Tensor forward(const at::Tensor& x) {
    const at::Tensor rows =
        x.permute({0, 2, 1, 3}).reshape({x.size(0), x.size(2), x.size(1) * x.size(3)});
    return std::get<0>(lstm->forward(rows)).select(1, -1);
  }
  nn::LSTM lstm;
};
TORCH_MODULE(RowsLstm);

class CnnLstm : public ImageModel {
 public:
  explicit CnnLstm(const dshost::Services& s) : ImageModel(s) {
    const int64_t width = s.get_int("width"), hidden = s.get_int("hidden");
    const int64_t layers = s.get_int("lstm_layers");
    const double dropout = s.get_float("dropout");
    Chain features;
    for (int64_t channels : {width, 2 * width}) {
      features->push_back(stack_.conv_bn(channels, 3, 1, Act::relu));
      features->push_back(stack_.max_pool(2, 2));
    }
    add_unit("features", features);
    const int64_t steps = stack_.size(), step_input = stack_.channels() * stack_.size();
    // Per step and layer, the four gates: [4 hidden, input + hidden] times [input + hidden].
    for (int64_t l = 0; l < layers; ++l)
      stack_.add_flops(steps * 2 * 4 * hidden * ((l == 0 ? step_input : hidden) + hidden));
    add_unit("lstm", RowsLstm(step_input, hidden, layers, dropout));
    add_unit("head", Chain(nn::Dropout(dropout), stack_.linear(hidden, spec_.classes)));
  }
};

}  // namespace

DSHOST_MODEL_PLUGIN(
    CnnLstm, "cnn_lstm", "1.0.0",
    "the guide's CNN-LSTM: conv stages, an LSTM over the feature map's rows, a classifier",
    kOptions, sizeof(kOptions) / sizeof(kOptions[0]))
