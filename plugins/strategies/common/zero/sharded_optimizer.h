// The optimizer over a rank's shard: fp32 master values and their state, updated from the
// gradient shard and written back into the compute-dtype parameters.
//
// AdamW runs as dshost's fused loops where they apply: the CPU's multi-threaded AdamW on a
// master in host memory (clipping folded in as a gradient scale, each updated piece written
// back while the next is computed), the CUDA kernel on one beside bf16 parameters (it writes
// them as it updates, reading the clipping divisor, the bias corrections and found_inf on the
// device, so the host need not wait). With offload_optimizer_ratio < 1 the shard's first part
// is updated by the kernel and the rest by the CPU. Any other optimizer is the SDK's
// FlatOptimizer over the whole shard (one part).
//
// Where the updated values go: stage 3's parameter shard (DPU: its twin), or stage 2's own
// chunks of the whole units.
#pragma once

#include "delayed_update.h"
#include "options.h"
#include "shard_buffer.h"

#include <dshost/adamw.hpp>

#include <functional>
#include <memory>
#include <vector>

namespace dshost_zero {

// Whether dshost's fused AdamWs update this configuration (else the SDK's FlatOptimizer).
bool uses_fused_adamw(const Options& o, dshost_optimizer_kind optimizer, const at::Device& device,
                      at::ScalarType dtype);
// bf16 gradients are read by dshost's fused AdamWs alone; a split optimizer's accelerator
// share is updated by the CUDA AdamW, which writes bf16 parameters. Throws dshost::Error
// (DSHOST_INVALID_ARGUMENT) for configurations that break either.
void check_optimizer_options(const Options& o, bool fused_adamw, const at::Device& device,
                             at::ScalarType dtype);

class ShardedOptimizer {
 public:
  // `grads`, `param_shard` (stage 3), `params` (the units' whole buffers) and `delayed` are
  // the strategy's and outlive the optimizer. `piece`: elements per host write-back.
  ShardedOptimizer(dshost::Services services, const Options& o, const dshost::FlatLayout& layout,
                   at::Device device, at::ScalarType dtype, const ShardMemory& memory,
                   const ShardBuffer& grads, const ShardBuffer& param_shard,
                   const std::vector<at::Tensor>& params, DelayedUpdate* delayed, int64_t piece);

  bool fused() const { return fused_; }
  // The fp32 master values, which setup fills.
  const ShardBuffer& master() const { return master_; }
  // One step from the gradient shard, its global norm `norm` on the device.
  void step(const dshost_step_args& args, const at::Tensor& norm);
  // The master written into the compute-dtype parameters (after a load).
  void write_back_all();
  // Unit u's fp32 state, for checkpoints: master values and moments.
  dshost::NamedState unit_state(int u);
  int64_t steps() const;
  void set_steps(int64_t steps);
  // Calls f on the master's and the fused AdamW's buffers, for memory reports; the
  // FlatOptimizer (where used) counts its own.
  void for_each_buffer(const std::function<void(const at::Tensor&)>& f) const;
  const dshost::FlatOptimizer* flat_optimizer() const { return flat_.get(); }

 private:
  void zero_fresh_moments();
  void advance_step(const at::Tensor& found_inf);
  dshost::AdamWStep adamw_step(double lr, double t, double n, double max_grad_norm) const;
  void update_fused(const dshost_step_args& args, const at::Tensor& norm);
  void update_on_device(const dshost_step_args& args, const at::Tensor& norm,
                        const at::Tensor& found_inf, int part, const ShardBuffer& shard);
  void update_on_host(const dshost::AdamWStep& s, const ShardBuffer& grads,
                      const ShardBuffer& shard, int threads);
  template <class G>
  void update_part_on_host(const dshost::AdamWStep& s, const G* g, const ShardBuffer& shard,
                           int part, int threads);
  void write_back(int64_t begin, int64_t n, const ShardBuffer& shard);
  using RangeTarget = std::function<void(int64_t from, int64_t count, const at::Tensor& target)>;
  void for_each_parameter_range(int64_t begin, int64_t n, const ShardBuffer& shard,
                                const RangeTarget& f) const;

  dshost::Services services_;
  Options o_;
  const dshost::FlatLayout& layout_;
  at::Device device_;
  at::ScalarType dtype_;
  const ShardMemory& memory_;
  bool fused_;
  const ShardBuffer& grads_;
  const ShardBuffer& param_shard_;
  const std::vector<at::Tensor>& params_;
  DelayedUpdate* delayed_;
  int64_t piece_;
  int update_threads_;                         // the delayed update's: one core stays with the step
  ShardBuffer master_, exp_avg_, exp_avg_sq_;  // fp32
  std::unique_ptr<dshost::FlatOptimizer> flat_;
  at::Tensor adam_step_;         // the fused AdamWs' step count, double on the compute device
  bool moments_zeroed_ = false;  // see zero_fresh_moments
};

}  // namespace dshost_zero
