// Whole units from rank chunks. Stage 3 all-gathers unit u at pre_forward and pre_backward
// (prefetching the next units in that direction) from the parameter shard and frees it after
// post_forward and grads_ready; units below param_persistence_threshold stay whole. After an
// update every unit that stays whole (all of them under stage 2) gathers its new values
// (alone without a parameter shard, the update wrote them in place: no collective).
//
// From a parameter shard in host memory the copy runs on the host-to-device stream and waits
// only for the compute work enqueued before the unit's memory was allocated, which may still
// read a freed unit's block.
#pragma once

#include "copy_streams.h"
#include "options.h"
#include "shard_buffer.h"

#include <vector>

namespace dshost_zero {

// Whether unit u stays whole between uses under stage 3 (param_persistence_threshold).
inline bool persistent(const dshost::FlatLayout& layout, const Options& o, int u) {
  return layout.unit_size(u) < o.param_persistence_threshold;
}

class Gatherer {
 public:
  // `params` (the units' whole buffers in the compute dtype), `param_shard` (stage 3; may be
  // swapped with a twin between steps) and `copies` are the strategy's and outlive it.
  Gatherer(dshost::Services services, const Options& o, const dshost::FlatLayout& layout,
           std::vector<at::Tensor>& params, const std::vector<int32_t>& param_ids,
           const ShardBuffer& param_shard, CopyStreams* copies, const c10::Device& device);

  // Makes unit u whole for use, and starts gathering the next units in `direction` (+1 or -1):
  // the next one, and more up to prefetch_bucket_size elements ahead (none when it is 0).
  void use(int u, int direction);
  // Frees unit u unless it stays whole.
  void release(int u);
  // Gathers again every unit that stays whole, and waits: after an update or a load.
  void regather();

 private:
  void gather(int u);

  dshost::Services services_;
  Options o_;
  const dshost::FlatLayout& layout_;
  std::vector<at::Tensor>& params_;
  const std::vector<int32_t>& param_ids_;
  const ShardBuffer& param_shard_;
  CopyStreams* copies_;
  c10::Device device_;
  std::vector<bool> gathered_;
  std::vector<dshost::Work> work_;
};

}  // namespace dshost_zero
