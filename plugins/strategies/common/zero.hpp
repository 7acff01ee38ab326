// ZeRO stages 2 and 3 over the model's units (shared by the zero2 and zero3-offload plugins).
//
// Layout: each unit is padded to a multiple of N ranks and cut into N chunks; rank r owns
// chunk r of every unit. The rank's chunks end to end are its shard (S = P/N elements).
//
// Memory per rank (P parameters, compute dtype c = bf16 or fp32):
//   stage 2: full parameters (P x c), fp32 gradient shard (4S), fp32 master + AdamW moments
//            (12S). A unit's full gradient lives only from its pre_backward until its
//            reduce-scatter has finished (at most two units at a time).
//   stage 3: parameter shard (S x c) plus the units currently gathered (the unit in use,
//            the prefetched ones, and units below param_persistence_threshold), fp32
//            gradient shard, fp32 master + moments, on the host when offloaded.
//
// Events: grads_ready(u) reduce-scatters u's gradient into the shard (averaged, in fp32 by
// default), accumulating across micro-batches. Stage 3 also all-gathers u at pre_forward
// and pre_backward (prefetching the next units in that direction) and frees it after
// post_forward and grads_ready. Freed units keep their storage objects, emptied, so the
// model's parameter views and the tensors autograd saved see the memory again once it is
// refilled (as FSDP does).
//
// step(): global gradient norm from the shards (one scalar all-reduce), clipping, the
// optimizer on the fp32 master shard (fused multi-threaded AdamW when it lives in CPU
// memory), then the shard is written back into the compute-dtype parameters (stage 2:
// each unit all-gathered; stage 3: the parameter shard).
#pragma once

#include <dshost/cpu_adam.hpp>
#include <dshost/strategy.hpp>

#include <algorithm>
#include <cmath>
#include <deque>
#include <memory>
#include <string>
#include <vector>

namespace dshost_zero {

struct Options {
  int stage = 2;
  bool overlap_comm = true;
  at::ScalarType reduce_dtype = at::kFloat;
  // stage 3
  bool offload_optimizer = false;  // fp32 master + moments in CPU memory
  bool offload_param = false;      // the parameter shard in CPU memory
  bool pin_memory = true;
  int64_t prefetch_bucket_size = 0;        // elements gathered ahead of use
  int64_t param_persistence_threshold = 0;  // units smaller than this stay gathered
};

// The keys both ZeRO plugins take, for their option tables.
#define DSHOST_ZERO_COMMON_OPTIONS                                                             \
  DSHOST_OPTION("overlap_comm", DSHOST_OPTION_BOOL, "true", nullptr,                           \
                "reduce each unit's gradient while backward goes on (false: one at a time)"), \
      DSHOST_OPTION("reduce_dtype", DSHOST_OPTION_STRING, "\"fp32\"", "fp32|bf16",            \
                    "dtype gradients are reduced in (bf16 halves traffic, loses precision)")

// Options with the common keys read from the plugin's section.
inline Options common_options(const dshost::Services& s, int stage) {
  Options o;
  o.stage = stage;
  o.overlap_comm = s.get_bool("overlap_comm");
  o.reduce_dtype = s.get_string("reduce_dtype") == "bf16" ? at::kBFloat16 : at::kFloat;
  return o;
}

class Zero : public dshost::Strategy {
 public:
  Zero(const dshost::Services& s, Options o)
      : Strategy(s), o_(o), device_(dshost::to_device(s.device())),
        dtype_(dshost::compute_dtype(s)) {}

