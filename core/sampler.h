// The order of the samples: PyTorch DistributedSampler's semantics, with dshost's own
// shuffle (the same on every machine and LibTorch version).
#pragma once

#include <cstdint>
#include <vector>

namespace dshost {

// This rank's sample indices for one epoch: a permutation of [0, n) seeded by seed and
// epoch (identity when !shuffle), padded by wrapping to a multiple of world when pad, then
// every world-th index from rank. Disjoint across ranks when !pad or n divides.
std::vector<int64_t> shard_indices(int64_t n, int rank, int world, uint64_t seed, int64_t epoch,
                                   bool shuffle, bool pad);

}  // namespace dshost
