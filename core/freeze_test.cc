// model.freeze's split of the model's parameters (core/freeze.h).
#include <dshost/torch.hpp>  // first: ATen's DLPack

#include "core/error.h"
#include "core/freeze.h"

#include <gtest/gtest.h>

namespace dshost {
namespace {

// basic_cnn's parameters by their exported names: [unit][index].
std::vector<std::vector<TensorLayout>> basic_cnn() {
  std::vector<std::vector<TensorLayout>> units;
  for (const char* unit : {"conv1.0", "conv2.0", "fc1.1", "fc2"}) {
    units.emplace_back();
    for (const char* kind : {"weight", "bias"}) {
      const std::string name = cat(unit, ".", kind);
      units.back().push_back({name, {2}, {0}, name});
    }
  }
  return units;
}

std::vector<std::pair<int32_t, int32_t>> pairs(const std::vector<ParamRef>& refs) {
  std::vector<std::pair<int32_t, int32_t>> out;
  for (const ParamRef& r : refs) out.emplace_back(r.unit, r.index);
  return out;
}

std::string refusal(const std::string& freeze) {
  try {
    place_params(basic_cnn(), freeze, "m.toml:3:10");
  } catch (const UserError& e) {
    EXPECT_EQ(e.exit_code(), 2);
    return e.what();
  }
  ADD_FAILURE() << "model.freeze = \"" << freeze << "\" was taken";
  return "";
}

TEST(ParamPlacement, NothingFrozenGivesTheStrategyEveryUnitAsItIs) {
  const ParamPlacement p = place_params(basic_cnn(), "", "m.toml:3:10");
  EXPECT_TRUE(p.frozen.empty());
  EXPECT_EQ(p.strategy_unit, (std::vector<int32_t>{0, 1, 2, 3}));
  ASSERT_EQ(p.trained.size(), 4u);
  EXPECT_EQ(pairs(p.trained[2]), (std::vector<std::pair<int32_t, int32_t>>{{2, 0}, {2, 1}}));
}

// A unit frozen whole leaves the strategy's units; one frozen in part keeps its others.
TEST(ParamPlacement, FrozenUnitsLeaveTheStrategyAndTheRestAreRenumbered) {
  const ParamPlacement p = place_params(basic_cnn(), "conv*, fc1.1.bias", "m.toml:3:10");
  EXPECT_EQ(pairs(p.frozen),
            (std::vector<std::pair<int32_t, int32_t>>{{0, 0}, {0, 1}, {1, 0}, {1, 1}, {2, 1}}));
  EXPECT_EQ(p.strategy_unit, (std::vector<int32_t>{-1, -1, 0, 1}));
  ASSERT_EQ(p.trained.size(), 2u);
  EXPECT_EQ(pairs(p.trained[0]), (std::vector<std::pair<int32_t, int32_t>>{{2, 0}}));
  EXPECT_EQ(pairs(p.trained[1]), (std::vector<std::pair<int32_t, int32_t>>{{3, 0}, {3, 1}}));
  std::vector<std::vector<std::string>> names;
  for (const auto& unit : trained_layouts(basic_cnn(), p)) {
    names.emplace_back();
    for (const TensorLayout& l : unit) names.back().push_back(l.name);
  }
  EXPECT_EQ(names,
            (std::vector<std::vector<std::string>>{{"fc1.1.weight"}, {"fc2.weight", "fc2.bias"}}));
}

TEST(ParamPlacement, AGlobThatMatchesNothingOrFreezesEverythingIsRefused) {
  EXPECT_EQ(refusal("conv1.*,head.*"),
            "m.toml:3:10: error: model.freeze: \"head.*\" matches none of the model's "
            "parameters: conv1.0.weight, conv1.0.bias, conv2.0.weight, conv2.0.bias, "
            "fc1.1.weight, fc1.1.bias, fc2.weight, fc2.bias; `dshost export` writes them by "
            "these names");
  EXPECT_NE(refusal("*").find("m.toml:3:10: error: model.freeze = \"*\" freezes every parameter "
                              "of the model, leaving nothing to train"),
            std::string::npos);
}

}  // namespace
}  // namespace dshost