  void setup(const std::vector<dshost::UnitParams>& units) override {
    const auto& s = services();
    layout_ = std::make_unique<dshost::FlatLayout>(units, s.world_size(), true);
    const int n = layout_->units();
    const auto on_device = at::TensorOptions().device(device_);
    const at::Device host(at::kCPU);
    check_host_memory();
    master_ = at::empty({layout_->shard}, pinned_if_host(at::TensorOptions().dtype(at::kFloat),
                                                         o_.offload_optimizer ? host : device_));
    for (int u = 0; u < n; ++u) {
      // The unit's initial values in fp32, then rank 0's win everywhere.
      at::Tensor full = at::zeros({layout_->unit_size(u)}, on_device.dtype(at::kFloat));
      for (size_t i = 0; i < units[u].values.size(); ++i)
        layout_->unit_view(full, u, static_cast<int>(i)).copy_(units[u].values[i]);
      const int32_t id = s.register_buffer(dshost::to_dlpack(full));
      s.broadcast(dshost::slice(id, 0, full.numel()), 0).wait();
      master_.narrow(0, layout_->shard_begin[u], layout_->chunk[u]).copy_(own_chunk(full, u));
      params_.push_back(full.to(dtype_));
      grads_.push_back(at::empty({layout_->unit_size(u)}, on_device.dtype(dtype_)));
      param_ids_.push_back(s.register_buffer(dshost::to_dlpack(params_[u])));
      grad_ids_.push_back(s.register_buffer(dshost::to_dlpack(grads_[u])));
      // Views are made while the memory is there (as_strided checks bounds); then the
      // transient buffers are emptied, unit by unit, so setup never holds the whole model.
      std::vector<Views> views;
      for (size_t i = 0; i < units[u].values.size(); ++i)
        views.push_back({layout_->unit_view(params_[u], u, static_cast<int>(i)),
                         layout_->unit_view(grads_[u], u, static_cast<int>(i))});
      views_.push_back(std::move(views));
      deallocate(grads_[u]);
      if (o_.stage == 3 && !persistent(u)) deallocate(params_[u]);
    }
    grad_shard_ = at::zeros({layout_->shard}, on_device.dtype(at::kFloat));
    grad_shard_id_ = s.register_buffer(dshost::to_dlpack(grad_shard_));
    norm_ = at::zeros({1}, on_device.dtype(at::kFloat));
    norm_id_ = s.register_buffer(dshost::to_dlpack(norm_));
    if (o_.stage == 3)
      param_shard_ = master_.to(pinned_if_host(at::TensorOptions().dtype(dtype_),
                                               o_.offload_param ? host : device_));
    make_optimizer();
    gathered_.resize(n);
    for (int u = 0; u < n; ++u) gathered_[u] = o_.stage == 2 || persistent(u);
    gather_work_.resize(n);
  }

  Views param_views(int unit, int index) override { return views_.at(unit).at(index); }

  void begin_micro_batch(int index, int /*count*/) override {
    while (!reductions_.empty()) finish_oldest_reduction();  // reduce_out_ is reused
    micro_index_ = index;
  }

  void on_unit_event(dshost_unit_event event, int unit) override {
    switch (event) {
      case DSHOST_PRE_FORWARD:
        if (o_.stage == 3) use(unit, +1);
        break;
      case DSHOST_POST_FORWARD:
        if (o_.stage == 3) release(unit);
        break;
      case DSHOST_PRE_BACKWARD:
        if (o_.stage == 3) use(unit, -1);
        allocate(grads_[unit]);
        grads_[unit].zero_();
        break;
      case DSHOST_GRADS_READY:
        reduce(unit);
        if (o_.stage == 3) release(unit);
        break;
    }
  }

  double step(const dshost_step_args& args) override {
    const auto& s = services();
    while (!reductions_.empty()) finish_oldest_reduction();
    for (const auto& staging : staging_)  // transient, like the units' full gradients
      if (staging.defined()) deallocate(staging);
    norm_.copy_(grad_shard_.pow(2).sum().view({1}));
    s.all_reduce(dshost::slice(norm_id_, 0, 1), DSHOST_SUM).wait();
    const double norm = std::sqrt(norm_.item<double>());
    if (args.max_grad_norm > 0 && norm > args.max_grad_norm)
      grad_shard_.mul_(args.max_grad_norm / (norm + 1e-6));
    update_master(args.lr);
    write_back();
    grad_shard_.zero_();
    return norm;
  }

  dshost_memory_report memory() const override {
    dshost_memory_report r{};
    const auto add = [&](const at::Tensor& t, int64_t* device, int64_t* host) {
      if (t.defined())
        dshost::tally(static_cast<int64_t>(t.storage().nbytes()), t.device(), device_, device, host);
    };
    for (const auto& p : params_) add(p, &r.param_device, &r.param_host);
    add(param_shard_, &r.param_device, &r.param_host);
    for (const auto& g : grads_) add(g, &r.grad_device, &r.grad_host);
    for (const auto* t : {&grad_shard_, &reduce_out_, &staging_[0], &staging_[1], &grad_host_})
      add(*t, &r.grad_device, &r.grad_host);
    for (const auto* t : {&master_, &exp_avg_, &exp_avg_sq_}) add(*t, &r.optim_device, &r.optim_host);
    if (flat_optimizer_)
      dshost::tally(flat_optimizer_->state_bytes(), flat_optimizer_->device(), device_,
                    &r.optim_device, &r.optim_host);
    return r;
  }

 private:
  struct Reduction {
    int unit;
    dshost::Work work;
    bool fold;   // move reduce_out_'s chunk into the gradient shard when done
    bool first;  // of the step's micro-batches: copy, not add
  };

  at::TensorOptions pinned_if_host(at::TensorOptions opts, at::Device where) const {
    return opts.device(where).pinned_memory(o_.pin_memory && where.is_cpu() && device_.is_cuda());
  }

