#include "core/sampler.h"

#include <cstddef>
#include <utility>

namespace dshost {
namespace {

// splitmix64: a small, fast, well-mixed generator whose output is the same everywhere.
uint64_t next_random(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

}  // namespace

std::vector<int64_t> shard_indices(int64_t n, int rank, int world, uint64_t seed, int64_t epoch,
                                   bool shuffle, bool pad) {
  std::vector<int64_t> order(n);
  for (int64_t i = 0; i < n; ++i) order[i] = i;
  if (shuffle) {
    uint64_t state = seed * 0x100000001b3ull + static_cast<uint64_t>(epoch);
    for (int64_t i = n - 1; i > 0; --i)
      std::swap(order[i], order[next_random(state) % static_cast<uint64_t>(i + 1)]);
  }
  if (pad && n % world != 0)
    for (int64_t i = 0, extra = world - n % world; i < extra; ++i) order.push_back(order[i % n]);
  std::vector<int64_t> mine;
  for (std::size_t i = rank; i < order.size(); i += world) mine.push_back(order[i]);
  return mine;
}

}  // namespace dshost
