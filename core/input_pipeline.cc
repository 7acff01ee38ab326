#include "core/input_pipeline.h"

#include "core/error.h"
#include "core/log.h"

#include <ATen/Parallel.h>
#include <c10/core/StreamGuard.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>

namespace dshost {

namespace {

at::ScalarType scalar_type(const DLDataType& t) {
  if (t.code == kDLUInt) return at::kByte;
  return t.code == kDLInt ? at::kLong : at::kFloat;
}

// values[0, channels) as a float tensor on the CPU.
at::Tensor channel_values(const double* values, int64_t channels) {
  return at::tensor(std::vector<float>(values, values + channels));
}

std::vector<int64_t> rows_of(int64_t rows, const std::vector<int64_t>& sample) {
  std::vector<int64_t> shape{rows};
  shape.insert(shape.end(), sample.begin(), sample.end());
  return shape;
}

}  // namespace

InputPipeline::InputPipeline(const DatasetPlugin& dataset, int64_t rows, int workers, int prefetch,
                             at::Device device, bool decode_on_gpu)
    : dataset_(dataset), prefetch_(prefetch), device_(device) {
  // The batch being loaded, those prefetched, and one whose copy to the device may still be
  // under way while it is the next to be refilled.
  batches_.resize(static_cast<size_t>(prefetch) + 2);
  const auto host = at::TensorOptions().pinned_memory(device.is_cuda());
  const at::ScalarType dtype = scalar_type(dataset.info().input_dtype);
  for (Batch& b : batches_) {
    b.samples = at::empty(rows_of(rows, dataset.input_shape()), host.dtype(dtype));
    b.targets = at::empty(rows_of(rows, dataset.target_shape()), host.dtype(at::kLong));
  }
  const bool images_on_device = !device.is_cpu() && dataset.is_images();
  if (images_on_device) {
    for (Staged& s : staged_)
      s.pixels = at::empty(rows_of(rows, dataset.input_shape()),
                           at::TensorOptions(device).dtype(at::kByte));
    const int64_t channels = dataset.input_shape()[0];
    channel_mean_ = channel_values(dataset.info().mean, channels).to(device);
    channel_std_ = channel_values(dataset.info().std, channels).to(device);
  }
  if (decode_on_gpu && dataset.is_images()) {
    decoder_ = std::make_unique<GpuJpegDecoder>(device);
    for (Batch& b : batches_) b.files.resize(static_cast<size_t>(rows));
    log::info(cat("data.decode = \"gpu\": JPEG files decoded by nvJPEG on ",
                  decoder_->in_hardware() ? "the GPU's hardware JPEG decoder" : "the GPU's cores"));
  } else if (images_on_device) {
    copy_stream_ = c10::impl::getDeviceGuardImpl(device.type())->getStreamFromGlobalPool(device);
  }
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

void InputPipeline::load(dshost_split split,
                         const std::shared_ptr<const std::vector<int64_t>>& order, int64_t first,
                         int64_t count, uint64_t augment_seed, at::Tensor& inputs,
                         at::Tensor& targets) {
  const Key wanted{split, order, first, count, augment_seed};
  Batch* b = find(wanted);
  if (b == nullptr) {
    start(wanted, first);
    b = find(wanted);
  }
  wait_until_done(*b);
  b->loaded = ++loads_;
  if (b->error) {
    b->key.order.reset();
    std::rethrow_exception(std::exchange(b->error, nullptr));
  }
  present(*b, count, inputs);
  b->key.order.reset();  // consumed: free for another batch once the copies above are done
  targets.narrow(0, 0, count).copy_(b->targets.narrow(0, 0, count), /*non_blocking=*/true);
  if (!device_.is_cpu()) {
    if (!b->sent) b->sent.emplace(device_.type());
    b->sent->record(step_stream());
  }
  const auto size = static_cast<int64_t>(order->size());
  for (int64_t ahead = 1, next = first + count; ahead <= prefetch_ && next < size;
       ++ahead, next += count) {
    const Key key{split, order, next, std::min(count, size - next), augment_seed};
    if (find(key) == nullptr) start(key, first);
  }
  const int64_t next = first + count;
  if (next < size) copy_ahead({split, order, next, std::min(count, size - next), augment_seed});
}

InputPipeline::Batch* InputPipeline::find(const Key& key) {
  for (Batch& b : batches_)
    if (b.key == key) return &b;
  return nullptr;
}

// Takes the batch no longer wanted (consumed, of another order, or before `loading`, the
// first sample of the batch being loaded: batches are loaded in order) that was consumed
// longest ago, so that its last copy to the device is long done (the batch just consumed is
// copied behind the step still running), waits for its samples under way and that copy,
// and queues `key`'s samples.
void InputPipeline::start(const Key& key, int64_t loading) {
  Batch* free = nullptr;
  for (Batch& b : batches_)
    if ((b.key.order != key.order || b.key.first < loading) &&
        (free == nullptr || b.loaded < free->loaded))
      free = &b;
  wait_until_done(*free);
  while (free->sent && !free->sent->query())
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  std::lock_guard<std::mutex> lock(mutex_);
  free->key = key;
  free->unfinished = key.count;
  free->error = nullptr;
  for (int64_t row = 0; row < key.count; ++row) tasks_.push_back({free, row});
  task_added_.notify_all();
}

// Images are presented on the device from a copy of their bytes (with the JPEG files among
// them decoded there); other samples are the model's inputs as they are. A file the GPU
// cannot decode is made again here, by the dataset on the CPU.
void InputPipeline::present(Batch& b, int64_t count, at::Tensor& inputs) {
  const at::Tensor samples = b.samples.narrow(0, 0, count);
  if (!dataset_.is_images()) {
    inputs.narrow(0, 0, count).copy_(samples, /*non_blocking=*/true);
    return;
  }
  const dshost_dataset_info& info = dataset_.info();
  if (device_.is_cpu()) return present_images(samples, info.mean, info.std, inputs);
  Staged& on_device = staged(b, count);
  const at::Tensor pixels = on_device.pixels.narrow(0, 0, count);
  if (decoder_) {
    for (int64_t row : decoder_->stage(samples, b.files, pixels)) {
      fill(b, row, nullptr);
      pixels[row].copy_(samples[row], /*non_blocking=*/true);
    }
  }
  present_images(pixels, channel_mean_, channel_std_, inputs);
  if (decoder_) decoder_->release();
  if (!on_device.presented) on_device.presented.emplace(device_.type());
  on_device.presented->record(step_stream());
}

// Where b's images are on the device for the step: where copy_ahead put them (the step's
// stream waits for that copy), or else copied now on the step's stream (JPEG files among them
// decoded by the caller) to the place the batch presented last is not in.
InputPipeline::Staged& InputPipeline::staged(const Batch& b, int64_t count) {
  const c10::Stream step = step_stream();
  for (int i = 0; i < 2; ++i) {
    Staged& s = staged_[static_cast<size_t>(i)];
    if (s.key == b.key && s.copied) {
      s.copied->block(step);
      presented_last_ = i;
      return s;
    }
  }
  presented_last_ = 1 - presented_last_;
  Staged& s = staged_[static_cast<size_t>(presented_last_)];
  if (s.copied) s.copied->block(step);  // a copy ahead of another batch, no longer wanted
  s.copied.reset();
  s.key = b.key;
  if (!decoder_)
    s.pixels.narrow(0, 0, count).copy_(b.samples.narrow(0, 0, count), /*non_blocking=*/true);
  return s;
}

// The `next` batch's images to the device on copy_stream_, while the step just loaded runs,
// where its samples are all written: to the place the step's batch is not in, once the step
// before has read that. The batch's host memory is not refilled before the copy is done.
void InputPipeline::copy_ahead(const Key& next) {
  if (!copy_stream_) return;
  Batch* b = find(next);
  if (b == nullptr) return;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (b->unfinished != 0 || b->error) return;
  }
  Staged& s = staged_[static_cast<size_t>(1 - presented_last_)];
  if (s.presented) s.presented->block(*copy_stream_);
  const c10::StreamGuard on_copy_stream(*copy_stream_);
  s.pixels.narrow(0, 0, next.count)
      .copy_(b->samples.narrow(0, 0, next.count), /*non_blocking=*/true);
  if (!s.copied) s.copied.emplace(device_.type());
  s.copied->record(*copy_stream_);
  if (!b->sent) b->sent.emplace(device_.type());
  b->sent->record(*copy_stream_);
  s.key = next;
  ++copied_ahead_;
}

// The device's current stream, where the step runs.
c10::Stream InputPipeline::step_stream() const {
  return c10::impl::getDeviceGuardImpl(device_.type())->getStream(device_);
}

void InputPipeline::wait_until_done(Batch& b) {
  std::unique_lock<std::mutex> lock(mutex_);
  batch_done_.wait(lock, [&] { return b.unfinished == 0; });
}

// Workers run at a lower priority than the training thread: that thread launches the
// GPU's work, and every moment a worker holds its core delays the step.
void InputPipeline::work() {
  setpriority(PRIO_PROCESS, static_cast<id_t>(syscall(SYS_gettid)),
              10);  // (a failure only costs speed)
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
      fill(*task.batch, task.row,
           decoder_ ? &task.batch->files[static_cast<size_t>(task.row)] : nullptr);
    } catch (...) {
      error = std::current_exception();
    }
    std::lock_guard<std::mutex> lock(mutex_);
    if (error && !task.batch->error) task.batch->error = error;
    if (--task.batch->unfinished == 0) batch_done_.notify_all();
  }
}