  at::Tensor own_chunk(const at::Tensor& unit_buffer, int u) const {
    return unit_buffer.narrow(0, services().rank() * layout_->chunk[u], layout_->chunk[u]);
  }

  static void allocate(const at::Tensor& t) {
    dshost::resize_storage(t, static_cast<size_t>(t.numel()) * t.element_size());
  }
  static void deallocate(const at::Tensor& t) { dshost::resize_storage(t, 0); }

  // Offloading needs host memory for the fp32 master and AdamW moments (and the parameter
  // shard): refuse up front, before anything is allocated, when the host lacks it.
  void check_host_memory() const {
    if (!device_.is_cuda() || (!o_.offload_optimizer && !o_.offload_param)) return;
    const int64_t per_rank = layout_->shard * ((o_.offload_optimizer ? 16 : 0) +
                                               (o_.offload_param ? 2 : 0));
    const int64_t needed = per_rank * services().local_world_size();
    const int64_t available = dshost::available_host_memory();
    if (needed <= available) return;
    const auto gib = [](int64_t b) { return std::to_string(b / (1 << 20) / 1024.0).substr(0, 5); };
    throw dshost::Error("zero3-offload needs " + gib(needed) + " GiB of host memory on this node (" +
                        gib(per_rank) + " GiB for each of its " +
                        std::to_string(services().local_world_size()) +
                        " ranks: fp32 master and AdamW moments" +
                        (o_.offload_param ? " and the parameter shard" : "") + "), but only " +
                        gib(available) + " GiB is available. Use more ranks or nodes, set "
                        "offload_param_device = \"none\", or free host memory.",
                        DSHOST_OUT_OF_MEMORY);
  }

  bool persistent(int u) const {
    return layout_->unit_size(u) < o_.param_persistence_threshold;
  }

  // ---- stage 3: gathering parameters ------------------------------------------------
  // Makes unit u whole for use, and starts gathering the next units in `direction` up to
  // prefetch_bucket_size elements ahead.
  void use(int u, int direction) {
    gather(u);
    gather_work_[u].wait();
    int64_t ahead = 0;
    for (int next = u + direction; next >= 0 && next < layout_->units(); next += direction) {
      ahead += layout_->unit_size(next);
      if (ahead > o_.prefetch_bucket_size) break;
      gather(next);
    }
  }

  void gather(int u) {
    if (gathered_[u]) return;
    gathered_[u] = true;
    allocate(params_[u]);
    own_chunk(params_[u], u).copy_(param_shard_.narrow(0, layout_->shard_begin[u], layout_->chunk[u]));
    const int64_t begin = services().rank() * layout_->chunk[u];
    gather_work_[u] = services().all_gather(dshost::slice(param_ids_[u], begin, layout_->chunk[u]),
                                            dshost::slice(param_ids_[u], 0, layout_->unit_size(u)));
  }

  void release(int u) {
    if (!gathered_[u] || persistent(u)) return;
    gather_work_[u].wait();
    deallocate(params_[u]);
    gathered_[u] = false;
  }

  // ---- gradients -----------------------------------------------------------------------
  // Starts the reduce-scatter of unit u's gradient into this rank's chunk (averaged over
  // ranks). Micro-batch 0 writes the gradient shard directly when the dtypes allow; later
  // micro-batches and bf16 reductions land in reduce_out_ and are added when done.
  void reduce(int u) {
    while (reductions_.size() >= 2) finish_oldest_reduction();
    const auto& s = services();
    const int64_t n = layout_->unit_size(u);
    dshost_slice in = dshost::slice(grad_ids_[u], 0, n);
    if (grads_[u].scalar_type() != o_.reduce_dtype) {
      const int slot = staging_turn_++ % 2;
      at::Tensor& staging = staging_buffer(slot);
      staging.narrow(0, 0, n).copy_(grads_[u]);
      in = dshost::slice(staging_ids_[slot], 0, n);
    }
    const bool fold = micro_index_ > 0 || o_.reduce_dtype != at::kFloat;
    const int32_t out_id = fold ? reduce_out_id() : grad_shard_id_;
    const auto out = dshost::slice(out_id, layout_->shard_begin[u], layout_->chunk[u]);
    reductions_.push_back({u, s.reduce_scatter(in, out, DSHOST_AVG), fold, micro_index_ == 0});
    if (!o_.overlap_comm) finish_oldest_reduction();
  }

  void finish_oldest_reduction() {
    Reduction r = std::move(reductions_.front());
    reductions_.pop_front();
    r.work.wait();
    if (r.fold) {
      const int64_t begin = layout_->shard_begin[r.unit], n = layout_->chunk[r.unit];
      at::Tensor target = grad_shard_.narrow(0, begin, n);
      at::Tensor reduced = reduce_out_.narrow(0, begin, n);
      if (r.first) target.copy_(reduced);
      else target.add_(reduced);
    }
    deallocate(grads_[r.unit]);
  }

