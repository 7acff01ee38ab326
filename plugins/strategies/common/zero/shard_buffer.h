// A rank's shard and the buffers of its size. Each unit is padded to a multiple of N ranks and
// cut into N chunks; rank r owns chunk r of every unit, and its chunks end to end are its shard.
// With offload_optimizer_ratio < 1 the shard is cut between units (optimizer_split): the first
// units' elements stay on the accelerator, the rest live where a buffer is offloaded.
#pragma once

#include <dshost/strategy.hpp>

#include <cstdint>
#include <vector>

namespace dshost_zero {

// A shard-sized buffer in parts, cut at the split: every range a unit touches lies in one part.
struct ShardBuffer {
  std::vector<int64_t> begin;     // where each part starts in the shard
  std::vector<at::Tensor> parts;  // [part] its elements, from begin[part]
  std::vector<int32_t> ids;       // [part] its registered id, or -1

  int part_of(int64_t index) const;
  // Shard elements [from, from + n), which lie in one part.
  at::Tensor range(int64_t from, int64_t n) const;
  void zero() const;
};

// Rank `rank`'s chunk of unit u's whole buffer.
at::Tensor own_chunk(const dshost::FlatLayout& layout, int rank, const at::Tensor& unit_buffer,
                     int u);

// offload_optimizer_ratio (DeepSpeed's offload_optimizer.ratio, ZeRO-Offload++): the shard
// elements whose optimizer stays on the accelerator, the first units' as many as fit in
// (1 - ratio) of the shard. Whole units, so that no unit's gather, reduction or checkpoint
// range crosses the cut.
int64_t optimizer_split(const dshost::FlatLayout& layout, double offload_ratio);

// Makes the shard's buffers: the part before `split` on the compute device, the rest (or all)
// at the buffer's home.
class ShardMemory {
 public:
  ShardMemory(dshost::Services services, at::Device compute, int64_t shard, int64_t split,
              bool pin_memory)
      : services_(services),
        compute_(compute),
        shard_(shard),
        split_(split),
        pin_memory_(pin_memory) {}
  int64_t split() const { return split_; }
  // Left uninitialised; pinned in host memory when `pinnable` and pin_memory say so; parts on
  // the compute device registered when asked. A twin (DPU's second gradient shard) shares
  // `twin_of`'s part on a GPU: that part's update runs on the compute stream, before the next
  // backward can write it.
  ShardBuffer make(at::ScalarType dtype, at::Device home, bool pinnable, bool registered = false,
                   const ShardBuffer* twin_of = nullptr) const;
  // Host memory is pinned where pin_memory is set and compute runs on a GPU.
  at::TensorOptions pinned_if_host(at::ScalarType dtype, at::Device where) const;

 private:
  dshost::Services services_;
  at::Device compute_;
  int64_t shard_, split_;
  bool pin_memory_;
};

}  // namespace dshost_zero
