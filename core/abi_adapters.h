// Plugins built for an older minor of the ABI, seen as the newest: what a plugin gives (its
// tables, its option declarations, the structs it fills) is copied into the current structs
// with each later minor's additions at their defaults (an absent call NULL, a flag 0, a
// shape empty), so the rest of the host reads only current structs and tests no sizes. What
// a minor changed in a plugin's behaviour rather than in a struct is asked here too.
#pragma once

#include <dshost/abi.h>

#include <memory>
#include <vector>

namespace dshost {

// The size of `kind`'s api table at ABI 1.0 (at the minor that introduced the kind); 0 for
// an unknown kind.
size_t first_api_size(dshost_plugin_kind kind);
// The api table of `d` (its kind's) as a current table: calls the plugin's minor did not
// have are NULL. Null where the table is smaller than first_api_size.
std::shared_ptr<const void> current_api(const dshost_plugin_descriptor& d);

// The declared options of `d` as current structs, read a plugin's own struct_size apart.
// Empty with *ok false where that size is below ABI 1.0's.
std::vector<dshost_option> current_options(const dshost_plugin_descriptor& d, bool* ok);

// What a model's describe gave, made current: a target shape only where the model's struct
// reaches it (a 1.0 struct's padding lies where 1.1 put target_ndim), no fp8 layer before 1.9.
void make_current(dshost_model_info& info);
// What a model's param or buffer call gave, made current: no export name before 1.2, none
// exported transposed before 1.8.
void make_current(dshost_param_desc& desc);

// Since 1.3 a model copies each step's loss into dshost_step_result.loss_out on the device.
inline bool writes_loss_on_device(const dshost_plugin_descriptor& model) {
  return model.abi_minor >= 3;
}
// Since 1.4 a strategy may write the gradient norm into args.grad_norm_out and return NaN;
// before, the norm it returns is the norm (NaN: diverged).
inline bool may_write_norm_on_device(const dshost_plugin_descriptor& strategy) {
  return strategy.abi_minor >= 4;
}
// Since 1.5 a strategy drops the update of a step whose gradient norm is not finite.
inline bool can_skip_updates(const dshost_plugin_descriptor& strategy) {
  return strategy.abi_minor >= 5;
}

// Since 1.8 a model takes a parameter without a gradient: frozen (model.freeze).
inline bool can_freeze(const dshost_plugin_descriptor& model) { return model.abi_minor >= 8; }

}  // namespace dshost
