// Training data: images (Fashion-MNIST from gzip IDX files, Debian's dataset-fashion-mnist;
// CIFAR-10's binary batches from a user's folder; JPEG / PNG image folders or WebDataset
// shards of them; or synthetic) and token streams (the bytes of text files; or a flat file of uint16 token
// ids, as llm.c and nanoGPT write them), a distributed sampler with PyTorch
// DistributedSampler's semantics, and batch filling that presents samples as the model
// takes them.
#pragma once

#include "core/config.h"

#include <ATen/ATen.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

namespace dshost {

// Images: sample i is images[i % pool] with label labels[i]. Tokens: sample i is the
// window tokens[i * T, (i + 1) * T] (T + 1 tokens: the inputs, and the targets one ahead).
struct Split {
  at::Tensor images;  // uint8 [pool, C, H, W]; pool = N but for synthetic data
  at::Tensor labels;  // int64 [N]
  at::Tensor tokens;  // int64 [length]
  int64_t sequence = 0;  // T
  std::vector<std::string> files;  // image folders: sample i decoded from files[i] instead
  // WebDataset shards: files[i] is the shard that holds sample i's image, at ranges[i], as
  // member members[i].
  struct Range {
    int64_t offset, size;
  };
  std::vector<Range> ranges;
  std::vector<std::string> members;
  int64_t size() const {
    return tokens.defined() ? (tokens.numel() - 1) / sequence : labels.size(0);
  }
};

// Image files that did not decode when a batch needed them: each is warned about once,
// and more than `limit` of them (data.max_bad_files) stop the run. Shared by the threads
// that fill batches.
class SkippedFiles {
 public:
  explicit SkippedFiles(int64_t limit) : limit_(limit) {}
  // Records that `file` did not decode (`why`: the decoder's message); throws UserError
  // (exit 2) once more than `limit` files have been skipped.
  void skip(const std::string& file, const std::string& why);
  int64_t count() const;

 private:
  mutable std::mutex mutex_;
  std::set<std::string> files_;
  const int64_t limit_;
};

struct ImageDataset {
  Split train, test;
  std::shared_ptr<SkippedFiles> skipped;  // image folders: the files skipped so far
  double mean = 0, std = 1;           // normalisation of pixel / 255
  std::vector<int64_t> sample_shape;  // [C, H, W] or [T] as the model sees a sample
  bool is_tokens() const { return train.tokens.defined(); }
};

// Refuses a `dir` without the four Fashion-MNIST files, saying how to get them.
void check_fashion_mnist(const std::string& dir, const std::string& origin);

// Reads the four IDX files from `dir`. `origin` locates data.path in the manifest for
// messages. Missing, truncated or malformed files are a UserError naming the file.
ImageDataset load_fashion_mnist(const std::string& dir, const std::string& origin);

// CIFAR-10's binary version from `dir` (data_batch_1.bin to 5, test_batch.bin): a file that
// is not whole records, or holds a label outside 0-9, is a UserError naming it.
ImageDataset load_cifar10(const std::string& dir);

// An image folder (see core/image_folder.h): train/ and val/, classes from train/; at most
// `max_bad_files` files that do not decode are skipped.
ImageDataset load_image_folder(const std::string& dir, int64_t max_bad_files = 100);

// WebDataset shards (see core/tar_shards.h): data.path's for training, data.test_path's
// (where given) for evaluation; `origin` locates data.path.
ImageDataset load_webdataset(const DataConfig& config, const std::string& origin);

// The dataset `config` names: images presented at config.channels x config.image_size^2
// where those are set, token streams cut into windows of `sequence` tokens (the model's).
// The last tenth of a token stream is its test split. `origin` locates data.path.
ImageDataset load_dataset(const DataConfig& config, const std::string& origin, int64_t sequence);

// Refuses a data.path that the dataset cannot read, saying what to do (before ranks start).
void check_dataset(const DataConfig& config, const std::string& origin);

// This rank's sample indices for one epoch: a permutation of [0, n) seeded by seed and
// epoch (identity when !shuffle), padded by wrapping to a multiple of world when pad, then
// every world-th index from rank. Disjoint across ranks when !pad or n divides.
std::vector<int64_t> shard_indices(int64_t n, int rank, int world, uint64_t seed, int64_t epoch,
                                   bool shuffle, bool pad);

// Writes samples indices[begin, begin + count) into the leading rows of the batch
// buffers: images normalised to float inputs [>= count, C, H, W] (resized, bilinear, and
// their channels repeated to the inputs' shape) with targets [>= count]; token windows as
// inputs and targets [>= count, T]. Files of an image folder are decoded and transformed,
// with training augmentation drawn from `augment_seed` and the sample's index (0: none).
void fill_batch(const ImageDataset& data, const Split& split, const std::vector<int64_t>& indices,
                int64_t begin, int64_t count, at::Tensor& inputs, at::Tensor& targets,
                uint64_t augment_seed = 0);

// Moves the in-memory splits of `data` to `device` where they fit (see data.cc), so that
// fill_batch runs there.
void keep_on_device(ImageDataset& data, at::Device device);

// What messages call sample `index` of an image folder or shard split: its file, or its
// shard and member.
std::string sample_name(const Split& split, int64_t index);

// Sample `index` of an image folder split, as uint8 [3, size, size], into `out`: the
// training transform with draws from augment_seed and the index, or evaluation's where
// augment_seed is 0. A file that does not decode is skipped (see SkippedFiles) and the next
// sample of the split that does takes its place; returns the sample written. Thread-safe.
int64_t image_sample(const Split& split, SkippedFiles& skipped, int64_t index, int64_t size,
                     uint64_t augment_seed, uint8_t* out);

// Image folders' 8-bit pixels (uint8 [n, 3, H, W]) into the leading rows of `inputs` as
// torchvision's ToTensor and Normalize with ImageNet's statistics make them, on the
// inputs' device, channels repeated to the inputs' where they differ.
void normalize_images(const at::Tensor& pixels, at::Tensor& inputs);

}  // namespace dshost
