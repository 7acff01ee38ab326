#include "shard_buffer.h"

#include <algorithm>

namespace dshost_zero {

int ShardBuffer::part_of(int64_t index) const {
  return static_cast<int>(std::upper_bound(begin.begin(), begin.end(), index) - begin.begin()) - 1;
}

at::Tensor ShardBuffer::range(int64_t from, int64_t n) const {
  const int p = part_of(from);
  return parts[p].narrow(0, from - begin[p], n);
}

void ShardBuffer::zero() const {
  for (const at::Tensor& part : parts) part.zero_();
}

at::Tensor own_chunk(const dshost::FlatLayout& layout, int rank, const at::Tensor& unit_buffer,
                     int u) {
  return unit_buffer.narrow(0, rank * layout.chunk[u], layout.chunk[u]);
}

int64_t optimizer_split(const dshost::FlatLayout& layout, double offload_ratio) {
  if (offload_ratio >= 1) return 0;
  const double stays = (1 - offload_ratio) * static_cast<double>(layout.shard);
  int64_t split = 0;
  for (size_t u = 0; u < layout.chunk.size(); ++u) {
    const int64_t end = layout.shard_begin[u] + layout.chunk[u];
    if (static_cast<double>(end) > stays) break;
    split = end;
  }
  return split;
}

ShardBuffer ShardMemory::make(at::ScalarType dtype, at::Device home, bool pinnable, bool registered,
                              const ShardBuffer* twin_of) const {
  ShardBuffer b;
  const auto add_part = [&](int64_t begin, int64_t end, at::Device where) {
    b.begin.push_back(begin);
    if (twin_of && where.is_cuda()) {
      b.parts.push_back(twin_of->parts[b.parts.size()]);
      b.ids.push_back(twin_of->ids[b.ids.size()]);
      return;
    }
    const auto options =
        pinnable ? pinned_if_host(dtype, where) : at::TensorOptions().dtype(dtype).device(where);
    b.parts.push_back(at::empty({end - begin}, options));
    b.ids.push_back(registered && where == compute_
                        ? services_.register_buffer(dshost::to_dlpack(b.parts.back()))
                        : -1);
  };
  if (split_ > 0) add_part(0, split_, compute_);
  if (split_ == 0 || split_ < shard_) add_part(split_, shard_, home);
  return b;
}

at::TensorOptions ShardMemory::pinned_if_host(at::ScalarType dtype, at::Device where) const {
  return at::TensorOptions().dtype(dtype).device(where).pinned_memory(
      pin_memory_ && where.is_cpu() && compute_.is_cuda());
}

}  // namespace dshost_zero