void InputPipeline::fill(Batch& b, int64_t row, EncodedSample* file) {
  const Key& k = b.key;
  auto* input = static_cast<uint8_t*>(b.samples.data_ptr()) + row * dataset_.input_bytes();
  int64_t* target = b.targets.data_ptr<int64_t>() + row * dataset_.target_count();
  dataset_.fill(k.split, (*k.order)[k.first + row], k.augment_seed, input, target, file);
}

// On the CPU, where no resize is needed, one pass through a table of the 256 values per
// channel, spread over the intra-op threads; elsewhere LibTorch's operations. Both compute
// value / 255 - mean, then / std, in float, as torchvision's ToTensor and Normalize do.
void present_images(const at::Tensor& pixels, const double* mean, const double* std,
                    at::Tensor& inputs) {
  const at::Tensor out = inputs.narrow(0, 0, pixels.size(0));
  const int64_t channels = pixels.size(1);
  if (out.is_cpu() && out.scalar_type() == at::kFloat && out.sizes() == pixels.sizes() &&
      out.is_contiguous() && pixels.is_contiguous()) {
    float table[4][256];
    for (int64_t c = 0; c < channels; ++c)
      for (int v = 0; v < 256; ++v)
        table[c][v] = (static_cast<float>(v) / 255.0f - static_cast<float>(mean[c])) /
                      static_cast<float>(std[c]);
    const int64_t plane = pixels.size(2) * pixels.size(3);
    const uint8_t* from = pixels.data_ptr<uint8_t>();
    float* to = out.data_ptr<float>();
    at::parallel_for(0, pixels.size(0) * channels, 1, [&](int64_t begin, int64_t end) {
      for (int64_t p = begin; p < end; ++p)
        for (int64_t i = 0; i < plane; ++i)
          to[p * plane + i] = table[p % channels][from[p * plane + i]];
    });
    return;
  }
  present_images(pixels, channel_values(mean, channels).to(pixels.device()),
                 channel_values(std, channels).to(pixels.device()), inputs);
}

