// ddp's optimizer over the rank's shard of the flat parameters. Under bf16 precision (ZeRO's
// mixed-precision stage 1) the shard keeps fp32 master values here, beside the optimizer's
// state: a step updates the masters from the shard's bf16 gradients and writes them back,
// rounded, into the bf16 parameters. On a GPU with AdamW that is dshost's fused CUDA AdamW
// (cuda_adamw.h): one pass that reads the bf16 gradients and writes the bf16 parameters, its
// clipping divisor, bias corrections and skip decision read on the device. Elsewhere it is
// the SDK's FlatOptimizer over the masters, from an fp32 copy of the gradients. fp32
// parameters are their own masters.
#pragma once

#include <dshost/strategy.hpp>

#include <memory>

class MasterShard {
 public:
  // `params`: the shard's range of the flat parameters; `values`: its fp32 values (the
  // masters start from them, not from their rounded copies in `params`).
  MasterShard(const dshost::Services& s, at::Tensor params, const at::Tensor& values);

  // One step from the shard's gradients (the parameters' dtype, or fp32 sums), their global
  // norm `norm` a one-element double tensor on the device.
  void step(const at::Tensor& grads, const dshost_step_args& args, const at::Tensor& norm);
  // The parameters rewritten from the masters, after a checkpoint loaded them.
  void write_back();

  // What a checkpoint keeps: "value" (the masters), then the optimizer's state by PyTorch's
  // names, each as long as the shard.
  dshost::NamedState state() const;
  int64_t steps() const;
  void set_steps(int64_t steps);
  // Bytes of masters and optimizer state, which live on the parameters' device.
  int64_t state_bytes() const;

 private:
  void step_on_cuda(const at::Tensor& grads, const dshost_step_args& args, const at::Tensor& norm);

  dshost::Services services_;
  at::Tensor params_, master_;  // master_ is params_ itself for fp32 parameters
  bool cuda_adamw_;
  std::unique_ptr<dshost::FlatOptimizer> flat_;   // where cuda_adamw_ is false
  at::Tensor exp_avg_, exp_avg_sq_, step_count_;  // where it is true; the count a device double
};
