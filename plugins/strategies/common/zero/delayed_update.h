// delayed_parameter_update (the optimizer in CPU memory, and under stage 3 on a GPU the
// parameter shard too): ZeRO-Offload's DPU. Step N's CPU AdamW runs on a thread of its own while
// the accelerator computes step N+1 from the parameters before update N, so every gradient is
// applied one step late (the loss and an evaluation also see parameters one update behind). It
// costs a second gradient shard and a second parameter shard in host memory: update N reads one and
// writes the other while step N+1's backward and gathers use their twins; step N+1 waits for
// update N, then the pairs swap. A checkpoint waits for the update in flight.
#pragma once

#include "options.h"
#include "shard_buffer.h"

#include <functional>
#include <future>

namespace dshost_zero {

// Only where the update touches host memory alone: nothing on the update's thread uses the
// accelerator or its stream. Throws dshost::Error (DSHOST_INVALID_ARGUMENT) otherwise.
void check_delayed_update(const Options& o, bool on_gpu, dshost_optimizer_kind optimizer);

class DelayedUpdate {
 public:
  // The strategy's shards and their twins, which outlive this.
  DelayedUpdate(ShardBuffer& grads, ShardBuffer& spare_grads, ShardBuffer& params,
                ShardBuffer& next_params)
      : grads_(grads), spare_grads_(spare_grads), params_(params), next_params_(next_params) {}
  ~DelayedUpdate() {  // waits for an update in flight, whose error nobody reads any more
    if (pending_.valid()) pending_.wait();
  }
  DelayedUpdate(const DelayedUpdate&) = delete;
  DelayedUpdate& operator=(const DelayedUpdate&) = delete;

  // Where the update writes: the parameter shard's twin.
  const ShardBuffer& next_params() const { return next_params_; }
  // Starts `update(grads, params)` on a thread, from the gradients just reduced into the
  // parameters' twin; the next backward fills the other gradient shard. Call finish() first.
  using Update = std::function<void(const ShardBuffer& grads, const ShardBuffer& params)>;
  void start(Update update);
  // The update in flight done, its parameters become the ones gathered.
  void finish();

 private:
  ShardBuffer &grads_, &spare_grads_, &params_, &next_params_;
  std::future<void> pending_;
};

}  // namespace dshost_zero
