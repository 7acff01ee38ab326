// A model plugin whose create fails, as a model with a bad configuration would.
#include <dshost/model.hpp>

namespace {

class FailingModel : public dshost::Model {
 public:
  explicit FailingModel(const dshost::Services& s) : Model(s) {
    throw dshost::Error("failing_model refuses to build: this plugin exists to test errors");
  }
  std::vector<int64_t> input_shape() const override { return {1, 28, 28}; }
};

}  // namespace

DSHOST_MODEL_PLUGIN(FailingModel, "failing_model", "0.0.1", "a model whose create fails",
                    nullptr, 0)
