// Batches of an image folder, assembled by a pool of worker threads per rank (data.workers)
// up to data.prefetch batches ahead of the step or the evaluation. A worker decodes and
// transforms one whole sample at a time into a batch of 8-bit pixels in host memory (pinned
// on a GPU run), which goes to the device as it is, a quarter of float's bytes, and is
// converted and normalised there. A sample's pixels depend on the seed, the epoch and its
// index only, so the batches are the same for any number of workers. The workers use no
// LibTorch operation (whose intra-op threads would multiply theirs).
#pragma once

#include "core/data.h"

#include <c10/core/Event.h>

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
  // Batches of up to `rows` samples of `data` (an image folder), `size` pixels square, for
  // inputs on `device`.
  InputPipeline(const ImageDataset& data, int64_t rows, int64_t size, int workers, int prefetch, at::Device device);
  ~InputPipeline();  // stops the workers after the sample each is on
  InputPipeline(const InputPipeline&) = delete;
  InputPipeline& operator=(const InputPipeline&) = delete;

  // Samples order[first, first + count) of `split` into the leading rows of inputs and
  // targets, without waiting for the device, transformed for training with draws from
  // augment_seed (0: for evaluation); then makes sure the next `prefetch` batches of `count`
  // of `order` are under way. Rethrows what a worker threw.
  void load(const Split& split, const std::shared_ptr<const std::vector<int64_t>>& order, int64_t first,
            int64_t count, uint64_t augment_seed, at::Tensor& inputs, at::Tensor& targets);

 private:
  // A batch's samples: order[first, first + count) of split. A null order: none (consumed).
  struct Key {
    const Split* split = nullptr;
    std::shared_ptr<const std::vector<int64_t>> order;
    int64_t first = -1, count = 0;
    uint64_t augment_seed = 0;
    bool operator==(const Key& o) const {
      return split == o.split && order == o.order && first == o.first && count == o.count &&
             augment_seed == o.augment_seed;
    }
  };
  struct Batch {
    at::Tensor pixels, labels;  // uint8 [rows, 3, size, size], int64 [rows], host memory
    Key key;
    int64_t unfinished = 0;  // samples not yet written
    std::exception_ptr error;
    std::optional<c10::Event> sent;  // after the copy to the device that last read it
  };
  struct Task {
    Batch* batch;
    int64_t row;
  };

  Batch* find(const Key& key);
  void start(const Key& key);
  void wait_until_done(Batch& b);
  void work();
  void fill(const Task& task);

  const ImageDataset& data_;
  const int64_t size_;
  const int prefetch_;
  const at::Device device_;
  at::Tensor staged_;  // the batch's pixels on the device: uint8 [rows, 3, size, size]
  std::vector<Batch> batches_;
  std::deque<Task> tasks_;
  std::mutex mutex_;
  std::condition_variable task_added_, batch_done_;
  bool stopping_ = false;
  std::vector<std::thread> workers_;  // last: they use everything above
};

// data.workers resolved: the number given, or where 0, on a GPU the rank's share of the
// machine's cores less the one that drives the step, on the CPU one (compute takes the cores).
int resolve_workers(int64_t configured, bool on_gpu, int local_ranks);

}  // namespace dshost
