#include "core/sampler.h"

#include <dshost/dataset.hpp>  // splitmix64

#include <cstddef>
#include <utility>

namespace dshost {

std::vector<int64_t> shard_indices(int64_t n, int rank, int world, uint64_t seed, int64_t epoch,
                                   bool shuffle, bool pad) {
  std::vector<int64_t> order(n);
  for (int64_t i = 0; i < n; ++i) order[i] = i;
  if (shuffle) {
    uint64_t state = seed * 0x100000001b3ull + static_cast<uint64_t>(epoch);
    for (int64_t i = n - 1; i > 0; --i)
      std::swap(order[i], order[splitmix64(state) % static_cast<uint64_t>(i + 1)]);
  }
  if (pad && n % world != 0)
    for (int64_t i = 0, extra = world - n % world; i < extra; ++i) order.push_back(order[i % n]);
  std::vector<int64_t> mine;
  for (std::size_t i = rank; i < order.size(); i += world) mine.push_back(order[i]);
  return mine;
}

}  // namespace dshost
