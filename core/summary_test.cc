// The run's summary figures (core/summary.h).
#include <dshost/torch.hpp>  // first: ATen's DLPack

#include "core/summary.h"

#include "core/checkpoint.h"

#include <gtest/gtest.h>

namespace dshost {
namespace {

RunSummary resnet_like() {
  RunSummary s;
  s.samples_per_second = 4000;
  s.forward_flops_per_sample = 4'100'000'000;
  s.units = {{"conv1", 9408, 118'013'952}, {"fc", 2'049'000, 2'048'000}};
  s.peak_tflops = 989.4;
  return s;
}

TEST(Summary, MfuIsThreeForwardsPerSampleAtTheRunsRateOverThePeak) {
  const nlohmann::json j = summary_json(resnet_like());
  EXPECT_DOUBLE_EQ(j["achieved_tflops"].get<double>(), 3 * 4.1e9 * 4000 / 1e12);
  EXPECT_DOUBLE_EQ(j["mfu"].get<double>(), 3 * 4.1e9 * 4000 / 1e12 / 989.4);
  ASSERT_EQ(j["flops_profile"].size(), 2u);
  EXPECT_EQ(j["flops_profile"][0]["unit"], "conv1");
  EXPECT_DOUBLE_EQ(j["flops_profile"][0]["share"].get<double>(), 118'013'952 / 4.1e9);
}

TEST(Summary, TheSteadyRateGivesTheFlopsAndTheWholeRunsRateStaysBeside) {
  RunSummary s = resnet_like();
  s.steady = {8000, 1.6};  // 5000 samples/s after the first window
  const nlohmann::json j = summary_json(s);
  EXPECT_DOUBLE_EQ(j["samples_per_second"].get<double>(), 4000);
  EXPECT_DOUBLE_EQ(j["steady_samples_per_second"].get<double>(), 5000);
  EXPECT_DOUBLE_EQ(j["mfu"].get<double>(), 3 * 4.1e9 * 5000 / 1e12 / 989.4);
  EXPECT_EQ(j["flops_rate"], "steady");
  const std::vector<std::string> lines = summary_lines(s);
  EXPECT_EQ(lines[0],
            "FLOPs: 4.100 GFLOP forward per sample; achieved 61.50 TFLOP/s, MFU 6.2% "
            "at the steady rate");
  EXPECT_NE(lines[1].find("4000 samples/s (steady 5000), "), std::string::npos) << lines[1];
  EXPECT_TRUE(summary_json(resnet_like())["steady_samples_per_second"].is_null());
}

TEST(Summary, UnknownFiguresAreNullNotZero) {
  RunSummary s = resnet_like();
  s.peak_tflops = 0;
  EXPECT_TRUE(summary_json(s)["mfu"].is_null());
  EXPECT_FALSE(summary_json(s)["achieved_tflops"].is_null());
  s.forward_flops_per_sample = 0;
  EXPECT_TRUE(summary_json(s)["achieved_tflops"].is_null());
  EXPECT_TRUE(summary_json(s)["test_accuracy"].is_null()) << "not evaluated";
  s.evaluated = true;
  s.test_accuracy = 0.875;
  EXPECT_EQ(summary_json(s)["test_accuracy"], 0.875);
}

TEST(Summary, TheLogLinesGiveFlopsThenTheFigures) {
  RunSummary s = resnet_like();
  s.memory.optim_host = 3 * 1048576;
  const std::vector<std::string> lines = summary_lines(s);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0], "FLOPs: 4.100 GFLOP forward per sample; achieved 49.20 TFLOP/s, MFU 5.0%");
  EXPECT_EQ(
      lines[1].rfind(
          "summary: not evaluated (train.eval = false), train loss 0.0000, 4000 samples/s", 0),
      0u)
      << lines[1];
  EXPECT_NE(lines[1].find("optimizer 3.0 MiB)"), std::string::npos) << lines[1];
  s.forward_flops_per_sample = 0;
  EXPECT_EQ(summary_lines(s).size(), 1u);
}

// model.freeze: a frozen unit takes no weights' gradient, and before the first unit that
// trains none of its inputs' either (autograd stops there); the log says so where it counts.
TEST(Summary, FrozenUnitsCountNoGradientsTheyDoNotTake) {
  RunSummary s = resnet_like();
  EXPECT_EQ(training_flops_per_sample(s), 3 * s.forward_flops_per_sample);
  s.units[0].trained = false;  // conv1, before the first unit that trains: its forward alone
  const int64_t frozen_first = 3 * s.forward_flops_per_sample - 2 * 118'013'952;
  EXPECT_EQ(training_flops_per_sample(s), frozen_first);
  const nlohmann::json j = summary_json(s);
  EXPECT_EQ(j["training_flops_per_sample"].get<int64_t>(), frozen_first);
  EXPECT_DOUBLE_EQ(j["achieved_tflops"].get<double>(), frozen_first * 4000 / 1e12);
  EXPECT_EQ(j["flops_profile"][0]["trained"], false);
  EXPECT_EQ(
      summary_lines(s)[0],
      "FLOPs: 4.100 GFLOP forward per sample, 12.064 GFLOP training per sample (model.freeze); "
      "achieved 48.26 TFLOP/s, MFU 4.9%");
  s.units[0].trained = true;
  s.units[1].trained = false;  // fc, after one that trains: its inputs' gradient still flows
  EXPECT_EQ(training_flops_per_sample(s), 3 * s.forward_flops_per_sample - 2'048'000);
}

TEST(Summary, EachUnitIsNamedByItsFirstParameterAndCountsItsParameters) {
  const std::vector<std::vector<TensorLayout>> layouts = {
      {TensorLayout::of("features.0.weight", at::zeros({4, 3})),
       TensorLayout::of("features.0.bias", at::zeros({4}))},
      {TensorLayout::of("classifier.weight", at::zeros({2, 4}))}};
  const std::vector<UnitFigures> units =
      unit_figures(layouts, [](int32_t u) { return int64_t{100} * (u + 1); });
  ASSERT_EQ(units.size(), 2u);
  EXPECT_EQ(units[0].unit, "features");
  EXPECT_EQ(units[0].parameters, 16);
  EXPECT_EQ(units[0].forward_flops_per_sample, 100);
  EXPECT_EQ(units[1].unit, "classifier");
  EXPECT_EQ(units[1].parameters, 8);
  EXPECT_EQ(units[1].forward_flops_per_sample, 200);
}

}  // namespace
}  // namespace dshost
