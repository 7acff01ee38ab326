// Stages 2 and 3's gradient reduction. grads_ready(u) reduce-scatters unit u's gradient into
// the rank's gradient shard (averaged over ranks, in fp32 by default), accumulating across
// micro-batches. A unit's gradient is an [N, c] matrix (rank r's chunk in row r); it is reduced
// in pieces of b <= reduce_bucket_size / N columns, each [N, b] piece copied (and converted to
// the reduce dtype) into one of two staging slots, so a 100M-parameter unit never needs a
// 100M-element fp32 buffer on the accelerator. Staging is present only between a step's first
// reduction and its update.
//
// A unit's chunk of the gradient shard is copied (not added) from its first reduction of a
// step; chunks no reduction reached are zeroed at the step, so the shard is never cleared as a
// whole. Into a shard in (pinned) host memory a reduced piece is copied on the device-to-host
// stream while backward goes on, and its slot is not refilled before the copy has drained it;
// the piece's sum of squares is taken on the device first, for the norm.
#pragma once

#include "copy_streams.h"
#include "options.h"
#include "scratch.h"
#include "shard_buffer.h"

#include <deque>
#include <functional>
#include <vector>

namespace dshost_zero {

// Chunk columns per reduce-scatter: reduce_bucket_size elements over N ranks, at most the
// largest chunk.
int64_t reduction_piece(const dshost::FlatLayout& layout, int64_t reduce_bucket_size,
                        int world_size);

class Reducer {
 public:
  // `grad_shard`, `grads` (the units' full gradient buffers) and `copies` are the strategy's
  // and outlive the reducer; `grad_shard` may be swapped with a twin between steps.
  Reducer(dshost::Services services, const Options& o, const dshost::FlatLayout& layout,
          at::Device device, ShardBuffer& grad_shard, std::vector<at::Tensor>& grads,
          const std::vector<int32_t>& grad_ids, CopyStreams* copies, int64_t piece);

  // Starts reducing unit u's gradient; with overlap_comm = false, finishes it too.
  void reduce(int u);
  // Waits for the reductions in flight and folds them into the shard.
  void finish();
  // For the step, after finish(): gives the staging memory back, zeroes the chunks no
  // reduction reached and makes every chunk fresh for the next step.
  void end_step();
  // The global gradient norm over every rank's shard: a one-element tensor on the compute
  // device (one scalar all-reduce).
  at::Tensor global_norm();
  // Calls f on each staging buffer, for memory reports.
  void for_each_buffer(const std::function<void(const at::Tensor&)>& f) const;

 private:
  // Reduction staging: `in` holds an [N, b] gradient piece in the reduce dtype, `out` the b
  // reduced elements of this rank's chunk.
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

  void fold_in_alone(int u, bool first);
  dshost_slice stage_piece(int u, int64_t begin, int64_t count, int slot);
  void finish_oldest();
  void copy_out(const at::Tensor& reduced, const at::Tensor& target, int slot);
  Staging& staging(int slot);

  dshost::Services services_;
  Options o_;
  const dshost::FlatLayout& layout_;
  at::Device device_;
  ShardBuffer& grad_shard_;
  std::vector<at::Tensor>& grads_;
  const std::vector<int32_t>& grad_ids_;
  CopyStreams* copies_;
  int64_t piece_;  // chunk columns per reduce-scatter
  Staging staging_[2];
  unsigned staging_turn_ = 0;
  std::deque<Reduction> reductions_;
  std::vector<bool> fresh_;  // [unit] no reduction this step yet: the next one copies
  at::Tensor norm_;          // registered, for the all-reduce
  int32_t norm_id_ = -1;
  at::Tensor pieces_sq_;      // sum of squares of the pieces copied to a host gradient shard
  bool accumulated_ = false;  // a reduction added into the shard this step
};

}  // namespace dshost_zero
