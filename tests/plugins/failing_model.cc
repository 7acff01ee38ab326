// A model plugin that fails where the manifest says: in create (as a model with a bad
// configuration would, by throwing dshost::Error), in forward (a LibTorch error thrown from
// deep inside a call, backtrace and all, as a shape bug would raise it), on rank 1 alone at
// its third forward (the other ranks are left waiting in their collectives), or by issuing
// a collective whose size differs between ranks (a plugin that communicates differently on
// different ranks); or whose outputs are NaN in its third training forward, or in every one
// from the third on (a diverging model). Its first `slow_forwards` training forwards each
// take a tenth of a second longer (a slow start, as cuDNN's autotuning makes one). Where
// `teardown_waits_for` names a file, its destruction waits until that file exists (at most
// two minutes): a teardown that hangs.
#include <dshost/model.hpp>

#ifndef PLUGIN_NAME  // (tests/CMakeLists.txt builds it again against the frozen ABI 1.4 SDK)
#define PLUGIN_NAME "failing_model"
#endif

#include <torch/nn/modules/linear.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <thread>

namespace {

const dshost_option kOptions[] = {
    DSHOST_OPTION("fail_in", DSHOST_OPTION_STRING, "\"create\"",
                  "never|create|forward|rank1_forward|mismatched_collective|nan_third_forward|nan_"
                  "from_third_forward",
                  "where to fail"),
    DSHOST_OPTION_RANGE("slow_forwards", DSHOST_OPTION_INT, "0", 0, 1000,
                        "the first N training forwards each sleep 0.1 s"),
    DSHOST_OPTION("teardown_waits_for", DSHOST_OPTION_STRING, "\"\"", nullptr,
                  "a file the model's destruction waits for (at most 120 s)"),
};

class FailingModel : public dshost::Model {
 public:
  explicit FailingModel(const dshost::Services& s)
      : Model(s),
        fail_in_(s.get_string("fail_in")),
        slow_forwards_(s.get_int("slow_forwards")),
        teardown_waits_for_(s.get_string("teardown_waits_for")) {
    if (fail_in_ == "create")
      throw dshost::Error("failing_model refuses to build: this plugin exists to test errors");
    // forward: 27 features where the data has 784
    add_unit("fc", torch::nn::Linear(fail_in_ == "forward" ? 27 : 784, 10));
  }
  ~FailingModel() override {
    if (teardown_waits_for_.empty()) return;
    for (int i = 0; i < 1200 && !std::filesystem::exists(teardown_waits_for_); ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  std::vector<int64_t> input_shape() const override { return {1, 28, 28}; }
  at::Tensor forward(const at::Tensor& input) override {
    if (is_training() && ++forwards_ == 3) fail_on_purpose();
    if (is_training() && forwards_ <= slow_forwards_)
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    const at::Tensor logits = run_unit(0, input.flatten(1));
    const bool nan =
        is_training() &&
        (fail_in_ == "nan_third_forward" ? forwards_ == 3
                                         : fail_in_ == "nan_from_third_forward" && forwards_ >= 3);
    return nan ? logits * std::nan("") : logits;
  }

 private:
  void fail_on_purpose() {
    const dshost::Services& s = services();
    if (fail_in_ == "rank1_forward" && s.rank() == 1)
      throw dshost::Error("failing_model fails on rank 1 on purpose");
    if (fail_in_ == "mismatched_collective") {
      const at::Tensor buffer = at::ones({(s.rank() + 1) * 100000});
      const int32_t id = s.register_buffer(dshost::to_dlpack(buffer));
      s.all_reduce(dshost::slice(id, 0, buffer.numel()), DSHOST_SUM).wait();
    }
  }

  const std::string fail_in_;
  const int64_t slow_forwards_;
  const std::string teardown_waits_for_;
  int64_t forwards_ = 0;
};

}  // namespace

DSHOST_MODEL_PLUGIN(FailingModel, PLUGIN_NAME, "0.0.1", "a model that fails on purpose", kOptions,
                    sizeof(kOptions) / sizeof(kOptions[0]))
