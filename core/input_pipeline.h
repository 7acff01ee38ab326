// Training micro-batches of an image folder, assembled by a pool of worker threads per rank
// (data.workers) up to data.prefetch micro-batches ahead of the step. A worker decodes and
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
  // Batches of `micro_batch` rows of data.train (an image folder), for inputs on `device`.
  InputPipeline(const ImageDataset& data, int64_t micro_batch, int64_t size, int workers, int prefetch,
                at::Device device);
  ~InputPipeline();  // stops the workers after the sample each is on
  InputPipeline(const InputPipeline&) = delete;
  InputPipeline& operator=(const InputPipeline&) = delete;

  // Rows [first, first + micro_batch) of `order` (an epoch's, for this rank) into the
  // leading rows of inputs and targets, without waiting for the device; then makes sure the
  // next `prefetch` micro-batches of `order` are under way. Rethrows what a worker threw.
  void load(const std::shared_ptr<const std::vector<int64_t>>& order, int64_t first,
            uint64_t augment_seed, at::Tensor& inputs, at::Tensor& targets);

 private:
  struct Batch {
    at::Tensor pixels, labels;  // uint8 [rows, 3, size, size], int64 [rows], host memory
    std::shared_ptr<const std::vector<int64_t>> order;
    int64_t first = -1;
    uint64_t augment_seed = 0;
    int64_t unfinished = 0;  // samples not yet written
    std::exception_ptr error;
    std::optional<c10::Event> sent;  // after the copy to the device that last read it
  };
  struct Task {
    Batch* batch;
    int64_t row;
  };

  Batch* find(const std::vector<int64_t>* order, int64_t first, uint64_t augment_seed);
  void start(const std::shared_ptr<const std::vector<int64_t>>& order, int64_t first, uint64_t augment_seed);
  void wait_until_done(Batch& b);
  void work();
  void fill(const Task& task);

  const ImageDataset& data_;
  const int64_t micro_batch_, size_;
  const int prefetch_;
  const at::Device device_;
  at::Tensor staged_;  // the batch's pixels on the device
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
