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
//            gradient shard, fp32 master + moments; gradient shard, master and moments in
//            host memory when the optimizer is offloaded (the accelerator then holds only
//            the parameter shard, the units in flight and the staging below). With
//            grad_accum_dtype = bf16 (DeepSpeed's name) that host gradient shard is bf16
//            (2S): reduced pieces are rounded as they leave the accelerator, so half the
//            bytes cross to the host and the CPU AdamW reads half; a later micro-batch adds
//            into it in bf16.
//            With offload_optimizer_ratio < 1 the first units keep all of that on the
//            accelerator (16 or 18 bytes an element), the rest is offloaded; see cut_shard().
//   both:    two staging slots for reductions, each reduce_bucket_size elements in and
//            reduce_bucket_size / N out, present only between a step's first reduction and
//            its update. Setup builds each unit in host memory, so the accelerator never
//            holds an fp32 copy of the model.
//
// Events: grads_ready(u) reduce-scatters u's gradient into the shard (averaged, in fp32 by
// default), accumulating across micro-batches. A unit's gradient is an [N, c] matrix (rank
// r's chunk in row r); it is reduced in pieces of b <= reduce_bucket_size / N columns, each
// [N, b] piece copied (and converted to the reduce dtype) into a staging slot, so a 100M
// parameter unit never needs a 100M-element fp32 buffer on the accelerator. Stage 3 also all-gathers u at pre_forward
// and pre_backward (prefetching the next units in that direction) and frees it after
// post_forward and grads_ready. Freed units keep their storage objects, emptied, so the
// model's parameter views and the tensors autograd saved see the memory again once it is
// refilled (as FSDP does).
//
// Copies between host and accelerator (stage 3 with anything offloaded, on CUDA) run on
// streams of their own, one each way, so they overlap the compute stream's kernels: a
// gather's host-to-device copy (and its all-gather) waits only for the compute work enqueued
// before its memory was allocated, which may still read a freed unit's block; a reduced
// piece's device-to-host copy waits for its reduction, and its staging slot is not refilled
// before the copy has drained it. step() waits for both streams before the host reads the
// gradient shard or rewrites the parameter shard. The norm of a gradient shard in host
// memory is summed on the device, piece by piece as the pieces leave, unless a later
// micro-batch added into the shard on the host.
//
// At one rank, with the gradient shard on the compute device in the model's dtype (an fp32
// model, or a bf16 one with grad_accum_dtype = bf16), each unit's gradient buffer is its
// range of the shard: backward accumulates into it across micro-batches, nothing is folded
// or reduced, and step() zeroes the shard after the update. Stage 2's unit events then do
// nothing, so train.cuda_graph may capture a micro-batch.
//
// A unit's chunk of the gradient shard is copied (not added) from its first reduction of a
// step; chunks no reduction reached are zeroed at step(), so the shard is never cleared as a
// whole.
//
// step(): global gradient norm from the shards (one scalar all-reduce), clipping, the
// optimizer on the fp32 master shard (a fused multi-threaded AdamW when it lives in CPU
// memory, a fused CUDA kernel beside a bf16 model), then the shard is written back into
// the compute-dtype parameters (by the CUDA kernel as it updates), stage 2's units
// all-gathered.
//
// delayed_parameter_update (stage 3 with optimizer and parameter shard in CPU memory):
// ZeRO-Offload's DPU. Step N's CPU AdamW runs on a thread of its own while the accelerator
// computes step N+1 from the parameters before update N, so every gradient is applied one
// step late (the loss and an evaluation also see parameters one update behind). Costs a
// second gradient shard and a second parameter shard in host memory: update N reads one and
// writes the other while step N+1's backward and gathers use their twins; step N+1 waits
// for update N, then the pairs swap. A checkpoint waits for the update in flight. With
// offload_optimizer_ratio < 1 the GPU's share is updated by the CUDA kernel into its part
// of the second parameter shard, so its gradients are one step late too (one rule for
// every parameter); its gradient part has no twin, as the stream orders its uses.
#pragma once

#include <dshost/cpu_adam.hpp>
#include <dshost/strategy.hpp>

#if DSHOST_CUDA_ADAMW
#include "cuda_adamw.h"

#include <c10/cuda/CUDAStream.h>
#else
#define DSHOST_CUDA_ADAMW 0
#endif

#include <ATen/record_function.h>  // phases as ranges in train.profile_steps traces
#include <c10/core/Event.h>
#include <c10/core/StreamGuard.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>

#include <algorithm>
#include <cmath>
#include <deque>
#include <future>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace dshost_zero {

struct Options {
  int stage = 2;
  bool overlap_comm = true;
  int64_t reduce_bucket_size = 0;  // elements per reduce-scatter
  at::ScalarType reduce_dtype = at::kFloat;
  // stage 3
  bool offload_optimizer = false;  // fp32 master + moments in CPU memory
  bool offload_param = false;      // the parameter shard in CPU memory
  double offload_ratio = 1.0;      // of the shard's optimizer offloaded (the rest stays on the device)
  bool pin_memory = true;
  bool delayed_update = false;             // DPU: the CPU update overlaps the next step
  at::ScalarType grad_dtype = at::kFloat;  // the gradient shard's (bf16: read by the fused AdamWs only)
  int64_t prefetch_bucket_size = 0;        // elements gathered ahead of use
  int64_t param_persistence_threshold = 0;  // units smaller than this stay gathered
};

// The keys both ZeRO plugins take, for their option tables.
#define DSHOST_ZERO_COMMON_OPTIONS                                                             \
  DSHOST_OPTION("overlap_comm", DSHOST_OPTION_BOOL, "true", nullptr,                           \
                "reduce each unit's gradient while backward goes on (false: one at a time)"), \
      DSHOST_OPTION("reduce_dtype", DSHOST_OPTION_STRING, "\"fp32\"", "fp32|bf16",            \
                    "dtype gradients are reduced in (bf16 halves traffic, loses precision)"),   \
      DSHOST_OPTION_RANGE("reduce_bucket_size", DSHOST_OPTION_INT, "5000000", 1, 1e12,         \
                          "gradient elements per reduce-scatter; bounds the staging memory"),   \
      DSHOST_OPTION("grad_accum_dtype", DSHOST_OPTION_STRING, "\"fp32\"", "fp32|bf16",          \
                    "dtype of the gradient shard, which micro-batches add into (bf16: half "     \
                    "its memory and copies; needs optimizer.name = \"adamw\")")

