#include "delayed_update.h"

#include <ATen/record_function.h>

#include <utility>

namespace dshost_zero {

void check_delayed_update(const Options& o, bool on_gpu, dshost_optimizer_kind optimizer) {
  if (!o.delayed_update) return;
  if (o.offload_optimizer && (o.stage == 2 || o.offload_param || !on_gpu) &&
      optimizer == DSHOST_ADAMW)
    return;
  throw dshost::Error(
      std::string("strategy.delayed_parameter_update = true needs offload_optimizer_device = "
                  "\"cpu\"") +
          (o.stage == 3 && on_gpu ? ", offload_param_device = \"cpu\"" : "") +
          " and optimizer.name = \"adamw\": the overlapped update runs on the CPU. Set those, or "
          "delayed_parameter_update = false.",
      DSHOST_INVALID_ARGUMENT);
}

void DelayedUpdate::start(Update update) {
  std::swap(grads_, spare_grads_);
  pending_ = std::async(std::launch::async, [this, update = std::move(update)] {
    RECORD_USER_SCOPE("zero::delayed_update");
    update(spare_grads_, next_params_);
  });
}

void DelayedUpdate::finish() {
  if (!pending_.valid()) return;
  pending_.get();
  std::swap(params_, next_params_);
}

}  // namespace dshost_zero
