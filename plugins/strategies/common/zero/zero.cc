#include "zero.h"

#include "host_memory.h"
#include "scratch.h"

#include <ATen/record_function.h>

#include <set>

namespace dshost_zero {

Zero::Zero(const dshost::Services& s, Options o)
    : Strategy(s),
      o_(o),
      device_(dshost::to_device(s.device())),
      dtype_(dshost::compute_dtype(s)),
      fused_adamw_(uses_fused_adamw(o, s.optimizer().kind, device_, dtype_)),
      grads_in_shard_(s.world_size() == 1 && !o.offload_optimizer && o.grad_dtype == dtype_) {}

Zero::~Zero() = default;

void Zero::setup(const std::vector<dshost::UnitParams>& units) {
  const auto& s = services();
  check_delayed_update(o_, device_.is_cuda(), s.optimizer().kind);
  check_optimizer_options(o_, fused_adamw_, device_, dtype_);
  layout_ = std::make_unique<dshost::FlatLayout>(units, s.world_size(), true);
  memory_ = std::make_unique<ShardMemory>(s, device_, layout_->shard, optimizer_split_of(*layout_),
                                          o_.pin_memory);
  check_host_memory_for(units);
  const at::Device optimizer_home = o_.offload_optimizer ? at::Device(at::kCPU) : device_;
  // Gradient shards start empty (each step's first reduction copies into a chunk, the step
  // zeroes the rest) unless backward adds into them; pages never written take no host memory
  // while setup still holds the model's fp32 copy. (Twins are made as the originals are:
  // *_like would drop pinned_memory, and pageable copies ran at 8 GB/s every other step.)
  grad_shard_ = memory_->make(o_.grad_dtype, optimizer_home, true, true);
  if (grads_in_shard_) grad_shard_.zero();
  if (o_.delayed_update)
    grad_spare_ = memory_->make(o_.grad_dtype, optimizer_home, true, true, &grad_shard_);
  if (device_.is_cuda() && (o_.offload_optimizer || o_.offload_param)) copies_.emplace(device_, 2);
  const int64_t piece = reduction_piece(*layout_, o_.reduce_bucket_size, s.world_size());
  if (o_.delayed_update)
    delayed_ =
        std::make_unique<DelayedUpdate>(grad_shard_, grad_spare_, param_shard_, param_shard_next_);
  optimizer_ =
      std::make_unique<ShardedOptimizer>(s, o_, *layout_, device_, dtype_, *memory_, grad_shard_,
                                         param_shard_, params_, delayed_.get(), piece);
  make_units(units, piece);
  const at::Device param_home = param_shard_on_host(o_) ? at::Device(at::kCPU) : device_;
  if (has_param_shard(
          o_)) {  // (Tensor::to would ignore pinned_memory: pageable copies ran at 8 GB/s)
    param_shard_ = memory_->make(dtype_, param_home, true);
    const ShardBuffer& master = optimizer_->master();
    for (size_t p = 0; p < master.parts.size(); ++p) param_shard_.parts[p].copy_(master.parts[p]);
  }
  if (o_.delayed_update) param_shard_next_ = memory_->make(dtype_, param_home, true);
  CopyStreams* copies = copies_ ? &*copies_ : nullptr;
  reducer_ = std::make_unique<Reducer>(s, o_, *layout_, device_, grad_shard_, grads_, grad_ids_,
                                       copies, piece);
  gatherer_ = std::make_unique<Gatherer>(s, o_, *layout_, params_, param_ids_, param_shard_, copies,
                                         device_);
}

int64_t Zero::optimizer_split_of(const dshost::FlatLayout& layout) const {
  if (!o_.offload_optimizer || o_.offload_ratio >= 1) return 0;
  const int64_t split = optimizer_split(layout, o_.offload_ratio);
  services().info(
      std::string(o_.stage == 3 ? "zero3-offload: " : "zero2: ") + std::to_string(split) + " of " +
      std::to_string(layout.shard) +
      " shard elements keep their optimizer on the accelerator (offload_optimizer_ratio " +
      std::to_string(o_.offload_ratio).substr(0, 4) + ")");
  return split;
}

void Zero::check_host_memory_for(const std::vector<dshost::UnitParams>& units) const {
  HostMemoryNeed need;
  need.shard = layout_->shard - memory_->split();
  need.padded_model = layout_->padded;
  need.on_gpu = device_.is_cuda();
  need.compute_bytes = dtype_ == at::kFloat ? 4 : 2;
  need.fused_adamw = fused_adamw_;
  need.local_ranks = services().local_world_size();
  for (const auto& unit : units)
    for (const at::Tensor& value : unit.values)
      if (value.is_cpu())
        need.released += value.numel() * static_cast<int64_t>(value.element_size());
  check_host_memory(o_, need, dshost::available_host_memory());
}

// Each unit's values into the master and the whole compute-dtype buffers, with the model's
// views made while the memory is there (as_strided checks bounds); then the buffers are
// emptied, unit by unit, so setup never holds the whole model. The values cross from rank 0
// through a bounce buffer of one reduction staging slot's size (N x `piece`).
void Zero::make_units(const std::vector<dshost::UnitParams>& units, int64_t piece) {
  const auto& s = services();
  const ShardBuffer& master = optimizer_->master();
  Scratch bounce = make_scratch(s, s.world_size() * piece, on_device(at::kFloat));
  for (int u = 0; u < layout_->units(); ++u) {
    const at::Tensor full = unit_from_rank0(units, u, bounce);
    master.range(layout_->shard_begin[u], layout_->chunk[u])
        .copy_(own_chunk(*layout_, s.rank(), full, u));
    params_.push_back(at::empty({layout_->unit_size(u)}, on_device(dtype_)).copy_(full));
    grads_.push_back(grads_in_shard_ ? grad_shard_.range(layout_->shard_begin[u], layout_->chunk[u])
                                     : at::empty({layout_->unit_size(u)}, on_device(dtype_)));
    param_ids_.push_back(s.register_buffer(dshost::to_dlpack(params_[u])));
    grad_ids_.push_back(grads_in_shard_ ? -1 : s.register_buffer(dshost::to_dlpack(grads_[u])));
    std::vector<Views> views;
    for (size_t i = 0; i < units[u].values.size(); ++i)
      views.push_back({layout_->unit_view(params_[u], u, static_cast<int>(i)),
                       layout_->unit_view(grads_[u], u, static_cast<int>(i))});
    views_.push_back(std::move(views));
    if (!grads_in_shard_) deallocate(grads_[u]);
    if (o_.stage == 3 && !persistent(*layout_, o_, u)) deallocate(params_[u]);
  }
  deallocate(bounce.buffer);
}

// Unit u's initial values in fp32 host memory, rank 0's on every rank: broadcast in pieces
// through `bounce` (registered memory on the device collectives run on).
at::Tensor Zero::unit_from_rank0(const std::vector<dshost::UnitParams>& units, int u,
                                 const Scratch& bounce) const {
  at::Tensor full = at::zeros({layout_->unit_size(u)}, at::kFloat);
  for (size_t i = 0; i < units[u].values.size(); ++i)
    layout_->unit_view(full, u, static_cast<int>(i)).copy_(units[u].values[i]);
  allocate(bounce.buffer);
  for (int64_t begin = 0; begin < full.numel(); begin += bounce.buffer.numel()) {
    const int64_t n = std::min(bounce.buffer.numel(), full.numel() - begin);
    bounce.buffer.narrow(0, 0, n).copy_(full.narrow(0, begin, n));
    services().broadcast(dshost::slice(bounce.id, 0, n), 0).wait();
    full.narrow(0, begin, n).copy_(bounce.buffer.narrow(0, 0, n));
  }
  return full;
}

void Zero::begin_micro_batch(int /*index*/, int /*count*/) {
  reducer_->finish();
  if (copies_) copies_->to_host.synchronize();  // a later micro-batch adds on the host
}

void Zero::on_unit_event(dshost_unit_event event, int unit) {
  switch (event) {
    case DSHOST_PRE_FORWARD:
      if (o_.stage == 3) gatherer_->use(unit, +1);
      break;
    case DSHOST_POST_FORWARD:
      if (o_.stage == 3) gatherer_->release(unit);
      break;
    case DSHOST_PRE_BACKWARD:
      if (o_.stage == 3) gatherer_->use(unit, -1);
      if (grads_in_shard_) break;
      allocate(grads_[unit]);
      grads_[unit].zero_();
      break;
    case DSHOST_GRADS_READY:
      if (!grads_in_shard_) reducer_->reduce(unit);
      if (o_.stage == 3) gatherer_->release(unit);
      break;
  }
}

double Zero::step(const dshost_step_args& args) {
  {
    RECORD_USER_SCOPE("zero::finish_reductions");
    reducer_->finish();
  }
  if (copies_) copies_->synchronize();
  if (!grads_in_shard_) reducer_->end_step();
  const at::Tensor norm = reducer_->global_norm();
  optimizer_->step(args, norm);
  RECORD_USER_SCOPE("zero::after_update");
  if (grads_in_shard_) grad_shard_.zero();  // the next step's backward adds into it
  gatherer_->regather();
  return dshost::report_norm(args, norm);
}

void Zero::save(const dshost::StateIO& io) {
  if (delayed_) delayed_->finish();
  for (int u = 0; u < layout_->units(); ++u)
    dshost::save_range(io, *layout_, own_begin(u), own_begin(u) + layout_->chunk[u],
                       optimizer_->unit_state(u));
  io.write_step_count(optimizer_->steps());
}

void Zero::load(const dshost::StateIO& io) {
  if (delayed_) delayed_->finish();
  for (int u = 0; u < layout_->units(); ++u)
    dshost::load_range(io, *layout_, own_begin(u), own_begin(u) + layout_->chunk[u],
                       optimizer_->unit_state(u));
  optimizer_->set_steps(io.read_step_count());
  optimizer_->write_back_all();
  gatherer_->regather();
}

dshost_memory_report Zero::memory() const {
  dshost_memory_report r{};
  std::set<const void*> counted;  // DPU's gradient twins share their GPU part
  const auto add = [&](const at::Tensor& t, int64_t* device, int64_t* host) {
    if (t.defined() && counted.insert(t.storage().data()).second)
      dshost::tally(static_cast<int64_t>(t.storage().nbytes()), t.device(), device_, device, host);
  };
  const auto add_parts = [&](const ShardBuffer& b, int64_t* device, int64_t* host) {
    for (const at::Tensor& part : b.parts) add(part, device, host);
  };
  for (const auto& p : params_) add(p, &r.param_device, &r.param_host);
  for (const auto* b : {&param_shard_, &param_shard_next_})
    add_parts(*b, &r.param_device, &r.param_host);
  if (!grads_in_shard_)  // (else ranges of the shard, counted below)
    for (const auto& g : grads_) add(g, &r.grad_device, &r.grad_host);
  for (const auto* b : {&grad_shard_, &grad_spare_}) add_parts(*b, &r.grad_device, &r.grad_host);
  if (reducer_)
    reducer_->for_each_buffer([&](const at::Tensor& t) { add(t, &r.grad_device, &r.grad_host); });
  if (!optimizer_) return r;
  optimizer_->for_each_buffer([&](const at::Tensor& t) { add(t, &r.optim_device, &r.optim_host); });
  if (const dshost::FlatOptimizer* flat = optimizer_->flat_optimizer())
    dshost::tally(flat->state_bytes(), flat->device(), device_, &r.optim_device, &r.optim_host);
  return r;
}

}  // namespace dshost_zero
