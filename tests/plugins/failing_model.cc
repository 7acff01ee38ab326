// A model plugin that fails where the manifest says: in create (as a model with a bad
// configuration would, by throwing dshost::Error) or in forward (a LibTorch error thrown
// from deep inside a call, backtrace and all, as a shape bug would raise it).
#include <dshost/model.hpp>

#include <torch/nn/modules/linear.h>

namespace {

const dshost_option kOptions[] = {
    DSHOST_OPTION("fail_in", DSHOST_OPTION_STRING, "\"create\"", "create|forward",
                  "where to fail"),
};

class FailingModel : public dshost::Model {
 public:
  explicit FailingModel(const dshost::Services& s) : Model(s) {
    if (s.get_string("fail_in") == "create")
      throw dshost::Error("failing_model refuses to build: this plugin exists to test errors");
    add_unit("fc", torch::nn::Linear(27, 10));  // expects 27 features; the data has 784
  }
  std::vector<int64_t> input_shape() const override { return {1, 28, 28}; }
  at::Tensor forward(const at::Tensor& input) override {
    return run_unit(0, input.flatten(1));
  }
};

}  // namespace

DSHOST_MODEL_PLUGIN(FailingModel, "failing_model", "0.0.1", "a model that fails on purpose",
                    kOptions, sizeof(kOptions) / sizeof(kOptions[0]))
