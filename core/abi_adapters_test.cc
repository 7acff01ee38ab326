// Plugins of older ABI minors seen as the newest (core/abi_adapters.h): each released minor's
// additions read as their defaults, whatever an older plugin left in the bytes it wrote.
#include "core/abi_adapters.h"

#include <gtest/gtest.h>

#include <cstring>

namespace dshost {
namespace {

// A struct as a plugin of an older minor fills it: its own sizeof in struct_size, and its
// padding (or whatever lies past its end) holding what it happened to hold.
template <class T>
T as_filled_by_older_plugin(size_t its_sizeof) {
  T out;
  std::memset(static_cast<void*>(&out), 0x5a, sizeof(out));
  out.struct_size = its_sizeof;
  return out;
}

// ABI 1.1 put target_ndim into the padding at the end of 1.0's dshost_model_info, so a 1.0
// model's struct_size covers it: only the whole of 1.1's target shape tells them apart.
TEST(AbiAdapters, AModelInfoOf1_0HasNoTargetShapeWhateverItsPaddingHeld) {
  const size_t v1_0 = (DSHOST_STRUCT_SIZE(dshost_model_info, input_dtype) + 7) / 8 * 8;
  ASSERT_LT(offsetof(dshost_model_info, target_ndim), v1_0) << "the hazard this adapter is for";
  auto info = as_filled_by_older_plugin<dshost_model_info>(v1_0);
  make_current(info);
  EXPECT_EQ(info.struct_size, sizeof(dshost_model_info));
  EXPECT_EQ(info.target_ndim, 0);
  for (int64_t d : info.target_shape) EXPECT_EQ(d, 0);

  auto v1_1 = as_filled_by_older_plugin<dshost_model_info>(sizeof(dshost_model_info));
  v1_1.target_ndim = 1;
  v1_1.target_shape[0] = 1024;
  make_current(v1_1);
  EXPECT_EQ(v1_1.target_ndim, 1);
  EXPECT_EQ(v1_1.target_shape[0], 1024);
}

// A 1.8 model's dshost_model_info ends at target_shape: what lies past it counts no layer.
TEST(AbiAdapters, AModelInfoBefore1_9HasNoFp8Layers) {
  auto info = as_filled_by_older_plugin<dshost_model_info>(
      DSHOST_STRUCT_SIZE(dshost_model_info, target_shape));
  make_current(info);
  EXPECT_EQ(info.fp8_layers, 0);
  auto v1_9 = as_filled_by_older_plugin<dshost_model_info>(sizeof(dshost_model_info));
  v1_9.fp8_layers = 48;
  make_current(v1_9);
  EXPECT_EQ(v1_9.fp8_layers, 48);
}

TEST(AbiAdapters, AParameterOfAModelBefore1_2HasNoExportName) {
  auto desc =
      as_filled_by_older_plugin<dshost_param_desc>(offsetof(dshost_param_desc, export_name));
  make_current(desc);
  EXPECT_EQ(desc.export_name, nullptr);
  EXPECT_EQ(desc.struct_size, sizeof(dshost_param_desc));
  auto named = as_filled_by_older_plugin<dshost_param_desc>(sizeof(dshost_param_desc));
  named.export_name = "features.0.0.weight";
  make_current(named);
  EXPECT_STREQ(named.export_name, "features.0.0.weight");
}

// A 1.7 model's dshost_param_desc ends at export_name: what lies past it is no flag.
TEST(AbiAdapters, AParameterOfAModelBefore1_8IsNotExportedTransposed) {
  auto desc = as_filled_by_older_plugin<dshost_param_desc>(
      DSHOST_STRUCT_SIZE(dshost_param_desc, export_name));
  make_current(desc);
  EXPECT_EQ(desc.export_transposed, 0);
  auto transposed = as_filled_by_older_plugin<dshost_param_desc>(sizeof(dshost_param_desc));
  transposed.export_transposed = 1;
  make_current(transposed);
  EXPECT_EQ(transposed.export_transposed, 1);
}

dshost_status no_capture(dshost_strategy*, int32_t*, dshost_error*) { return DSHOST_OK; }
dshost_status no_step(dshost_strategy*, const dshost_step_args*, dshost_step_stats*,
                      dshost_error*) {
  return DSHOST_OK;
}

// A table is read as far as the plugin's struct_size: later calls are NULL, earlier ones the
// plugin's, and a table short of its kind's first ABI is refused.
TEST(AbiAdapters, ATableGetsTheCallsItsMinorHadAndNullForTheRest) {
  dshost_strategy_api table{};
  table.step = &no_step;
  table.capturable = &no_capture;  // past the end of the 1.1 table below: not to be read
  dshost_plugin_descriptor d{sizeof(dshost_plugin_descriptor)};
  d.kind = DSHOST_KIND_STRATEGY;
  d.api = &table;
  table.struct_size = offsetof(dshost_strategy_api, save);  // ABI 1.0 and 1.1
  auto current = std::static_pointer_cast<const dshost_strategy_api>(current_api(d));
  ASSERT_NE(current, nullptr);
  EXPECT_EQ(current->struct_size, sizeof(dshost_strategy_api));
  EXPECT_EQ(current->step, &no_step);
  EXPECT_EQ(current->save, nullptr);
  EXPECT_EQ(current->capturable, nullptr);

  table.struct_size = sizeof(dshost_strategy_api);
  current = std::static_pointer_cast<const dshost_strategy_api>(current_api(d));
  EXPECT_EQ(current->capturable, &no_capture);

  table.struct_size = first_api_size(DSHOST_KIND_STRATEGY) - sizeof(void*);
  EXPECT_EQ(current_api(d), nullptr);
}

// Option tables are arrays: each element is read a plugin's own struct_size apart, so a
// plugin built with a larger dshost_option (a later minor's) reads right here too.
TEST(AbiAdapters, OptionsAreReadTheirOwnSizeApart) {
  struct LaterOption {
    dshost_option option;
    double appended_field;
  };
  LaterOption later[2]{};
  for (int k = 0; k < 2; ++k) {
    later[k].option.struct_size = sizeof(LaterOption);
    later[k].option.type = DSHOST_OPTION_INT;
    later[k].option.default_value = "1";
    later[k].appended_field = 3.5;
  }
  later[0].option.name = "first";
  later[1].option.name = "second";
  dshost_plugin_descriptor d{sizeof(dshost_plugin_descriptor)};
  d.options = &later[0].option;
  d.option_count = 2;
  bool ok = false;
  const std::vector<dshost_option> options = current_options(d, &ok);
  ASSERT_TRUE(ok);
  ASSERT_EQ(options.size(), 2u);
  EXPECT_STREQ(options[0].name, "first");
  EXPECT_STREQ(options[1].name, "second");
  EXPECT_EQ(options[1].struct_size, sizeof(dshost_option));

  later[0].option.struct_size = offsetof(dshost_option, help);  // smaller than ABI 1.0's
  EXPECT_TRUE(current_options(d, &ok).empty());
  EXPECT_FALSE(ok);
}

}  // namespace
}  // namespace dshost
