#include "core/abi_adapters.h"

#include <algorithm>
#include <cstring>

namespace dshost {
namespace {

// `table` copied into a zeroed current Api; null where it is smaller than its kind's ABI 1.0
// table.
template <class Api>
std::shared_ptr<const void> current_table(const void* table, dshost_plugin_kind kind) {
  const size_t have = *static_cast<const size_t*>(table);
  if (have < first_api_size(kind)) return nullptr;
  auto current = std::make_shared<Api>();
  std::memcpy(static_cast<void*>(current.get()), table, std::min(have, sizeof(Api)));
  current->struct_size = sizeof(Api);
  return current;
}

}  // namespace

size_t first_api_size(dshost_plugin_kind kind) {
  switch (kind) {
    case DSHOST_KIND_MODEL:
      return DSHOST_STRUCT_SIZE(dshost_model_api, evaluate);
    case DSHOST_KIND_STRATEGY:
      return DSHOST_STRUCT_SIZE(dshost_strategy_api, memory);
    case DSHOST_KIND_LAUNCHER:
      return DSHOST_STRUCT_SIZE(dshost_launcher_api, launch);
    case DSHOST_KIND_DATASET:
      return DSHOST_STRUCT_SIZE(dshost_dataset_api, fill);  // (new in 1.6)
  }
  return 0;
}

std::shared_ptr<const void> current_api(const dshost_plugin_descriptor& d) {
  switch (d.kind) {
    case DSHOST_KIND_MODEL:
      return current_table<dshost_model_api>(d.api, d.kind);
    case DSHOST_KIND_STRATEGY:
      return current_table<dshost_strategy_api>(d.api, d.kind);
    case DSHOST_KIND_LAUNCHER:
      return current_table<dshost_launcher_api>(d.api, d.kind);
    case DSHOST_KIND_DATASET:
      return current_table<dshost_dataset_api>(d.api, d.kind);
  }
  return nullptr;
}

std::vector<dshost_option> current_options(const dshost_plugin_descriptor& d, bool* ok) {
  std::vector<dshost_option> out;
  *ok = d.option_count == 0 || d.options[0].struct_size >= DSHOST_STRUCT_SIZE(dshost_option, help);
  if (!*ok) return out;
  const auto* bytes = reinterpret_cast<const char*>(d.options);
  const size_t stride = d.option_count == 0 ? 0 : d.options[0].struct_size;
  for (size_t k = 0; k < d.option_count; ++k) {
    dshost_option option{};
    std::memcpy(static_cast<void*>(&option), bytes + k * stride, std::min(stride, sizeof(option)));
    option.struct_size = sizeof(option);
    out.push_back(option);
  }
  return out;
}

void make_current(dshost_model_info& info) {
  if (info.struct_size < DSHOST_STRUCT_SIZE(dshost_model_info, target_shape)) {  // before 1.1
    info.target_ndim = 0;
    std::fill(std::begin(info.target_shape), std::end(info.target_shape), 0);
  }
  if (info.struct_size < DSHOST_STRUCT_SIZE(dshost_model_info, fp8_layers))
    info.fp8_layers = 0;  // 1.9
  info.struct_size = sizeof(info);
}

void make_current(dshost_param_desc& desc) {
  if (desc.struct_size < DSHOST_STRUCT_SIZE(dshost_param_desc, export_name))
    desc.export_name = nullptr;  // 1.2
  if (desc.struct_size < DSHOST_STRUCT_SIZE(dshost_param_desc, export_transposed))
    desc.export_transposed = 0;  // 1.8
  desc.struct_size = sizeof(desc);
}

}  // namespace dshost