// Options with the common keys read from the plugin's section.
inline Options common_options(const dshost::Services& s, int stage) {
  Options o;
  o.stage = stage;
  o.overlap_comm = s.get_bool("overlap_comm");
  o.reduce_bucket_size = s.get_int("reduce_bucket_size");
  o.reduce_dtype = s.get_string("reduce_dtype") == "bf16" ? at::kBFloat16 : at::kFloat;
  o.grad_dtype = s.get_string("grad_accum_dtype") == "bf16" ? at::kBFloat16 : at::kFloat;
  return o;
}

// A shard-sized buffer in parts, cut between units: with offload_optimizer_ratio < 1 the
// first units' elements stay on the accelerator and the rest live where the buffer is
// offloaded; otherwise it is one part. Every range a unit touches lies in one part.
struct ShardBuffer {
  std::vector<int64_t> begin;     // where each part starts in the shard
  std::vector<at::Tensor> parts;  // [part] its elements, from begin[part]
  std::vector<int32_t> ids;       // [part] its registered id, or -1

  int part_of(int64_t index) const {
    return static_cast<int>(std::upper_bound(begin.begin(), begin.end(), index) - begin.begin()) - 1;
  }
  // Shard elements [from, from + n), which lie in one part.
  at::Tensor range(int64_t from, int64_t n) const {
    const int p = part_of(from);
    return parts[p].narrow(0, from - begin[p], n);
  }
  void zero() const {
    for (const at::Tensor& part : parts) part.zero_();
  }
};

class Zero : public dshost::Strategy {
 public:
  Zero(const dshost::Services& s, Options o)
      : Strategy(s), o_(o), device_(dshost::to_device(s.device())),
        dtype_(dshost::compute_dtype(s)), update_threads_(std::max(1, at::get_num_threads() - 1)),
        fused_adamw_(s.optimizer().kind == DSHOST_ADAMW &&
                     (o.offload_optimizer || !device_.is_cuda() ||
                      (DSHOST_CUDA_ADAMW && dtype_ == at::kBFloat16 && !o.offload_param))),
        grads_in_shard_(s.world_size() == 1 && !o.offload_optimizer && o.grad_dtype == dtype_) {}

  void setup(const std::vector<dshost::UnitParams>& units) override {
    const auto& s = services();
    check_delayed_update();
    check_grad_dtype();
    check_offload_ratio();
    layout_ = std::make_unique<dshost::FlatLayout>(units, s.world_size(), true);
    int64_t largest_chunk = 1;
    for (int64_t c : layout_->chunk) largest_chunk = std::max(largest_chunk, c);
    piece_ = std::clamp<int64_t>(o_.reduce_bucket_size / s.world_size(), 1, largest_chunk);
    cut_shard();
    check_host_memory(units);
    const at::Device optimizer_home = o_.offload_optimizer ? at::Device(at::kCPU) : device_;
    // The master is read and written by the CPU alone: pageable, like the moments. Gradient
    // shards start empty (each step's first reduction copies into a chunk, step() zeroes the
    // rest) unless backward adds into them; pages never written take no host memory while
    // setup still holds the model's fp32 copy.
    master_ = shard_buffer(at::kFloat, optimizer_home, false);
    grad_shard_ = shard_buffer(o_.grad_dtype, optimizer_home, true, true);
    if (grads_in_shard_) grad_shard_.zero();
    // (The twins are made as the originals are: *_like would drop pinned_memory, and pageable
    // copies ran at 8 GB/s every other step.)
    if (o_.delayed_update) grad_spare_ = shard_buffer(o_.grad_dtype, optimizer_home, true, true, &grad_shard_);
    if (device_.is_cuda() && o_.stage == 3 && (o_.offload_optimizer || o_.offload_param)) {
      const auto* impl = c10::impl::getDeviceGuardImpl(device_.type());
      copies_.emplace(Copies{impl->getStreamFromGlobalPool(device_), impl->getStreamFromGlobalPool(device_), {}});
      for (int slot = 0; slot < 2; ++slot) copies_->drained.emplace_back(device_.type());
    }
    fresh_.assign(units.size(), true);
    Scratch bounce = scratch(s.world_size() * piece_, at::kFloat);
    for (int u = 0; u < layout_->units(); ++u) {
      const at::Tensor full = unit_from_rank0(units, u, bounce);
      master_.range(layout_->shard_begin[u], layout_->chunk[u]).copy_(own_chunk(full, u));
      params_.push_back(at::empty({layout_->unit_size(u)}, on_device(dtype_)).copy_(full));
      grads_.push_back(grads_in_shard_ ? grad_shard_.range(layout_->shard_begin[u], layout_->chunk[u])
                                       : at::empty({layout_->unit_size(u)}, on_device(dtype_)));
      param_ids_.push_back(s.register_buffer(dshost::to_dlpack(params_[u])));
      grad_ids_.push_back(grads_in_shard_ ? -1 : s.register_buffer(dshost::to_dlpack(grads_[u])));
      // Views are made while the memory is there (as_strided checks bounds); then the
      // buffers are emptied, unit by unit, so setup never holds the whole model.
      std::vector<Views> views;
      for (size_t i = 0; i < units[u].values.size(); ++i)
        views.push_back({layout_->unit_view(params_[u], u, static_cast<int>(i)),
                         layout_->unit_view(grads_[u], u, static_cast<int>(i))});
      views_.push_back(std::move(views));
      if (!grads_in_shard_) deallocate(grads_[u]);
      if (o_.stage == 3 && !persistent(u)) deallocate(params_[u]);
    }
    deallocate(bounce.buffer);
    norm_ = at::zeros({1}, on_device(at::kDouble));
    pieces_sq_ = at::zeros({}, on_device(at::kDouble));
    norm_id_ = s.register_buffer(dshost::to_dlpack(norm_));
    const at::Device param_home = o_.offload_param ? at::Device(at::kCPU) : device_;
    if (o_.stage == 3) {  // (Tensor::to would ignore pinned_memory: pageable copies ran at 8 GB/s)
      param_shard_ = shard_buffer(dtype_, param_home, true);
      for (size_t p = 0; p < master_.parts.size(); ++p) param_shard_.parts[p].copy_(master_.parts[p]);
    }
    if (o_.delayed_update) param_shard_next_ = shard_buffer(dtype_, param_home, true);
    make_optimizer(optimizer_home);
    adam_step_ = at::zeros({1}, on_device(at::kDouble));
    gathered_.resize(layout_->units());
    for (int u = 0; u < layout_->units(); ++u) gathered_[u] = o_.stage == 2 || persistent(u);
    gather_work_.resize(layout_->units());
  }

