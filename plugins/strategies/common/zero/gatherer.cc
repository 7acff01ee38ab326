#include "gatherer.h"

#include "scratch.h"

#include <ATen/record_function.h>
#include <c10/core/StreamGuard.h>

namespace dshost_zero {

Gatherer::Gatherer(dshost::Services services, const Options& o, const dshost::FlatLayout& layout,
                   std::vector<at::Tensor>& params, const std::vector<int32_t>& param_ids,
                   const ShardBuffer& param_shard, CopyStreams* copies, const c10::Device& device)
    : services_(services),
      o_(o),
      layout_(layout),
      params_(params),
      param_ids_(param_ids),
      param_shard_(param_shard),
      copies_(copies),
      device_(device),
      gathered_(layout.units()),
      work_(layout.units()) {
  for (int u = 0; u < layout_.units(); ++u)
    gathered_[u] = o_.stage == 2 || persistent(layout_, o_, u);
}

void Gatherer::use(int u, int direction) {
  RECORD_USER_SCOPE("zero::gather");
  gather(u);
  work_[u].wait();
  int64_t ahead = 0;
  for (int next = u + direction; next >= 0 && next < layout_.units(); next += direction) {
    ahead += layout_.unit_size(next);
    // The next unit whatever its size (a 1.3B gpt's blocks exceed the default bucket),
    // further ones while they fit.
    if (o_.prefetch_bucket_size == 0 || (next != u + direction && ahead > o_.prefetch_bucket_size))
      break;
    gather(next);
  }
}

// This rank's chunk (from the parameter shard where there is one; else stage 2's update wrote
// it in place) all-gathered with every other rank's. Alone without a parameter shard, the
// chunk is the unit and already in place: nothing to gather.
void Gatherer::gather(int u) {
  if (gathered_[u]) return;
  gathered_[u] = true;
  if (services_.world_size() == 1 && !has_param_shard(o_)) return;
  c10::OptionalStreamGuard on_copy_stream;  // where the copy and the all-gather are enqueued
  if (has_param_shard(o_)) {
    allocate(params_[u]);
    const at::Tensor own = param_shard_.range(layout_.shard_begin[u], layout_.chunk[u]);
    if (copies_ && own.is_cpu()) {
      wait_for(copies_->to_device, compute_stream(device_));
      on_copy_stream.reset_stream(copies_->to_device);
    }
    own_chunk(layout_, services_.rank(), params_[u], u)
        .copy_(own, /*non_blocking=*/true);  // pinned when on the host
  }
  const int64_t begin = services_.rank() * layout_.chunk[u];
  work_[u] = services_.all_gather(dshost::slice(param_ids_[u], begin, layout_.chunk[u]),
                                  dshost::slice(param_ids_[u], 0, layout_.unit_size(u)));
}

void Gatherer::release(int u) {
  if (!gathered_[u] || persistent(layout_, o_, u)) return;
  work_[u].wait();
  deallocate(params_[u]);
  gathered_[u] = false;
}

void Gatherer::regather() {
  for (int u = 0; u < layout_.units(); ++u)
    if (gathered_[u]) {
      gathered_[u] = false;
      gather(u);
    }
  for (int u = 0; u < layout_.units(); ++u)
    if (gathered_[u]) work_[u].wait();
}

}  // namespace dshost_zero