  at::Tensor& staging_buffer(int slot) {
    if (staging_[slot].defined()) {
      allocate(staging_[slot]);
    } else {
      int64_t largest = 0;
      for (int u = 0; u < layout_->units(); ++u) largest = std::max(largest, layout_->unit_size(u));
      staging_[slot] = at::empty({largest}, at::TensorOptions().dtype(o_.reduce_dtype).device(device_));
      staging_ids_[slot] = services().register_buffer(dshost::to_dlpack(staging_[slot]));
    }
    return staging_[slot];
  }

  int32_t reduce_out_id() {
    if (!reduce_out_.defined()) {
      reduce_out_ = at::empty({layout_->shard}, at::TensorOptions().dtype(o_.reduce_dtype).device(device_));
      reduce_out_id_ = services().register_buffer(dshost::to_dlpack(reduce_out_));
    }
    return reduce_out_id_;
  }

  // ---- the update ------------------------------------------------------------------------
  void make_optimizer() {
    const auto& c = services().optimizer();
    if (c.kind == DSHOST_ADAMW && master_.is_cpu()) {
      exp_avg_ = at::zeros_like(master_);
      exp_avg_sq_ = at::zeros_like(master_);
      if (!grad_shard_.is_cpu()) grad_host_ = at::empty_like(master_);
    } else {
      flat_optimizer_ = std::make_unique<dshost::FlatOptimizer>(c, layout_->shard, master_.device());
    }
  }

  void update_master(double lr) {
    if (flat_optimizer_) {
      flat_optimizer_->step(master_, grad_shard_.to(master_.device()), lr);
      return;
    }
    const auto& c = services().optimizer();
    ++adam_steps_;
    const at::Tensor grad = grad_host_.defined() ? grad_host_.copy_(grad_shard_) : grad_shard_;
    const dshost::AdamWStep s{static_cast<float>(lr), static_cast<float>(c.beta1),
                              static_cast<float>(c.beta2), static_cast<float>(c.eps),
                              static_cast<float>(c.weight_decay),
                              static_cast<float>(1.0 - std::pow(c.beta1, adam_steps_)),
                              static_cast<float>(1.0 - std::pow(c.beta2, adam_steps_))};
    dshost::cpu_adamw(master_.data_ptr<float>(), grad.data_ptr<float>(), exp_avg_.data_ptr<float>(),
                      exp_avg_sq_.data_ptr<float>(), master_.numel(), s);
  }

  // The updated master shard back into the compute-dtype parameters.
  void write_back() {
    const auto& s = services();
    if (o_.stage == 3) {
      param_shard_.copy_(master_);
      for (int u = 0; u < layout_->units(); ++u)
        if (persistent(u)) {
          gathered_[u] = false;
          gather(u);
          gather_work_[u].wait();
        }
      return;
    }
    std::vector<dshost::Work> works;
    for (int u = 0; u < layout_->units(); ++u) {
      own_chunk(params_[u], u).copy_(master_.narrow(0, layout_->shard_begin[u], layout_->chunk[u]));
      const int64_t begin = s.rank() * layout_->chunk[u];
      works.push_back(s.all_gather(dshost::slice(param_ids_[u], begin, layout_->chunk[u]),
                                   dshost::slice(param_ids_[u], 0, layout_->unit_size(u))));
    }
    for (auto& w : works) w.wait();
  }

  const Options o_;
  const at::Device device_;
  const at::ScalarType dtype_;
  std::unique_ptr<dshost::FlatLayout> layout_;
  std::vector<at::Tensor> params_, grads_;  // [unit] full buffers in the compute dtype
  std::vector<std::vector<Views>> views_;   // [unit][index] what the model binds
  std::vector<int32_t> param_ids_, grad_ids_;
  at::Tensor param_shard_;                  // stage 3: this rank's chunks, compute dtype
  at::Tensor master_, exp_avg_, exp_avg_sq_, grad_host_;  // fp32 shard
  std::unique_ptr<dshost::FlatOptimizer> flat_optimizer_;
  int64_t adam_steps_ = 0;
  at::Tensor grad_shard_, reduce_out_, norm_;
  int32_t grad_shard_id_ = -1, reduce_out_id_ = -1, norm_id_ = -1;
  at::Tensor staging_[2];
  int32_t staging_ids_[2] = {-1, -1};
  unsigned staging_turn_ = 0;
  std::deque<Reduction> reductions_;
  std::vector<bool> gathered_;
  std::vector<dshost::Work> gather_work_;
  int micro_index_ = 0;
};

}  // namespace dshost_zero
