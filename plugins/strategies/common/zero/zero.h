// ZeRO stages 2 and 3 over the model's units (the zero2 and zero3-offload plugins), composed
// of this folder's parts: the shard's memory (shard_buffer.h), the reducer, the gatherer
// (stage 3), the sharded optimizer, the delayed update and the host-memory check.
//
// Memory per rank (P parameters, shard S = P/N elements, compute dtype c = bf16 or fp32):
//   stage 2: full parameters (P x c), fp32 gradient shard (4S), fp32 master + AdamW moments
//            (12S). A unit's full gradient lives only from its pre_backward until its
//            reduce-scatter has finished (at most two units at a time).
//   stage 3: parameter shard (S x c) plus the units currently gathered (the unit in use, the
//            prefetched ones, and units below param_persistence_threshold), fp32 gradient
//            shard, fp32 master + moments; gradient shard, master and moments in host memory
//            when the optimizer is offloaded (the accelerator then holds only the parameter
//            shard, the units in flight and the staging). With grad_accum_dtype = bf16
//            (DeepSpeed's name) that host gradient shard is bf16 (2S): reduced pieces are
//            rounded as they leave the accelerator, so half the bytes cross to the host and
//            the CPU AdamW reads half; a later micro-batch adds into it in bf16. With
//            offload_optimizer_ratio < 1 the first units keep all of that on the accelerator
//            (16 or 18 bytes an element) and the rest is offloaded.
//   both:    the reducer's two staging slots, present only between a step's first reduction
//            and its update. Setup builds each unit in host memory, so the accelerator never
//            holds an fp32 copy of the model.
//
// At one rank, with the gradient shard on the compute device in the model's dtype (an fp32
// model, or a bf16 one with grad_accum_dtype = bf16), each unit's gradient buffer is its range
// of the shard: backward accumulates into it across micro-batches, nothing is folded or
// reduced, and step() zeroes the shard after the update. Stage 2's unit events then do
// nothing, so train.cuda_graph may capture a micro-batch.
//
// step(): the reductions finished, the copy streams drained (the host reads the gradient
// shard and rewrites the parameter shard), the global norm, the optimizer, then every unit
// that stays whole gathered again.
#pragma once

#include "copy_streams.h"
#include "delayed_update.h"
#include "gatherer.h"
#include "options.h"
#include "reducer.h"
#include "shard_buffer.h"
#include "sharded_optimizer.h"

#include <dshost/strategy.hpp>

#include <memory>
#include <optional>
#include <vector>

namespace dshost_zero {

class Zero : public dshost::Strategy {
 public:
  Zero(const dshost::Services& s, Options o);
  ~Zero() override;

  void setup(const std::vector<dshost::UnitParams>& units) override;
  Views param_views(int unit, int index) override { return views_.at(unit).at(index); }
  // Stage 2 with the gradients in the shard: unit events launch nothing and wait for nothing,
  // so a micro-batch may be captured and replayed (train.cuda_graph).
  bool capturable() const override { return o_.stage == 2 && grads_in_shard_; }
  void begin_micro_batch(int index, int count) override;
  void on_unit_event(dshost_unit_event event, int unit) override;
  double step(const dshost_step_args& args) override;
  // Checkpoints: each rank saves its chunk of every unit (fp32 masters and moments); loading
  // reads them back, writes the masters into the compute-dtype parameters and gathers what
  // stays whole, as after a step.
  void save(const dshost::StateIO& io) override;
  void load(const dshost::StateIO& io) override;
  dshost_memory_report memory() const override;

 private:
  int64_t optimizer_split_of(const dshost::FlatLayout& layout) const;
  void check_host_memory_for(const std::vector<dshost::UnitParams>& units) const;
  void make_units(const std::vector<dshost::UnitParams>& units, int64_t piece);
  at::Tensor unit_from_rank0(const std::vector<dshost::UnitParams>& units, int u,
                             const Scratch& bounce) const;
  int64_t own_begin(int u) const {
    return layout_->unit_begin[u] + services().rank() * layout_->chunk[u];
  }
  at::TensorOptions on_device(at::ScalarType dtype) const {
    return at::TensorOptions().dtype(dtype).device(device_);
  }

  const Options o_;
  const at::Device device_;
  const at::ScalarType dtype_;
  const bool fused_adamw_;
  // One rank, the gradient shard beside the model in its dtype: each unit's gradient buffer is
  // its range of the shard, which backward accumulates into and step() reads and zeroes.
  const bool grads_in_shard_;
  std::unique_ptr<dshost::FlatLayout> layout_;
  std::unique_ptr<ShardMemory> memory_;
  std::vector<at::Tensor> params_, grads_;  // [unit] whole buffers in the compute dtype
  std::vector<std::vector<Views>> views_;   // [unit][index] what the model binds
  std::vector<int32_t> param_ids_, grad_ids_;
  ShardBuffer grad_shard_;                     // parts on the compute device are registered
  ShardBuffer param_shard_;                    // stage 3: this rank's chunks, compute dtype
  ShardBuffer param_shard_next_, grad_spare_;  // the delayed update's twins
  std::optional<CopyStreams> copies_;          // stage 3 with anything offloaded, on CUDA
  std::unique_ptr<Reducer> reducer_;
  std::unique_ptr<Gatherer> gatherer_;
  std::unique_ptr<ShardedOptimizer> optimizer_;
  std::unique_ptr<DelayedUpdate> delayed_;  // last: destroyed (waited for) before what it uses
};

}  // namespace dshost_zero
