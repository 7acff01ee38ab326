// Batches of a dataset, assembled by a pool of worker threads per rank (data.workers) up to
// data.prefetch batches ahead of the step or the evaluation. A worker has the dataset fill
// one whole sample at a time into a batch in host memory (pinned on a GPU run), in the
// samples' own dtype: images go to the device as 8-bit pixels, a quarter of float's bytes,
// and are converted, normalised and resized there. A sample depends on the seed, the epoch
// and its index only, so the batches are the same for any number of workers. The workers
// use no LibTorch operation (whose intra-op threads would multiply theirs). With a GPU JPEG
// decoder, a dataset may give images as their JPEG files, decoded and resampled on the GPU.
// Otherwise a GPU's next batch of images, where its samples are ready when a step's batch is
// loaded, goes to the device on a stream of its own while that step runs, so that the step
// after does not wait for its copy.
#pragma once

#include "core/dataset.h"
#include "core/gpu_jpeg.h"

#include <ATen/ATen.h>
#include <c10/core/Event.h>
#include <c10/core/Stream.h>

#include <array>
#include <condition_variable>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

namespace dshost {

class InputPipeline {
 public:
  // Batches of up to `rows` samples of `dataset` for inputs on `device`, JPEG files decoded
  // by nvJPEG on that GPU where `decode_on_gpu`, else by the workers.
  InputPipeline(const DatasetPlugin& dataset, int64_t rows, int workers, int prefetch,
                at::Device device, bool decode_on_gpu = false);
  ~InputPipeline();  // stops the workers after the sample each is on
  InputPipeline(const InputPipeline&) = delete;
  InputPipeline& operator=(const InputPipeline&) = delete;

  // Samples order[first, first + count) of `split` into the leading rows of inputs and
  // targets, without waiting for the device, with training's augmentation drawn from
  // augment_seed (0: evaluation's transform); then makes sure the next `prefetch` batches
  // of `count` of `order` are under way. Rethrows what a worker threw.
  void load(dshost_split split, const std::shared_ptr<const std::vector<int64_t>>& order,
            int64_t first, int64_t count, uint64_t augment_seed, at::Tensor& inputs,
            at::Tensor& targets);

  // Batches whose images went to the device before the load() that presented them.
  int64_t copied_ahead() const { return copied_ahead_; }

 private:
  // A batch's samples: order[first, first + count) of split. A null order: none (consumed).
  struct Key {
    dshost_split split = DSHOST_TRAIN_SPLIT;
    std::shared_ptr<const std::vector<int64_t>> order;
    int64_t first = -1, count = 0;
    uint64_t augment_seed = 0;
    bool operator==(const Key& o) const {
      return split == o.split && order == o.order && first == o.first && count == o.count &&
             augment_seed == o.augment_seed;
    }
  };
  struct Batch {
    at::Tensor samples, targets;       // [rows, ...] of the dataset's dtypes, host memory
    std::vector<EncodedSample> files;  // by row, where samples come as JPEG files
    Key key;
    int64_t unfinished = 0;  // samples not yet written
    int64_t loaded = 0;      // the load() that last consumed it, counted from 1
    std::exception_ptr error;
    std::optional<c10::Event> sent;  // after the copy to the device that last read it
  };
  struct Task {
    Batch* batch;
    int64_t row;
  };
  // A batch's images on the device, uint8: `key` the batch they are, `copied` after their
  // copy where it went on copy_stream_, `presented` after the step's conversion read them.
  struct Staged {
    at::Tensor pixels;
    Key key;
    std::optional<c10::Event> copied, presented;
  };

  Batch* find(const Key& key);
  void start(const Key& key, int64_t loading);
  void wait_until_done(Batch& b);
  void present(Batch& b, int64_t count, at::Tensor& inputs);
  Staged& staged(const Batch& b, int64_t count);
  void copy_ahead(const Key& next);
  c10::Stream step_stream() const;
  void work();
  void fill(Batch& b, int64_t row, EncodedSample* file);

  const DatasetPlugin& dataset_;
  const int prefetch_;
  const at::Device device_;
  at::Tensor channel_mean_, channel_std_;   // the dataset's, float [C] on the device
  std::array<Staged, 2> staged_;            // the batch presented last, and the next one's
  int presented_last_ = 0;                  // its index in staged_
  std::optional<c10::Stream> copy_stream_;  // where images go ahead of their step
  int64_t copied_ahead_ = 0;
  std::unique_ptr<GpuJpegDecoder> decoder_;
  std::vector<Batch> batches_;
  int64_t loads_ = 0;
  std::deque<Task> tasks_;
  std::mutex mutex_;
  std::condition_variable task_added_, batch_done_;
  bool stopping_ = false;
  std::vector<std::thread> workers_;  // last: they use everything above
};

// 8-bit images (uint8 [n, C, H, W], on the inputs' device) into the leading rows of
// `inputs` as the model sees them: (value / 255 - mean[c]) / std[c] in float, resized
// (bilinear) to the inputs' height and width and channels repeated where they differ.
void present_images(const at::Tensor& pixels, const double* mean, const double* std,
                    at::Tensor& inputs);
// The same with the channels' mean and std as float [C] tensors on the pixels' device, as a
// GPU's batches take them (copying them there each batch would wait for the device).
void present_images(const at::Tensor& pixels, const at::Tensor& mean, const at::Tensor& std,
                    at::Tensor& inputs);

// data.workers resolved: the number given, or where 0, on a GPU the rank's share of the
// machine's cores less the one that drives the step, on the CPU one (compute takes the cores).
int resolve_workers(int64_t configured, bool on_gpu, int local_ranks);

}  // namespace dshost
