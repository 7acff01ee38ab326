#include "core/input_pipeline.h"

#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>

namespace dshost {

InputPipeline::InputPipeline(const ImageDataset& data, int64_t rows, int64_t size, int workers, int prefetch,
                             at::Device device)
    : data_(data), size_(size), prefetch_(prefetch), device_(device) {
  // The batch being loaded, those prefetched, and one whose copy to the device may still be
  // under way while it is the next to be refilled.
  batches_.resize(static_cast<size_t>(prefetch) + 2);
  const auto host = at::TensorOptions().pinned_memory(device.is_cuda());
  for (Batch& b : batches_) {
    b.pixels = at::empty({rows, 3, size, size}, host.dtype(at::kByte));
    b.labels = at::empty({rows}, host.dtype(at::kLong));
  }
  if (!device.is_cpu()) staged_ = at::empty({rows, 3, size, size}, at::TensorOptions(device).dtype(at::kByte));
  for (int i = 0; i < std::max(workers, 1); ++i) workers_.emplace_back([this] { work(); });
}

InputPipeline::~InputPipeline() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  task_added_.notify_all();
  for (std::thread& w : workers_) w.join();
}

void InputPipeline::load(const Split& split, const std::shared_ptr<const std::vector<int64_t>>& order, int64_t first,
                         int64_t count, uint64_t augment_seed, at::Tensor& inputs, at::Tensor& targets) {
  const Key wanted{&split, order, first, count, augment_seed};
  Batch* b = find(wanted);
  if (b == nullptr) {
    start(wanted);
    b = find(wanted);
  }
  wait_until_done(*b);
  b->key.order.reset();  // consumed: free for another batch once the copies below are done
  if (b->error) std::rethrow_exception(std::exchange(b->error, nullptr));
  const at::Tensor pixels = b->pixels.narrow(0, 0, count);
  targets.narrow(0, 0, count).copy_(b->labels.narrow(0, 0, count), /*non_blocking=*/true);
  if (device_.is_cpu()) {
    normalize_images(pixels, inputs);
  } else {
    const at::Tensor staged = staged_.narrow(0, 0, count);
    staged.copy_(pixels, /*non_blocking=*/true);
    if (!b->sent) b->sent.emplace(device_.type());
    b->sent->record(c10::impl::getDeviceGuardImpl(device_.type())->getStream(device_));
    normalize_images(staged, inputs);
  }
  const auto size = static_cast<int64_t>(order->size());
  for (int64_t ahead = 1, next = first + count; ahead <= prefetch_ && next < size; ++ahead, next += count) {
    const Key key{&split, order, next, std::min(count, size - next), augment_seed};
    if (find(key) == nullptr) start(key);
  }
}

InputPipeline::Batch* InputPipeline::find(const Key& key) {
  for (Batch& b : batches_)
    if (b.key == key) return &b;
  return nullptr;
}

// Takes a batch no longer wanted (consumed, of another order, or before `first`: batches
// are loaded in order), once its samples under way are written and its last copy to the
// device has read it, and queues its samples.
void InputPipeline::start(const Key& key) {
  Batch* free = nullptr;
  for (Batch& b : batches_)
    if ((b.key.order != key.order || b.key.first < key.first) && (free == nullptr || b.key.order == nullptr))
      free = &b;
  wait_until_done(*free);
  while (free->sent && !free->sent->query()) std::this_thread::sleep_for(std::chrono::microseconds(50));
  std::lock_guard<std::mutex> lock(mutex_);
  free->key = key;
  free->unfinished = key.count;
  free->error = nullptr;
  for (int64_t row = 0; row < key.count; ++row) tasks_.push_back({free, row});
  task_added_.notify_all();
}

void InputPipeline::wait_until_done(Batch& b) {
  std::unique_lock<std::mutex> lock(mutex_);
  batch_done_.wait(lock, [&] { return b.unfinished == 0; });
}

// Workers run at a lower priority than the training thread: that thread launches the
// GPU's work, and every moment a worker holds its core delays the step.
void InputPipeline::work() {
  setpriority(PRIO_PROCESS, static_cast<id_t>(syscall(SYS_gettid)), 10);  // (a failure only costs speed)
  for (;;) {
    Task task{};
    {
      std::unique_lock<std::mutex> lock(mutex_);
      task_added_.wait(lock, [&] { return stopping_ || !tasks_.empty(); });
      if (stopping_) return;
      task = tasks_.front();
      tasks_.pop_front();
    }
    std::exception_ptr error;
    try {
      fill(task);
    } catch (...) {
      error = std::current_exception();
    }
    std::lock_guard<std::mutex> lock(mutex_);
    if (error && !task.batch->error) task.batch->error = error;
    if (--task.batch->unfinished == 0) batch_done_.notify_all();
  }
}

void InputPipeline::fill(const Task& task) {
  const Batch& b = *task.batch;
  const Key& k = b.key;
  uint8_t* pixels = b.pixels.data_ptr<uint8_t>() + task.row * 3 * size_ * size_;
  const int64_t sample = image_sample(*k.split, *data_.skipped, (*k.order)[k.first + task.row], size_,
                                      k.augment_seed, pixels);
  b.labels.data_ptr<int64_t>()[task.row] = k.split->labels.data_ptr<int64_t>()[sample];
}

int resolve_workers(int64_t configured, bool on_gpu, int local_ranks) {
  if (configured > 0) return static_cast<int>(configured);
  if (!on_gpu) return 1;
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  return std::max(1, cores / std::max(local_ranks, 1) - 1);
}

}  // namespace dshost