// The three steps in a pass each over the whole batch, written into the inputs where they
// have the pixels' shape.
void present_images(const at::Tensor& pixels, const at::Tensor& mean, const at::Tensor& std,
                    at::Tensor& inputs) {
  at::Tensor out = inputs.narrow(0, 0, pixels.size(0));
  const std::vector<int64_t> by_channel{1, pixels.size(1), 1, 1};
  const auto normalize = [&](at::Tensor x) {
    return x.div_(255.0).sub_(mean.view(by_channel)).div_(std.view(by_channel));
  };
  if (out.sizes() == pixels.sizes() && out.scalar_type() == at::kFloat) {
    normalize(out.copy_(pixels));
    return;
  }
  at::Tensor x = normalize(pixels.to(at::kFloat));
  if (x.size(2) != out.size(2) || x.size(3) != out.size(3))
    x = at::upsample_bilinear2d(x, {out.size(2), out.size(3)}, /*align_corners=*/false);
  out.copy_(x.expand(out.sizes()));  // 1 channel -> C by broadcasting
}

int resolve_workers(int64_t configured, bool on_gpu, int local_ranks) {
  if (configured > 0) return static_cast<int>(configured);
  if (!on_gpu) return 1;
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  return std::max(1, cores / std::max(local_ranks, 1) - 1);
}

}  // namespace dshost