  Views param_views(int unit, int index) override { return views_.at(unit).at(index); }

  // Stage 2 with the gradients in the shard: unit events launch nothing and wait for
  // nothing, so a micro-batch may be captured and replayed (train.cuda_graph).
  bool capturable() const override { return o_.stage == 2 && grads_in_shard_; }

  void begin_micro_batch(int /*index*/, int /*count*/) override {
    while (!reductions_.empty()) finish_oldest_reduction();
    if (copies_) copies_->to_host.synchronize();  // a later micro-batch adds on the host
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
        if (grads_in_shard_) break;
        allocate(grads_[unit]);
        grads_[unit].zero_();
        break;
      case DSHOST_GRADS_READY:
        if (!grads_in_shard_) reduce(unit);
        if (o_.stage == 3) release(unit);
        break;
    }
  }

  double step(const dshost_step_args& args) override {
    const auto& s = services();
    {
      RECORD_USER_SCOPE("zero::finish_reductions");
      while (!reductions_.empty()) finish_oldest_reduction();
    }
    if (copies_) {  // the host reads the gradient shard and rewrites the parameter shard
      copies_->to_host.synchronize();
      copies_->to_device.synchronize();
    }
    for (const Staging& slot : staging_) {  // transient, like the units' full gradients
      deallocate(slot.in.buffer);
      deallocate(slot.out.buffer);
    }
    if (!grads_in_shard_) zero_unreduced_chunks();
    const at::Tensor norm = global_norm();
    {
      RECORD_USER_SCOPE("zero::update");
      if (fused_adamw_) {
        update_fused(args, norm);
      } else {
        flat_optimizer_->step(master_.parts[0], grad_shard_.parts[0], args.lr, norm, args.max_grad_norm,
                              dshost::skip_nonfinite(args));
        write_back(0, layout_->shard, param_shard_);
      }
    }
    RECORD_USER_SCOPE("zero::after_update");
    if (grads_in_shard_) grad_shard_.zero();  // the next step's backward adds into it
    gather_everything_gathered();
    return dshost::report_norm(args, norm);
  }

  // Checkpoints: each rank saves its chunk of every unit (fp32 masters and moments); loading
  // reads them back, writes the masters into the compute-dtype parameters and gathers what
  // stays whole, as after a step.
  void save(const dshost::StateIO& io) override {
    finish_delayed_update();
    zero_fresh_moments();
    for (int u = 0; u < layout_->units(); ++u)
      dshost::save_range(io, *layout_, own_begin(u), own_begin(u) + layout_->chunk[u], unit_state(u));
    io.write("optimizer.step", at::full({1}, fused_adamw_ ? adam_step_.item<int64_t>() : flat_optimizer_->steps(), at::kLong));
  }

  void load(const dshost::StateIO& io) override {
    finish_delayed_update();
    zero_fresh_moments();
    for (int u = 0; u < layout_->units(); ++u)
      dshost::load_range(io, *layout_, own_begin(u), own_begin(u) + layout_->chunk[u], unit_state(u));
    const at::Tensor steps = at::zeros({1}, at::kLong);
    io.read("optimizer.step", steps);
    if (fused_adamw_) adam_step_.fill_(steps.item<int64_t>());
    else flat_optimizer_->set_steps(steps.item<int64_t>());
    write_back(0, layout_->shard, param_shard_);
    gather_everything_gathered();
  }

  dshost_memory_report memory() const override {
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
    for (const auto* b : {&param_shard_, &param_shard_next_}) add_parts(*b, &r.param_device, &r.param_host);
    if (!grads_in_shard_)  // (else ranges of the shard, counted below)
      for (const auto& g : grads_) add(g, &r.grad_device, &r.grad_host);
    for (const auto* b : {&grad_shard_, &grad_spare_}) add_parts(*b, &r.grad_device, &r.grad_host);
    for (const Staging& slot : staging_)
      for (const auto* t : {&slot.in.buffer, &slot.out.buffer}) add(*t, &r.grad_device, &r.grad_host);
    for (const auto* b : {&master_, &exp_avg_, &exp_avg_sq_}) add_parts(*b, &r.optim_device, &r.optim_host);
    if (flat_optimizer_)
      dshost::tally(flat_optimizer_->state_bytes(), flat_optimizer_->device(), device_,
                    &r.optim_device, &r.optim_host);
    return r;
  }

 private:
  // A registered buffer that is emptied between uses.
  struct Scratch {
    at::Tensor buffer;
    int32_t id = -1;
  };
  // Reduction staging: `in` holds an [N, b] gradient piece in the reduce dtype, `out` the
  // b reduced elements of this rank's chunk.
  struct Staging {
    Scratch in, out;
  };
  // One reduce-scatter in flight: columns [begin, begin + count) of unit's chunk.
  struct Reduction {
    int unit;
    int64_t begin, count;
    int slot;    // staging slot holding the output, or -1 when it went to the shard directly
    bool first;  // the unit's first reduction this step: copy, not add
    bool last;   // of the unit's pieces: its full gradient can go
    dshost::Work work;
  };

  at::TensorOptions on_device(at::ScalarType dtype) const {
    return at::TensorOptions().dtype(dtype).device(device_);
  }

  at::TensorOptions pinned_if_host(at::ScalarType dtype, at::Device where) const {
    return at::TensorOptions().dtype(dtype).device(where).pinned_memory(
        o_.pin_memory && where.is_cpu() && device_.is_cuda());
  }

  Scratch scratch(int64_t numel, at::ScalarType dtype) const {
    Scratch s{at::empty({numel}, on_device(dtype))};
    s.id = services().register_buffer(dshost::to_dlpack(s.buffer));
    return s;
  }

  at::Tensor own_chunk(const at::Tensor& unit_buffer, int u) const {
    return unit_buffer.narrow(0, services().rank() * layout_->chunk[u], layout_->chunk[u]);
  }

  // Where this rank's chunk of unit u starts in the flat layout.
  int64_t own_begin(int u) const {
    return layout_->unit_begin[u] + services().rank() * layout_->chunk[u];
  }

  // The fp32 state of this rank's chunk of unit u: master values and optimizer moments.
  dshost::NamedState unit_state(int u) const {
    const int64_t begin = layout_->shard_begin[u], n = layout_->chunk[u];
    dshost::NamedState state{{"value", master_.range(begin, n)}};
    if (fused_adamw_) {
      state.push_back({"exp_avg", exp_avg_.range(begin, n)});
      state.push_back({"exp_avg_sq", exp_avg_sq_.range(begin, n)});
    } else {
      for (const auto& [key, t] : flat_optimizer_->state()) state.push_back({key, t.narrow(0, begin, n)});
    }
    return state;
  }

  static void allocate(const at::Tensor& t) {
    if (t.defined()) dshost::resize_storage(t, static_cast<size_t>(t.numel()) * t.element_size());
  }
  static void deallocate(const at::Tensor& t) {
    if (t.defined()) dshost::resize_storage(t, 0);
  }

  // Unit u's initial values in fp32 host memory, rank 0's on every rank: broadcast in
  // pieces through `bounce` (registered memory on the device collectives run on).
  at::Tensor unit_from_rank0(const std::vector<dshost::UnitParams>& units, int u,
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

  // Host memory for what lives there (offloaded state on a GPU run; everything on a CPU
  // run) is checked up front, before anything is allocated: a clear refusal instead of the
  // kernel's OOM killer halfway through setup. Twice: what setup writes (all but the fused
  // AdamW's moments, zeroed at the first step) against what is available now, while the
  // host still holds the model's initial values; and all of it against that plus those
  // values, which the model releases when it binds the strategy's views.
  void check_host_memory(const std::vector<dshost::UnitParams>& units) const {
    const int64_t shard = layout_->shard - split_;  // (split_: what stays on the accelerator)
    const int64_t compute_bytes = dtype_ == at::kFloat ? 4 : 2;
    const int64_t copies = o_.delayed_update ? 2 : 1;  // DPU's second gradient and parameter shards
    const int64_t grad_bytes = at::elementSize(o_.grad_dtype);
    int64_t per_rank = 0;
    std::string what;
    if (!device_.is_cuda()) {
      per_rank = 12 * shard + copies * grad_bytes * shard +
                 compute_bytes * (o_.stage == 3 ? copies * shard : layout_->padded);
      what = "parameters, gradient shard, master and AdamW moments";
    } else if (o_.offload_optimizer || o_.offload_param) {
      per_rank = (o_.offload_optimizer ? 12 * shard + copies * pinned_bytes(grad_bytes * shard) : 0) +
                 (o_.offload_param ? copies * pinned_bytes(compute_bytes * shard) : 0);
      what = o_.offload_optimizer ? "gradient shard, master and AdamW moments" : "";
      if (o_.offload_param) what += what.empty() ? "the parameter shard" : " and the parameter shard";
    }
    const int64_t ranks = services().local_world_size();
    const int64_t moments = fused_adamw_ && (o_.offload_optimizer || !device_.is_cuda()) ? 8 * shard : 0;
    int64_t released = 0;
    for (const auto& unit : units)
      for (const at::Tensor& value : unit.values)
        if (value.is_cpu()) released += value.numel() * static_cast<int64_t>(value.element_size());
    const int64_t now = dshost::available_host_memory();
    const bool setup_fits = (per_rank - moments) * ranks <= now;
    const int64_t needed = per_rank * ranks;
    const int64_t available = setup_fits ? now + released * ranks : now;
    if (setup_fits && needed <= available) return;
    const auto gib = [](int64_t b) { return std::to_string(b / (1 << 20) / 1024.0).substr(0, 5); };
    throw dshost::Error(std::string(o_.stage == 3 ? "zero3-offload" : "zero2") + " needs " +
                            gib(needed) + " GiB of host memory on this node (" + gib(per_rank) +
                            " GiB for each of its " +
                            std::to_string(services().local_world_size()) + " ranks: " + what +
                            "), but only " + gib(available) +
                            " GiB is available. Use more nodes, a smaller model" +
                            (o_.offload_optimizer && device_.is_cuda() ? ", a lower offload_optimizer_ratio" : "") +
                            (o_.offload_param ? ", offload_param_device = \"none\"" : "") +
                            (o_.pin_memory ? ", pin_memory = false (pinned buffers round up to a power of two)" : "") +
                            ", or free host memory.",
                        DSHOST_OUT_OF_MEMORY);
  }

  // Host bytes a buffer of `bytes` takes where it is pinned: LibTorch's pinned-memory
  // allocator rounds every block up to a power of two (a 23 GB gradient shard takes 32 GB).
  int64_t pinned_bytes(int64_t bytes) const {
    if (!o_.pin_memory || !device_.is_cuda()) return bytes;
    int64_t rounded = 1;
    while (rounded < bytes) rounded <<= 1;
    return rounded;
  }

  // offload_optimizer_ratio (DeepSpeed's offload_optimizer.ratio, ZeRO-Offload++): the first
  // units, as many as fit in (1 - ratio) of the shard, keep master, moments, gradient and
  // parameter shard on the accelerator, updated there by the CUDA AdamW; the rest are
  // offloaded. A step then costs the CPU only the ratio's share, and the model may be as
  // large as host and accelerator memory together hold. Whole units, so that no unit's
  // gather, reduction or checkpoint range crosses the cut.
  void cut_shard() {
    if (o_.offload_optimizer && o_.offload_ratio < 1) {
      const double stays = (1 - o_.offload_ratio) * static_cast<double>(layout_->shard);
      for (int u = 0; u < layout_->units(); ++u) {
        const int64_t end = layout_->shard_begin[u] + layout_->chunk[u];
        if (static_cast<double>(end) > stays) break;
        split_ = end;
      }
      services().info("zero3-offload: " + std::to_string(split_) + " of " + std::to_string(layout_->shard) +
                      " shard elements keep their optimizer on the accelerator (offload_optimizer_ratio " +
                      std::to_string(o_.offload_ratio).substr(0, 4) + ")");
    }
  }

  // A shard buffer of `dtype` cut as cut_shard() decided: the part before split_ on the
  // compute device, the rest (or all) at `home`, pinned there when `pinnable` and pin_memory
  // say so; parts on the compute device registered when asked. Left uninitialised. A twin
  // (DPU's second gradient shard) shares `twin_of`'s part on a GPU: that part's update runs
  // on the compute stream, before the next backward can write it.
  ShardBuffer shard_buffer(at::ScalarType dtype, at::Device home, bool pinnable, bool registered = false,
                           const ShardBuffer* twin_of = nullptr) const {
    ShardBuffer b;
    const auto add_part = [&](int64_t begin, int64_t end, at::Device where) {
      b.begin.push_back(begin);
      if (twin_of && where.is_cuda()) {
        b.parts.push_back(twin_of->parts[b.parts.size()]);
        b.ids.push_back(twin_of->ids[b.ids.size()]);
        return;
      }
      const auto options = pinnable ? pinned_if_host(dtype, where) : at::TensorOptions().dtype(dtype).device(where);
      b.parts.push_back(at::empty({end - begin}, options));
      b.ids.push_back(registered && where == device_ ? services().register_buffer(dshost::to_dlpack(b.parts.back())) : -1);
    };
    if (split_ > 0) add_part(0, split_, device_);
    if (split_ == 0 || split_ < layout_->shard) add_part(split_, layout_->shard, home);
    return b;
  }

  bool persistent(int u) const {
    return layout_->unit_size(u) < o_.param_persistence_threshold;
  }

  // ---- stage 3: gathering parameters ------------------------------------------------
  // Makes unit u whole for use, and starts gathering the next units in `direction`: the
  // next one, and more up to prefetch_bucket_size elements ahead (none when it is 0).
  void use(int u, int direction) {
    RECORD_USER_SCOPE("zero::gather");
    gather(u);
    gather_work_[u].wait();
    int64_t ahead = 0;
    for (int next = u + direction; next >= 0 && next < layout_->units(); next += direction) {
      ahead += layout_->unit_size(next);
      // The next unit whatever its size (a 1.3B gpt's blocks exceed the default bucket),
      // further ones while they fit.
      if (o_.prefetch_bucket_size == 0 || (next != u + direction && ahead > o_.prefetch_bucket_size)) break;
      gather(next);
    }
  }

  // Starts making unit u whole: this rank's chunk (from the parameter shard under stage 3;
  // stage 2's write_back put it in place) all-gathered with every other rank's.
  void gather(int u) {
    if (gathered_[u]) return;
    gathered_[u] = true;
    c10::OptionalStreamGuard on_copy_stream;  // where the copy and the all-gather are enqueued
    if (o_.stage == 3) {
      allocate(params_[u]);
      const at::Tensor own = param_shard_.range(layout_->shard_begin[u], layout_->chunk[u]);
      if (copies_ && own.is_cpu()) {
        wait_for(copies_->to_device, compute_stream());
        on_copy_stream.reset_stream(copies_->to_device);
      }
      own_chunk(params_[u], u).copy_(own, /*non_blocking=*/true);  // pinned when on the host
    }
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
  // Starts reduce-scattering unit u's gradient into this rank's shard (averaged over ranks),
  // piece by piece. A unit that fits one piece and is already in the reduce dtype goes
  // without staging, and micro-batch 0 of an fp32 reduction lands in a device-resident
  // shard directly; everything else passes through a staging slot and is folded in
  // (copied or added, across devices when the shard lives on the host) when done.
  void reduce(int u) {
    RECORD_USER_SCOPE("zero::reduce");
    const bool first = fresh_[u];
    fresh_[u] = false;
    const int64_t c = layout_->chunk[u], n = layout_->unit_size(u);
    const at::Tensor target = grad_shard_.range(layout_->shard_begin[u], c);
    if (services().world_size() == 1 && target.device() == device_) {
      fold_in_alone(u, first);
      return;
    }
    const int part = grad_shard_.part_of(layout_->shard_begin[u]);
    const int32_t target_id = grad_shard_.ids[part];
    const bool unstaged = grads_[u].scalar_type() == o_.reduce_dtype && c <= piece_;
    for (int64_t begin = 0; begin < c; begin += piece_) {
      while (reductions_.size() >= 2) finish_oldest_reduction();
      const int64_t count = std::min(piece_, c - begin);
      const int slot = staging_turn_++ % 2;
      dshost_slice in = dshost::slice(grad_ids_[u], 0, n);
      if (!unstaged) in = stage_piece(u, begin, count, slot);
      Reduction r{u, begin, count, slot, first, begin + count >= c, {}};
      dshost_slice out;
      if (r.first && target_id >= 0 && o_.reduce_dtype == target.scalar_type()) {
        r.slot = -1;
        out = dshost::slice(target_id, layout_->shard_begin[u] - grad_shard_.begin[part] + begin, count);
      } else {
        out = dshost::slice(staging(slot).out.id, 0, count);
      }
      r.work = services().reduce_scatter(in, out, DSHOST_AVG);
      reductions_.push_back(std::move(r));
      if (!o_.overlap_comm) finish_oldest_reduction();
    }
  }

  // One rank, its shard beside the gradients: the unit's gradient is its own average, so it
  // goes into the shard in one kernel on the compute stream, rounded through the reduce
  // dtype as a reduction would, without staging or a collective (as ddp launches none).
  // (Whole at one rank, the chunk is the unit. A wider reduce dtype rounds nothing: no copy.)
  void fold_in_alone(int u, bool first) {
    const at::Tensor& grad = grads_[u];
    const at::Tensor reduced =
        at::elementSize(o_.reduce_dtype) < grad.element_size() ? grad.to(o_.reduce_dtype) : grad;
    const at::Tensor target = grad_shard_.range(layout_->shard_begin[u], layout_->chunk[u]);
    if (first) target.copy_(reduced);
    else target.add_(reduced);
    deallocate(grads_[u]);
  }

  // Columns [begin, begin + count) of unit u's [N, c] gradient into slot's `in`, converted.
  dshost_slice stage_piece(int u, int64_t begin, int64_t count, int slot) {
    const int64_t world = services().world_size();
    const Scratch& in = staging(slot).in;
    in.buffer.narrow(0, 0, world * count)
        .view({world, count})
        .copy_(grads_[u].view({world, layout_->chunk[u]}).narrow(1, begin, count));
    return dshost::slice(in.id, 0, world * count);
  }

  void finish_oldest_reduction() {
    Reduction r = std::move(reductions_.front());
    reductions_.pop_front();
    r.work.wait();
    if (r.slot >= 0) {
      const at::Tensor target = grad_shard_.range(layout_->shard_begin[r.unit] + r.begin, r.count);
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

  // A reduced piece into its place in the gradient shard. Into (pinned) host memory the copy
  // runs on the device-to-host stream while backward goes on, after its sum of squares has
  // been taken on the device for global_norm.
  void copy_out(const at::Tensor& reduced, const at::Tensor& target, int slot) {
    if (target.device() == device_) {
      target.copy_(reduced);
      return;
    }
    pieces_sq_.add_(dshost::sum_of_squares(reduced));
    wait_for(copies_->to_host, compute_stream());
    const c10::StreamGuard on_copy_stream(copies_->to_host);
    target.copy_(reduced, /*non_blocking=*/true);
    copies_->drained[slot].record(copies_->to_host);
  }

  c10::Stream compute_stream() const {
    return c10::impl::getDeviceGuardImpl(device_.type())->getStream(device_);
  }

  // Work enqueued on `waiter` from now on runs after everything enqueued on `signaller` so far.
  static void wait_for(const c10::Stream& waiter, const c10::Stream& signaller) {
    c10::Event enqueued(signaller.device_type());
    enqueued.record(signaller);
    enqueued.block(waiter);
  }

  // Slot `slot`, its memory present (made on first use, refilled after a step freed it) and
  // its last copy to the host done.
  Staging& staging(int slot) {
    if (copies_) copies_->drained[slot].block(compute_stream());
    Staging& s = staging_[slot];
    if (!s.in.buffer.defined()) {
      s.in = scratch(services().world_size() * piece_, o_.reduce_dtype);
      s.out = scratch(piece_, o_.reduce_dtype);
    }
    allocate(s.in.buffer);
    allocate(s.out.buffer);
    return s;
  }

  // ---- the update ------------------------------------------------------------------------
  // The global gradient norm, a one-element tensor on the compute device. A shard in host
  // memory had its pieces' squares summed on the device as they left (copy_out), unless a
  // micro-batch added into it on the host.
  at::Tensor global_norm() {
    RECORD_USER_SCOPE("zero::norm");
    norm_.zero_();
    for (const at::Tensor& part : grad_shard_.parts) {
      const bool summed_on_device = part.is_cpu() && !device_.is_cpu() && !accumulated_;
      norm_.add_((summed_on_device ? pieces_sq_ : dshost::sum_of_squares(part)).to(device_).view({1}));
    }
    pieces_sq_.zero_();
    accumulated_ = false;
    services().all_reduce(dshost::slice(norm_id_, 0, 1), DSHOST_SUM).wait();
    return norm_.sqrt();
  }

  // Zeroes the gradient shard's chunks of units no reduction reached this step (the others
  // were copied into), and makes every chunk fresh for the next step.
  void zero_unreduced_chunks() {
    for (int u = 0; u < layout_->units(); ++u) {
      if (fresh_[u]) grad_shard_.range(layout_->shard_begin[u], layout_->chunk[u]).zero_();
      fresh_[u] = true;
    }
  }

  // dshost's fused AdamWs keep their moments beside the master, zeroed by zero_fresh_moments;
  // any other optimizer is the SDK's FlatOptimizer over the whole shard (one part).
  void make_optimizer(at::Device home) {
    if (fused_adamw_) {
      exp_avg_ = shard_buffer(at::kFloat, home, false);
      exp_avg_sq_ = shard_buffer(at::kFloat, home, false);
    } else {
      flat_optimizer_ = std::make_unique<dshost::FlatOptimizer>(services().optimizer(), layout_->shard, home);
    }
  }

  // The moments start at zero, written by the first step (or checkpoint) that needs them,
  // not at setup: until setup returns the host also holds the model's fp32 initial copy, and
  // pages not yet written take no memory, so the largest model that fits is larger.
  void zero_fresh_moments() {
    if (moments_zeroed_ || !fused_adamw_) return;
    exp_avg_.zero();
    exp_avg_sq_.zero();
    moments_zeroed_ = true;
  }

  // AdamW's step count lives on the compute device, so that a skipped step (found_inf, see
  // update_fused) does not advance it without the host waiting to learn which steps were.
  void advance_step(const at::Tensor& found_inf) {
    if (found_inf.defined()) adam_step_.sub_(found_inf.to(at::kDouble) - 1.0);
    else adam_step_.add_(1.0);
  }

  // The step's AdamW constants for step count t, clipping by norm n (host values).
  dshost::AdamWStep adamw_step(double lr, double t, double n, double max_grad_norm) const {
    const auto& c = services().optimizer();
    const double grad_scale = max_grad_norm > 0 && n > max_grad_norm ? max_grad_norm / (n + 1e-6) : 1.0;
    return {static_cast<float>(lr), static_cast<float>(c.beta1), static_cast<float>(c.beta2),
            static_cast<float>(c.eps), static_cast<float>(c.weight_decay),
            static_cast<float>(1.0 - std::pow(c.beta1, t)), static_cast<float>(1.0 - std::pow(c.beta2, t)),
            static_cast<float>(grad_scale)};
  }

  // dshost's fused AdamW, part by part: the accelerator's by the CUDA kernel, which reads the
  // clipping divisor, the bias corrections and found_inf on the device (no wait), then the
  // host's by the CPU, which reads the norm and the step count: the one wait for the device.
  // Under DPU both write the parameter shard's twin, which becomes the gathered one when the
  // next step finds the host's update done. With skip_nonfinite a non-finite norm leaves
  // every part, and the step count, as they were.
  void update_fused(const dshost_step_args& args, const at::Tensor& norm) {
    zero_fresh_moments();
    const at::Tensor found_inf = dshost::skip_nonfinite(args) ? at::isfinite(norm).logical_not().to(at::kFloat)
                                                               : at::Tensor();
    advance_step(found_inf);
    if (o_.delayed_update) {
      RECORD_USER_SCOPE("zero::wait_for_delayed_update");
      finish_delayed_update();
    }
    const ShardBuffer& updated = o_.delayed_update ? param_shard_next_ : param_shard_;
    for (size_t p = 0; p < master_.parts.size(); ++p)
      if (master_.parts[p].is_cuda()) update_on_device(args, norm, found_inf, static_cast<int>(p), updated);
    if (!master_.parts.back().is_cpu()) return;
    const at::Tensor read = at::cat({norm.view({1}), adam_step_}).cpu();
    const double n = read[0].item<double>(), t = read[1].item<double>();
    if (found_inf.defined() && !std::isfinite(n)) return;
    const dshost::AdamWStep adamw = adamw_step(args.lr, t, n, args.max_grad_norm);
    if (o_.delayed_update) start_delayed_update(adamw);
    else update_on_host_and_write_back(adamw, grad_shard_, param_shard_, at::get_num_threads());
  }

  // The fused CUDA AdamW (cuda_adamw.h) on shard part `part`, writing the updated master into
  // the bf16 parameters (stage 3: `shard`) in the same pass, one launch for each range
  // write_back would copy.
  void update_on_device(const dshost_step_args& args, const at::Tensor& norm, const at::Tensor& found_inf,
                        int part, const ShardBuffer& shard) {
#if DSHOST_CUDA_ADAMW
    const at::Tensor divisor = args.max_grad_norm > 0 ? dshost::clip_divisor(norm, args.max_grad_norm) : at::Tensor();
    const auto& c = services().optimizer();
    const at::Tensor bias_corrections =
        at::cat({1.0 - at::pow(c.beta1, adam_step_), 1.0 - at::pow(c.beta2, adam_step_)}).to(at::kFloat);
    const auto pointer = [](const at::Tensor& t) { return t.defined() ? t.data_ptr<float>() : nullptr; };
    const DeviceScalars scalars{pointer(divisor), pointer(bias_corrections), pointer(found_inf)};
    const dshost::AdamWStep step = adamw_step(args.lr, 1, 0, 0);  // bias corrections and clipping: on the device
    void* stream = c10::cuda::getCurrentCUDAStream(device_.index()).stream();
    const auto update = [&](int64_t begin, int64_t n, const at::Tensor& out) {
      const at::Tensor g = grad_shard_.range(begin, n);
      const CudaAdamWRange r{master_.range(begin, n).data_ptr<float>(), g.data_ptr(),
                             g.scalar_type() == at::kBFloat16, exp_avg_.range(begin, n).data_ptr<float>(),
                             exp_avg_sq_.range(begin, n).data_ptr<float>(),
                             static_cast<uint16_t*>(out.data_ptr()), n};
      if (const char* err = cuda_adamw(r, step, scalars, stream))
        throw dshost::Error(std::string("the fused CUDA AdamW failed to launch: ") + err, DSHOST_INTERNAL);
    };
    for_each_parameter_range(master_.begin[part], master_.parts[part].numel(), shard, update);
#else
    (void)args, (void)norm, (void)found_inf, (void)part, (void)shard;
#endif
  }

  // The fused CPU AdamW (clipping folded in as a gradient scale) on every shard part in host
  // memory, from `grads` (fp32 or bf16), a piece at a time; each updated piece is written
  // back (to the device asynchronously when the parameters live there) while the next one
  // is computed. A bf16 parameter shard in host memory (`shard`) is written by the update
  // itself.
  void update_on_host_and_write_back(const dshost::AdamWStep& s, const ShardBuffer& grads,
                                     const ShardBuffer& shard, int threads) {
    for (size_t p = 0; p < master_.parts.size(); ++p) {
      if (!master_.parts[p].is_cpu()) continue;
      const at::Tensor& g = grads.parts[p];
      const int part = static_cast<int>(p);
      if (g.scalar_type() == at::kBFloat16)
        update_on_host_and_write_back(s, g.data_ptr<at::BFloat16>(), shard, part, threads);
      else
        update_on_host_and_write_back(s, g.data_ptr<float>(), shard, part, threads);
    }
  }
  template <class G>
  void update_on_host_and_write_back(const dshost::AdamWStep& s, const G* g, const ShardBuffer& shard,
                                     int part, int threads) {
    float *p = master_.parts[part].data_ptr<float>(), *m = exp_avg_.parts[part].data_ptr<float>(),
          *v = exp_avg_sq_.parts[part].data_ptr<float>();
    const int64_t first = master_.begin[part], size = master_.parts[part].numel();
    if (o_.stage == 3 && shard.parts[part].is_cpu() && dtype_ == at::kBFloat16) {
      dshost::cpu_adamw(p, g, m, v, size, s, shard.parts[part].data_ptr<at::BFloat16>(), threads);
      return;
    }
    for (int64_t begin = 0; begin < size; begin += piece_) {
      const int64_t n = std::min(piece_, size - begin);
      dshost::cpu_adamw(p + begin, g + begin, m + begin, v + begin, n, s, nullptr, threads);
      write_back(first + begin, n, shard);
    }
  }

  // bf16 gradients are read by dshost's fused AdamWs alone (PyTorch's takes fp32).
  void check_grad_dtype() const {
    if (o_.grad_dtype == at::kFloat || fused_adamw_) return;
    throw dshost::Error(
        "strategy.grad_accum_dtype = \"bf16\" needs optimizer.name = \"adamw\" and, on a GPU, "
        "train.precision = \"bf16\" or offload_optimizer_device = \"cpu\": only dshost's fused "
        "AdamW reads bf16 gradients. Set those, or grad_accum_dtype = \"fp32\".",
        DSHOST_INVALID_ARGUMENT);
  }

  // The accelerator's share of a split optimizer is updated by the CUDA AdamW, which writes
  // bf16 parameters and runs on the compute stream (under DPU too, not on DPU's thread).
  void check_offload_ratio() const {
    if (o_.offload_ratio >= 1) return;
    const bool cuda_update = !device_.is_cuda() || (DSHOST_CUDA_ADAMW && dtype_ == at::kBFloat16);
    if (o_.offload_optimizer && fused_adamw_ && cuda_update) return;
    throw dshost::Error(
        "strategy.offload_optimizer_ratio < 1 needs offload_optimizer_device = \"cpu\", "
        "optimizer.name = \"adamw\" and, on a GPU, "
        "train.precision = \"bf16\": the share kept on the GPU is updated there by dshost's "
        "fused CUDA AdamW, which writes bf16 parameters. Set those, or offload_optimizer_ratio = 1.",
        DSHOST_INVALID_ARGUMENT);
  }

  // ---- delayed parameter update -------------------------------------------------------
  // Only where the update touches host memory alone: nothing on the worker thread uses the
  // accelerator or its stream.
  void check_delayed_update() const {
    if (!o_.delayed_update) return;
    if (o_.stage == 3 && o_.offload_optimizer && (o_.offload_param || !device_.is_cuda()) &&
        services().optimizer().kind == DSHOST_ADAMW)
      return;
    throw dshost::Error(
        "strategy.delayed_parameter_update = true needs zero3-offload with "
        "offload_optimizer_device = \"cpu\", offload_param_device = \"cpu\" and "
        "optimizer.name = \"adamw\": the overlapped update runs on the CPU. Set those, or "
        "delayed_parameter_update = false.",
        DSHOST_INVALID_ARGUMENT);
  }

  // Starts step N's host update from the gradients just reduced, once update_fused found
  // step N-1's done (its parameters are the ones step N+1 gathers); the next backward fills
  // the other gradient shard. step() waited for the copy streams and, reading the norm, for
  // the compute stream, so no gather still reads the shard the update overwrites.
  void start_delayed_update(const dshost::AdamWStep& s) {
    std::swap(grad_shard_, grad_spare_);
    pending_update_ = std::async(std::launch::async, [this, s] {
      RECORD_USER_SCOPE("zero::delayed_update");
      update_on_host_and_write_back(s, grad_spare_, param_shard_next_, update_threads_);
    });
  }

  // The update in flight done, its parameters become the ones gathered.
  void finish_delayed_update() {
    if (!pending_update_.valid()) return;
    pending_update_.get();
    std::swap(param_shard_, param_shard_next_);
  }

  // Shard elements [begin, begin + n) of the updated master into the compute-dtype
  // parameters. A host-to-device copy goes from pinned memory without blocking; the caching
  // host allocator keeps that memory until the copy is done.
  void write_back(int64_t begin, int64_t n, const ShardBuffer& shard) {
    for_each_parameter_range(begin, n, shard, [&](int64_t from, int64_t count, const at::Tensor& target) {
      const at::Tensor updated = master_.range(from, count);
      if (updated.device() == target.device()) target.copy_(updated);
      else target.copy_(updated.to(pinned_if_host(dtype_, at::kCPU)), /*non_blocking=*/true);
    });
  }

  // Calls f(from, count, target) for the pieces of shard range [begin, begin + n) and the
  // compute-dtype parameters each is written back into: stage 3's parameter shard `shard`,
  // a piece per part, or stage 2's own chunks of the units overlapping the range.
  template <class F>
  void for_each_parameter_range(int64_t begin, int64_t n, const ShardBuffer& shard, const F& f) {
    if (o_.stage == 3) {
      for (size_t p = 0; p < shard.parts.size(); ++p) {
        const int64_t from = std::max(begin, shard.begin[p]);
        const int64_t to = std::min(begin + n, shard.begin[p] + shard.parts[p].numel());
        if (from < to) f(from, to - from, shard.range(from, to - from));
      }
      return;
    }
    for (int u = 0; u < layout_->units(); ++u) {
      const int64_t from = std::max(begin, layout_->shard_begin[u]);
      const int64_t to = std::min(begin + n, layout_->shard_begin[u] + layout_->chunk[u]);
      if (from < to) f(from, to - from, own_chunk(params_[u], u).narrow(0, from - layout_->shard_begin[u], to - from));
    }
  }

  // After the update, every unit that stays whole gathers its new values: all units under
  // stage 2, the persistent ones under stage 3.
  void gather_everything_gathered() {
    for (int u = 0; u < layout_->units(); ++u)
      if (gathered_[u]) {
        gathered_[u] = false;
        gather(u);
      }
    for (int u = 0; u < layout_->units(); ++u)
      if (gathered_[u]) gather_work_[u].wait();
  }

  const Options o_;
  const at::Device device_;
  const at::ScalarType dtype_;
  const int update_threads_;  // the delayed update's: one core stays with the step
  // AdamW by dshost's fused loops: the CPU's on a master in host memory, the CUDA kernel on
  // one beside bf16 parameters (which it writes too); otherwise the SDK's FlatOptimizer.
  const bool fused_adamw_;
  // One rank, the gradient shard beside the model in its dtype: each unit's gradient buffer
  // is its range of the shard, which backward accumulates into and step() reads and zeroes.
  const bool grads_in_shard_;
  std::unique_ptr<dshost::FlatLayout> layout_;
  int64_t piece_ = 1;                       // chunk columns per reduce-scatter
  std::vector<at::Tensor> params_, grads_;  // [unit] full buffers in the compute dtype
  std::vector<std::vector<Views>> views_;   // [unit][index] what the model binds
  std::vector<int32_t> param_ids_, grad_ids_;
  int64_t split_ = 0;                // shard elements whose optimizer stays on the accelerator
  ShardBuffer param_shard_;                   // stage 3: this rank's chunks, compute dtype
  ShardBuffer param_shard_next_, grad_spare_;  // the delayed update's twins
  ShardBuffer master_, exp_avg_, exp_avg_sq_;  // fp32
  std::unique_ptr<dshost::FlatOptimizer> flat_optimizer_;
  at::Tensor adam_step_;  // fused AdamW's step count, double on the compute device
  bool moments_zeroed_ = false;  // see zero_fresh_moments
  ShardBuffer grad_shard_;  // parts on the compute device are registered: reductions land there
  at::Tensor norm_;
  int32_t norm_id_ = -1;
  Staging staging_[2];
  unsigned staging_turn_ = 0;
  std::deque<Reduction> reductions_;
  std::vector<bool> gathered_;
  std::vector<dshost::Work> gather_work_;
  std::vector<bool> fresh_;  // [unit] no reduction this step yet: the next one copies
  at::Tensor pieces_sq_;     // sum of squares of the pieces copied to a host gradient shard
  bool accumulated_ = false;  // a reduction added into the shard this step
  // Stage 3's copy streams (CUDA, something offloaded) and, per staging slot, the event
  // after which its last copy to the host has read it.
  struct Copies {
    c10::Stream to_device, to_host;
    std::vector<c10::Event> drained;
  };
  std::optional<Copies> copies_;
  std::future<void> pending_update_;  // last: destroyed (waited for) before what it uses
};

}  // namespace dshost_zero
