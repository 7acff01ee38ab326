#include "reducer.h"

#include <ATen/record_function.h>  // phases as ranges in train.profile_steps traces
#include <c10/core/StreamGuard.h>

#include <algorithm>

namespace dshost_zero {

int64_t reduction_piece(const dshost::FlatLayout& layout, int64_t reduce_bucket_size,
                        int world_size) {
  int64_t largest_chunk = 1;
  for (int64_t c : layout.chunk) largest_chunk = std::max(largest_chunk, c);
  return std::clamp<int64_t>(reduce_bucket_size / world_size, 1, largest_chunk);
}

Reducer::Reducer(dshost::Services services, const Options& o, const dshost::FlatLayout& layout,
                 at::Device device, ShardBuffer& grad_shard, std::vector<at::Tensor>& grads,
                 const std::vector<int32_t>& grad_ids, CopyStreams* copies, int64_t piece)
    : services_(services),
      o_(o),
      layout_(layout),
      device_(device),
      grad_shard_(grad_shard),
      grads_(grads),
      grad_ids_(grad_ids),
      copies_(copies),
      piece_(piece),
      fresh_(layout.units(), true) {
  norm_ = at::zeros({1}, at::TensorOptions().dtype(at::kDouble).device(device_));
  pieces_sq_ = at::zeros({}, at::TensorOptions().dtype(at::kDouble).device(device_));
  norm_id_ = services_.register_buffer(dshost::to_dlpack(norm_));
}

// A unit that fits one piece and is already in the reduce dtype goes without staging, and
// micro-batch 0 of a reduction in the shard's dtype lands in a device-resident shard
// directly; everything else passes through a staging slot and is folded in (copied or added,
// across devices when the shard lives on the host) when done.
void Reducer::reduce(int u) {
  RECORD_USER_SCOPE("zero::reduce");
  const bool first = fresh_[u];
  fresh_[u] = false;
  const int64_t c = layout_.chunk[u], n = layout_.unit_size(u);
  const at::Tensor target = grad_shard_.range(layout_.shard_begin[u], c);
  if (services_.world_size() == 1 && target.device() == device_) {
    fold_in_alone(u, first);
    return;
  }
  const int part = grad_shard_.part_of(layout_.shard_begin[u]);
  const int32_t target_id = grad_shard_.ids[part];
  const bool unstaged = grads_[u].scalar_type() == o_.reduce_dtype && c <= piece_;
  for (int64_t begin = 0; begin < c; begin += piece_) {
    while (reductions_.size() >= 2) finish_oldest();
    const int64_t count = std::min(piece_, c - begin);
    const int slot = staging_turn_++ % 2;
    dshost_slice in = dshost::slice(grad_ids_[u], 0, n);
    if (!unstaged) in = stage_piece(u, begin, count, slot);
    Reduction r{u, begin, count, slot, first, begin + count >= c, {}};
    dshost_slice out;
    if (r.first && target_id >= 0 && o_.reduce_dtype == target.scalar_type()) {
      r.slot = -1;
      out =
          dshost::slice(target_id, layout_.shard_begin[u] - grad_shard_.begin[part] + begin, count);
    } else {
      out = dshost::slice(staging(slot).out.id, 0, count);
    }
    r.work = services_.reduce_scatter(in, out, DSHOST_AVG);
    reductions_.push_back(std::move(r));
    if (!o_.overlap_comm) finish_oldest();
  }
}

// One rank, its shard beside the gradients: the unit's gradient is its own average, so it goes
// into the shard in one kernel on the compute stream, rounded through the reduce dtype as a
// reduction would, without staging or a collective (as ddp launches none). (Whole at one
// rank, the chunk is the unit. A wider reduce dtype rounds nothing: no copy.)
void Reducer::fold_in_alone(int u, bool first) {
  const at::Tensor& grad = grads_[u];
  const at::Tensor reduced =
      static_cast<int64_t>(at::elementSize(o_.reduce_dtype)) < grad.element_size()
          ? grad.to(o_.reduce_dtype)
          : grad;
  const at::Tensor target = grad_shard_.range(layout_.shard_begin[u], layout_.chunk[u]);
  if (first)
    target.copy_(reduced);
  else
    target.add_(reduced);
  deallocate(grads_[u]);
}

// Columns [begin, begin + count) of unit u's [N, c] gradient into slot's `in`, converted.
dshost_slice Reducer::stage_piece(int u, int64_t begin, int64_t count, int slot) {
  const int64_t world = services_.world_size();
  const Scratch& in = staging(slot).in;
  in.buffer.narrow(0, 0, world * count)
      .view({world, count})
      .copy_(grads_[u].view({world, layout_.chunk[u]}).narrow(1, begin, count));
  return dshost::slice(in.id, 0, world * count);
}

void Reducer::finish() {
  while (!reductions_.empty()) finish_oldest();
}

void Reducer::finish_oldest() {
  Reduction r = std::move(reductions_.front());
  reductions_.pop_front();
  r.work.wait();
  if (r.slot >= 0) {
    const at::Tensor target = grad_shard_.range(layout_.shard_begin[r.unit] + r.begin, r.count);
    const at::Tensor reduced = staging_[r.slot].out.buffer.narrow(0, 0, r.count);
    if (r.first) {
      copy_out(reduced, target, r.slot);
    } else {
      target.add_(reduced.to(target.options()));  // blocking: waits for earlier copies
      accumulated_ = true;
    }
  }
  if (r.last) deallocate(grads_[r.unit]);
}

void Reducer::copy_out(const at::Tensor& reduced, const at::Tensor& target, int slot) {
  if (target.device() == device_) {
    target.copy_(reduced);
    return;
  }
  pieces_sq_.add_(dshost::sum_of_squares(reduced));
  wait_for(copies_->to_host, compute_stream(device_));
  const c10::StreamGuard on_copy_stream(copies_->to_host);
  target.copy_(reduced, /*non_blocking=*/true);
  copies_->drained[slot].record(copies_->to_host);
}

// Slot `slot`, its memory present (made on first use, refilled after a step freed it) and its
// last copy to the host done.
Reducer::Staging& Reducer::staging(int slot) {
  if (copies_) copies_->drained[slot].block(compute_stream(device_));
  Staging& s = staging_[slot];
  const auto options = at::TensorOptions().dtype(o_.reduce_dtype).device(device_);
  if (!s.in.buffer.defined()) {
    s.in = make_scratch(services_, services_.world_size() * piece_, options);
    s.out = make_scratch(services_, piece_, options);
  }
  allocate(s.in.buffer);
  allocate(s.out.buffer);
  return s;
}

void Reducer::end_step() {
  for (const Staging& slot : staging_) {  // transient, like the units' full gradients
    deallocate(slot.in.buffer);
    deallocate(slot.out.buffer);
  }
  for (int u = 0; u < layout_.units(); ++u) {
    if (fresh_[u]) grad_shard_.range(layout_.shard_begin[u], layout_.chunk[u]).zero_();
    fresh_[u] = true;
  }
}

// A shard in host memory had its pieces' squares summed on the device as they left
// (copy_out), unless a micro-batch added into it on the host.
at::Tensor Reducer::global_norm() {
  RECORD_USER_SCOPE("zero::norm");
  norm_.zero_();
  for (const at::Tensor& part : grad_shard_.parts) {
    const bool summed_on_device = part.is_cpu() && !device_.is_cpu() && !accumulated_;
    norm_.add_(
        (summed_on_device ? pieces_sq_ : dshost::sum_of_squares(part)).to(device_).view({1}));
  }
  pieces_sq_.zero_();
  accumulated_ = false;
  if (services_.world_size() > 1)
    services_.all_reduce(dshost::slice(norm_id_, 0, 1), DSHOST_SUM).wait();
  return norm_.sqrt();
}

void Reducer::for_each_buffer(const std::function<void(const at::Tensor&)>& f) const {
  for (const Staging& slot : staging_)
    for (const auto* t : {&slot.in.buffer, &slot.out.buffer}) f(*t);
}

}  // namespace dshost_zero
