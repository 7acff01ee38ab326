// Training data: Fashion-MNIST from gzip IDX files (Debian's dataset-fashion-mnist) or
// synthetic images, a distributed sampler with PyTorch DistributedSampler's semantics, and
// batch filling that presents samples at the channels and size the model takes.
#pragma once

#include "core/config.h"

#include <ATen/ATen.h>

#include <cstdint>
#include <string>
#include <vector>

namespace dshost {

struct Split {
  at::Tensor images;  // uint8 [N, C, H, W]; synthetic: a pool of fewer, cycled through
  at::Tensor labels;  // int64 [N]
  int64_t size() const { return labels.size(0); }
};

struct ImageDataset {
  Split train, test;
  double mean = 0, std = 1;           // normalisation of pixel / 255
  std::vector<int64_t> sample_shape;  // [C, H, W] as the model sees a sample
};

// Refuses a `dir` without the four Fashion-MNIST files, saying how to get them.
void check_fashion_mnist(const std::string& dir, const std::string& origin);

// Reads the four IDX files from `dir`. `origin` locates data.path in the manifest for
// messages. Missing, truncated or malformed files are a UserError naming the file.
ImageDataset load_fashion_mnist(const std::string& dir, const std::string& origin);

// The dataset `config` names, presented at config.channels x config.image_size^2 where
// those are set. `origin` locates data.path.
ImageDataset load_dataset(const DataConfig& config, const std::string& origin);

// This rank's sample indices for one epoch: a permutation of [0, n) seeded by seed and
// epoch (identity when !shuffle), padded by wrapping to a multiple of world when pad, then
// every world-th index from rank. Disjoint across ranks when !pad or n divides.
std::vector<int64_t> shard_indices(int64_t n, int rank, int world, uint64_t seed, int64_t epoch,
                                   bool shuffle, bool pad);

// Writes samples indices[begin, begin + count) into the leading rows of the batch
// buffers, normalised to float: inputs [>= count, C, H, W], targets [>= count]. Images
// are resized (bilinear) and their channels repeated to the inputs' shape.
void fill_batch(const ImageDataset& data, const Split& split, const std::vector<int64_t>& indices,
                int64_t begin, int64_t count, at::Tensor& inputs, at::Tensor& targets);

}  // namespace dshost
