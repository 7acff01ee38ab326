#include "sharded_optimizer.h"

#include <dshost/cpu_adam.hpp>

#if DSHOST_CUDA_ADAMW
#include "../cuda_adamw.h"

#include <c10/cuda/CUDAStream.h>
#else
#define DSHOST_CUDA_ADAMW 0
#endif

#include <ATen/record_function.h>

#include <algorithm>
#include <cmath>

namespace dshost_zero {

bool uses_fused_adamw(const Options& o, dshost_optimizer_kind optimizer, const at::Device& device,
                      at::ScalarType dtype) {
  return optimizer == DSHOST_ADAMW &&
         (o.offload_optimizer || !device.is_cuda() ||
          (DSHOST_CUDA_ADAMW && dtype == at::kBFloat16 && !o.offload_param));
}

void check_optimizer_options(const Options& o, bool fused_adamw, const at::Device& device,
                             at::ScalarType dtype) {
  if (o.grad_dtype != at::kFloat && !fused_adamw)
    throw dshost::Error(
        "strategy.grad_accum_dtype = \"bf16\" needs optimizer.name = \"adamw\" and, on a GPU, "
        "train.precision = \"bf16\" or offload_optimizer_device = \"cpu\": only dshost's fused "
        "AdamW reads bf16 gradients. Set those, or grad_accum_dtype = \"fp32\".",
        DSHOST_INVALID_ARGUMENT);
  if (o.offload_ratio >= 1) return;
  const bool cuda_update = !device.is_cuda() || (DSHOST_CUDA_ADAMW && dtype == at::kBFloat16);
  if (o.offload_optimizer && fused_adamw && cuda_update) return;
  throw dshost::Error(
      "strategy.offload_optimizer_ratio < 1 needs offload_optimizer_device = \"cpu\", "
      "optimizer.name = \"adamw\" and, on a GPU, "
      "train.precision = \"bf16\": the share kept on the GPU is updated there by dshost's "
      "fused CUDA AdamW, which writes bf16 parameters. Set those, or offload_optimizer_ratio = 1.",
      DSHOST_INVALID_ARGUMENT);
}

ShardedOptimizer::ShardedOptimizer(dshost::Services services, const Options& o,
                                   const dshost::FlatLayout& layout, at::Device device,
                                   at::ScalarType dtype, const ShardMemory& memory,
                                   const ShardBuffer& grads, const ShardBuffer& param_shard,
                                   const std::vector<at::Tensor>& params, DelayedUpdate* delayed,
                                   int64_t piece)
    : services_(services),
      o_(o),
      layout_(layout),
      device_(device),
      dtype_(dtype),
      memory_(memory),
      fused_(uses_fused_adamw(o, services.optimizer().kind, device, dtype)),
      grads_(grads),
      param_shard_(param_shard),
      params_(params),
      delayed_(delayed),
      piece_(piece),
      update_threads_(std::max(1, at::get_num_threads() - 1)) {
  const at::Device home = o_.offload_optimizer ? at::Device(at::kCPU) : device_;
  // The master is read and written by the CPU alone: pageable, like the moments.
  master_ = memory_.make(at::kFloat, home, false);
  if (fused_) {
    exp_avg_ = memory_.make(at::kFloat, home, false);
    exp_avg_sq_ = memory_.make(at::kFloat, home, false);
  } else {
    flat_ = std::make_unique<dshost::FlatOptimizer>(services_.optimizer(), layout_.shard, home);
  }
  adam_step_ = at::zeros({1}, at::TensorOptions().dtype(at::kDouble).device(device_));
}

void ShardedOptimizer::step(const dshost_step_args& args, const at::Tensor& norm) {
  RECORD_USER_SCOPE("zero::update");
  if (fused_) {
    update_fused(args, norm);
    return;
  }
  flat_->step(master_.parts[0], grads_.parts[0], args.lr, norm, args.max_grad_norm,
              dshost::skip_nonfinite(args));
  write_back(0, layout_.shard, param_shard_);
}

void ShardedOptimizer::write_back_all() { write_back(0, layout_.shard, param_shard_); }

dshost::NamedState ShardedOptimizer::unit_state(int u) {
  zero_fresh_moments();
  const int64_t begin = layout_.shard_begin[u], n = layout_.chunk[u];
  dshost::NamedState state{{"value", master_.range(begin, n)}};
  if (fused_) {
    state.push_back({"exp_avg", exp_avg_.range(begin, n)});
    state.push_back({"exp_avg_sq", exp_avg_sq_.range(begin, n)});
  } else {
    for (const auto& [key, t] : flat_->state()) state.push_back({key, t.narrow(0, begin, n)});
  }
  return state;
}

int64_t ShardedOptimizer::steps() const {
  return fused_ ? adam_step_.item<int64_t>() : flat_->steps();
}

void ShardedOptimizer::set_steps(int64_t steps) {
  if (fused_)
    adam_step_.fill_(steps);
  else
    flat_->set_steps(steps);
}

void ShardedOptimizer::for_each_buffer(const std::function<void(const at::Tensor&)>& f) const {
  for (const auto* b : {&master_, &exp_avg_, &exp_avg_sq_})
    for (const at::Tensor& part : b->parts) f(part);
}

// The moments start at zero, written by the first step (or checkpoint) that needs them, not
// at setup: until setup returns the host also holds the model's fp32 initial copy, and pages
// not yet written take no memory, so the largest model that fits is larger.
void ShardedOptimizer::zero_fresh_moments() {
  if (moments_zeroed_ || !fused_) return;
  exp_avg_.zero();
  exp_avg_sq_.zero();
  moments_zeroed_ = true;
}

// AdamW's step count lives on the compute device, so that a skipped step (found_inf) does not
// advance it without the host waiting to learn which steps were.
void ShardedOptimizer::advance_step(const at::Tensor& found_inf) {
  if (found_inf.defined())
    adam_step_.sub_(found_inf.to(at::kDouble) - 1.0);
  else
    adam_step_.add_(1.0);
}

// The step's AdamW constants for step count t, clipping by norm n (host values).
dshost::AdamWStep ShardedOptimizer::adamw_step(double lr, double t, double n,
                                               double max_grad_norm) const {
  const auto& c = services_.optimizer();
  return {static_cast<float>(lr),
          static_cast<float>(c.beta1),
          static_cast<float>(c.beta2),
          static_cast<float>(c.eps),
          static_cast<float>(c.weight_decay),
          static_cast<float>(dshost::bias_correction(c.beta1, t)),
          static_cast<float>(dshost::bias_correction(c.beta2, t)),
          static_cast<float>(dshost::clip_scale(n, max_grad_norm))};
}

// Part by part: the accelerator's by the CUDA kernel, then the host's by the CPU, which reads
// the norm and the step count: the one wait for the device. Under DPU both write the parameter
// shard's twin, which becomes the gathered one when the next step finds the host's update
// done. With skip_nonfinite a non-finite norm leaves every part, and the step count, as they
// were.
void ShardedOptimizer::update_fused(const dshost_step_args& args, const at::Tensor& norm) {
  zero_fresh_moments();
  const at::Tensor found_inf =
      dshost::skip_nonfinite(args) ? at::isfinite(norm).logical_not().to(at::kFloat) : at::Tensor();
  advance_step(found_inf);
  if (delayed_) {
    RECORD_USER_SCOPE("zero::wait_for_delayed_update");
    delayed_->finish();
  }
  const ShardBuffer& updated = delayed_ ? delayed_->next_params() : param_shard_;
  for (size_t p = 0; p < master_.parts.size(); ++p)
    if (master_.parts[p].is_cuda())
      update_on_device(args, norm, found_inf, static_cast<int>(p), updated);
  if (!master_.parts.back().is_cpu()) return;
  const at::Tensor read = at::cat({norm.view({1}), adam_step_}).cpu();
  const double n = read[0].item<double>(), t = read[1].item<double>();
  if (found_inf.defined() && !std::isfinite(n)) return;
  const dshost::AdamWStep adamw = adamw_step(args.lr, t, n, args.max_grad_norm);
  if (delayed_)
    delayed_->start([this, adamw](const ShardBuffer& grads, const ShardBuffer& params) {
      update_on_host(adamw, grads, params, update_threads_);
    });
  else
    update_on_host(adamw, grads_, param_shard_, at::get_num_threads());
}

// The fused CUDA AdamW (cuda_adamw.h) on shard part `part`, writing the updated master into
// the bf16 parameters (stage 3: `shard`) in the same pass, one launch for each range
// write_back would copy.
void ShardedOptimizer::update_on_device(const dshost_step_args& args, const at::Tensor& norm,
                                        const at::Tensor& found_inf, int part,
                                        const ShardBuffer& shard) {
#if DSHOST_CUDA_ADAMW
  const at::Tensor divisor =
      args.max_grad_norm > 0 ? dshost::clip_divisor(norm, args.max_grad_norm) : at::Tensor();
  const auto& c = services_.optimizer();
  const at::Tensor bias_corrections = at::cat({dshost::bias_correction(c.beta1, adam_step_),
                                               dshost::bias_correction(c.beta2, adam_step_)})
                                          .to(at::kFloat);
  const auto pointer = [](const at::Tensor& t) {
    return t.defined() ? t.data_ptr<float>() : nullptr;
  };
  const DeviceScalars scalars{pointer(divisor), pointer(bias_corrections), pointer(found_inf)};
  const dshost::AdamWStep step =
      adamw_step(args.lr, 1, 0, 0);  // bias corrections and clipping: on the device
  void* stream = c10::cuda::getCurrentCUDAStream(device_.index()).stream();
  for_each_parameter_range(master_.begin[part], master_.parts[part].numel(), shard,
                           [&](int64_t begin, int64_t n, const at::Tensor& out) {
                             const at::Tensor g = grads_.range(begin, n);
                             const CudaAdamWRange r{master_.range(begin, n).data_ptr<float>(),
                                                    g.data_ptr(),
                                                    g.scalar_type() == at::kBFloat16,
                                                    exp_avg_.range(begin, n).data_ptr<float>(),
                                                    exp_avg_sq_.range(begin, n).data_ptr<float>(),
                                                    static_cast<uint16_t*>(out.data_ptr()),
                                                    n};
                             if (const char* err = cuda_adamw(r, step, scalars, stream))
                               throw dshost::Error(
                                   std::string("the fused CUDA AdamW failed to launch: ") + err,
                                   DSHOST_INTERNAL);
                           });
#else
  (void)args, (void)norm, (void)found_inf, (void)part, (void)shard;
#endif
}

// Every shard part in host memory from `grads` (fp32 or bf16), a piece at a time.
void ShardedOptimizer::update_on_host(const dshost::AdamWStep& s, const ShardBuffer& grads,
                                      const ShardBuffer& shard, int threads) {
  for (size_t p = 0; p < master_.parts.size(); ++p) {
    if (!master_.parts[p].is_cpu()) continue;
    const at::Tensor& g = grads.parts[p];
    const int part = static_cast<int>(p);
    if (g.scalar_type() == at::kBFloat16)
      update_part_on_host(s, g.data_ptr<at::BFloat16>(), shard, part, threads);
    else
      update_part_on_host(s, g.data_ptr<float>(), shard, part, threads);
  }
}

// Each updated piece is written back (to the device asynchronously when the parameters live
// there) while the next one is computed. A bf16 parameter shard in host memory is written by
// the update itself.
template <class G>
void ShardedOptimizer::update_part_on_host(const dshost::AdamWStep& s, const G* g,
                                           const ShardBuffer& shard, int part, int threads) {
  float *p = master_.parts[part].data_ptr<float>(), *m = exp_avg_.parts[part].data_ptr<float>(),
        *v = exp_avg_sq_.parts[part].data_ptr<float>();
  const int64_t first = master_.begin[part], size = master_.parts[part].numel();
  if (has_param_shard(o_) && shard.parts[part].is_cpu() && dtype_ == at::kBFloat16) {
    dshost::cpu_adamw(p, g, m, v, size, s, shard.parts[part].data_ptr<at::BFloat16>(), threads);
    return;
  }
  for (int64_t begin = 0; begin < size; begin += piece_) {
    const int64_t n = std::min(piece_, size - begin);
    dshost::cpu_adamw(p + begin, g + begin, m + begin, v + begin, n, s, nullptr, threads);
    write_back(first + begin, n, shard);
  }
}

// Shard elements [begin, begin + n) of the updated master into the compute-dtype parameters.
// A host-to-device copy goes from pinned memory without blocking; the caching host allocator
// keeps that memory until the copy is done.
void ShardedOptimizer::write_back(int64_t begin, int64_t n, const ShardBuffer& shard) {
  for_each_parameter_range(
      begin, n, shard, [&](int64_t from, int64_t count, const at::Tensor& target) {
        const at::Tensor updated = master_.range(from, count);
        if (updated.device() == target.device())
          target.copy_(updated);
        else
          target.copy_(updated.to(memory_.pinned_if_host(dtype_, at::kCPU)), /*non_blocking=*/true);
      });
}

// Calls f(from, count, target) for the pieces of shard range [begin, begin + n) and the
// compute-dtype parameters each is written back into: the parameter shard `shard` (stage 3's,
// or stage 2's under DPU), a piece per part, or else stage 2's own chunks of the units
// overlapping the range.
void ShardedOptimizer::for_each_parameter_range(int64_t begin, int64_t n, const ShardBuffer& shard,
                                                const RangeTarget& f) const {
  if (has_param_shard(o_)) {
    for (size_t p = 0; p < shard.parts.size(); ++p) {
      const int64_t from = std::max(begin, shard.begin[p]);
      const int64_t to = std::min(begin + n, shard.begin[p] + shard.parts[p].numel());
      if (from < to) f(from, to - from, shard.range(from, to - from));
    }
    return;
  }
  const int rank = services_.rank();
  for (int u = 0; u < layout_.units(); ++u) {
    const int64_t from = std::max(begin, layout_.shard_begin[u]);
    const int64_t to = std::min(begin + n, layout_.shard_begin[u] + layout_.chunk[u]);
    if (from < to)
      f(from, to - from,
        own_chunk(layout_, rank, params_[u], u)
            .narrow(0, from - layout_.shard_begin[u], to - from));
  }
}

}  // namespace dshost_zero
