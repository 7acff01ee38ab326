// train.profile_steps: a window of optimizer steps recorded by PyTorch's profiler, written
// as a Chrome trace per rank: run_dir/profile/rank<R>.pt.trace.json. It holds every ATen
// operator on the host and, on CUDA, every kernel and copy on the GPU, each step under a
// "ProfilerStep#N" range as torch.profiler names them, and every allocation and free:
// Perfetto and chrome://tracing show it, and bench/gpu/kernels.py and memory.py sum it by
// kernel and by operator beside a PyTorch trace of the same model.
//
// The window starts after train.profile_after steps (warm-up: cuDNN autotuning, allocator
// growth and graph capture are not what a user wants to see) and ends with a device
// synchronisation, so every kernel of its last step is in the trace.
#pragma once

#include <ATen/Device.h>

#include <filesystem>
#include <memory>

namespace at {
class RecordFunction;
}

namespace dshost {

// Bytes LibTorch's caching allocator has handed out on `device`, now and at its peak (0 for
// the CPU).
struct DeviceBytes {
  int64_t current = 0, peak = 0;
};
DeviceBytes allocated_on(const at::Device& device);

class StepProfiler {
 public:
  // Profiles optimizer steps first..last (counting from 0).
  StepProfiler(std::filesystem::path trace_file, at::Device device, int64_t first, int64_t last);
  ~StepProfiler();

  void begin_step(int64_t step);  // step: optimizer steps done before this one
  void end_step(int64_t step);

 private:
  const std::filesystem::path trace_file_;
  const at::Device device_;
  const int64_t first_, last_;  // [first_, last_] profiled
  std::unique_ptr<at::RecordFunction> step_range_;
  bool active_ = false;
  int64_t allocated_at_start_ = 0;  // on the device, when the window opened
};

// The profiler of train.profile_steps steps after the first `after` from step `from`, cut at
// the run's `total` steps; none, with a warning, where that window is past the end.
std::unique_ptr<StepProfiler> profile_window(std::filesystem::path trace_file, at::Device device,
                                             int64_t from, int64_t after, int64_t steps,
                                             int64_t total);

}  // namespace dshost
