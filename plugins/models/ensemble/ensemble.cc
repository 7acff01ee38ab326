// ensemble: the guide's ensemble, several image models trained as one, their logits
// averaged. Members are named in the manifest (members = "mobilenet_v2,efficientnet_b0,
// resnet18"); each is the zoo's own model class, built with the ensemble's options (the
// image ones, and each member's own keys where it has them), and contributes its units,
// named MEMBER.UNIT, so every strategy shards the ensemble unit by unit.
#include "../efficientnet_b0/efficientnet_b0.hpp"
#include "../mobilenet_v2/mobilenet_v2.hpp"
#include "../resnet/resnet.hpp"

#include <map>
#include <memory>
#include <numeric>

namespace {

using namespace dshost_models;

const dshost_option kOptions[] = {
    DSHOST_IMAGE_MODEL_OPTIONS,
    DSHOST_OPTION(
        "members", DSHOST_OPTION_STRING, "\"mobilenet_v2,efficientnet_b0,resnet18\"", nullptr,
        "comma-separated: mobilenet_v2, efficientnet_b0, resnet18, resnet50 (repeats allowed)"),
    DSHOST_OPTION_RANGE("width_mult", DSHOST_OPTION_FLOAT, "1.0", 0.1, 4.0,
                        "mobilenet_v2 and efficientnet_b0: channel multiplier"),
    DSHOST_OPTION_RANGE("depth_mult", DSHOST_OPTION_FLOAT, "1.0", 0.1, 4.0,
                        "efficientnet_b0: blocks-per-stage multiplier"),
    DSHOST_OPTION_RANGE("stochastic_depth", DSHOST_OPTION_FLOAT, "0.2", 0.0, 0.95,
                        "efficientnet_b0: drop probability of the last block's branch"),
    DSHOST_OPTION_RANGE("width", DSHOST_OPTION_INT, "64", 1, 4096,
                        "resnet: channels of the first stage"),
    DSHOST_OPTION_RANGE("dropout", DSHOST_OPTION_FLOAT, "0.2", 0.0, 0.95,
                        "mobilenet_v2 and efficientnet_b0: dropout before the classifier"),
};

class Ensemble : public ImageModel {
 public:
  explicit Ensemble(const dshost::Services& s) : ImageModel(s) {
    for (const std::string& name : dshost::split(s.get_string("members"), ',')) add_member(name, s);
    if (members_.size() < 2)
      throw dshost::Error(
          "ensemble: members = \"" + s.get_string("members") + "\" names " +
              std::to_string(members_.size()) +
              " model(s); an ensemble needs two or more, e.g. \"mobilenet_v2,resnet18\"",
          DSHOST_INVALID_ARGUMENT);
  }

  // Each member on the same input, unit by unit; the mean of their logits.
  at::Tensor forward(const at::Tensor& input) override {
    at::Tensor sum;
    size_t unit = 0;
    for (const Member& m : members_) {
      at::Tensor x = input;
      for (size_t k = 0; k < m.model->units().size(); ++k) x = run_unit(unit++, x);
      sum = sum.defined() ? sum + x : x;
    }
    return sum / static_cast<double>(members_.size());
  }

  int64_t forward_flops_per_sample() const override {
    int64_t total = 0;
    for (const Member& m : members_) total += m.model->forward_flops_per_sample();
    return total;
  }
  int64_t unit_forward_flops(int unit) const override {
    for (const Member& m : members_) {
      const int units = static_cast<int>(m.model->units().size());
      if (unit < units) return m.model->unit_forward_flops(unit);
      unit -= units;
    }
    return 0;
  }
  // MEMBER.NAME: the member's own export name under its prefix (torchvision's for
  // mobilenet_v2), so one member's weights load into its torchvision model.
  std::string export_name(const std::string& name) const override {
    for (const Member& m : members_)
      if (name.rfind(m.prefix + ".", 0) == 0)
        return m.prefix + "." + m.model->export_name(name.substr(m.prefix.size() + 1));
    return name;
  }

 private:
  struct Member {
    std::string prefix;
    std::shared_ptr<dshost::Model> model;
  };

  void add_member(const std::string& name, const dshost::Services& s) {
    std::shared_ptr<dshost::Model> model;
    if (name == "mobilenet_v2")
      model = std::make_shared<mobilenet::MobileNetV2>(s);
    else if (name == "efficientnet_b0")
      model = std::make_shared<efficientnet::EfficientNetB0>(s);
    else if (name == "resnet18")
      model = std::make_shared<resnet::ResNet>(s, resnet::kResNet18);
    else if (name == "resnet50")
      model = std::make_shared<resnet::ResNet>(s, resnet::kResNet50);
    else
      throw dshost::Error("ensemble: unknown member '" + name +
                              "'; members can be mobilenet_v2, efficientnet_b0, resnet18, resnet50",
                          DSHOST_INVALID_ARGUMENT);
    const int repeat = ++seen_[name];
    const std::string prefix = repeat == 1 ? name : name + "_" + std::to_string(repeat);
    register_module(prefix, model);
    add_units_of(prefix, *model);
    members_.push_back({prefix, model});
  }

  std::vector<Member> members_;
  std::map<std::string, int> seen_;  // members of each name so far
};

}  // namespace

DSHOST_MODEL_PLUGIN(Ensemble, "ensemble", "1.0.0",
                    "the guide's ensemble: zoo models on the same input, logits averaged", kOptions,
                    sizeof(kOptions) / sizeof(kOptions[0]))
