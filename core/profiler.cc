#include "core/profiler.h"

#include "core/error.h"
#include "core/log.h"
#include "core/safetensors.h"  // write_file_atomically

#include <ATen/record_function.h>
#include <nlohmann/json.hpp>
#include <torch/csrc/autograd/profiler_kineto.h>
#include <torch/version.h>
#if DSHOST_CUDA
#include <c10/cuda/CUDAFunctions.h>
#endif

#include <set>

namespace dshost {
namespace {

namespace kineto = torch::autograd::profiler;
using torch::profiler::impl::ActivityType;
using torch::profiler::impl::ProfilerConfig;
using torch::profiler::impl::ProfilerState;

std::set<ActivityType> activities(const at::Device& device) {
  if (device.is_cuda()) return {ActivityType::CPU, ActivityType::CUDA};
  return {ActivityType::CPU};
}

// Event times in microseconds (LibTorch 2 reports nanoseconds, 1.13 microseconds).
#if TORCH_VERSION_MAJOR >= 2
double start_us(const kineto::KinetoEvent& e) { return static_cast<double>(e.startNs()) / 1e3; }
double duration_us(const kineto::KinetoEvent& e) { return static_cast<double>(e.durationNs()) / 1e3; }
#else
double start_us(const kineto::KinetoEvent& e) { return static_cast<double>(e.startUs()); }
double duration_us(const kineto::KinetoEvent& e) { return static_cast<double>(e.durationUs()); }
#endif

// The Chrome trace format's complete events, named by torch.profiler's categories: host
// operators on pid 0 (a row per thread), kernels and copies on pid 1. Written here rather
// than by ProfilerResult::save, which needs a LibTorch built with Kineto (Debian's is not).
std::string chrome_trace(const kineto::ProfilerResult& result) {
  // User ranges (steps, and the phases strategies mark) appear on the host, in USER_SCOPE,
  // and again on the GPU around their kernels, under the same name.
  std::set<std::string> ranges;
  for (const auto& e : result.events())
    if (e.scope() == static_cast<uint8_t>(at::RecordScope::USER_SCOPE)) ranges.insert(e.name());
  nlohmann::json events = nlohmann::json::array();
  for (const auto& e : result.events()) {
    const bool on_device = e.deviceType() != c10::DeviceType::CPU;
    const std::string name = e.name();
    const char* category = ranges.count(name) ? (on_device ? "gpu_user_annotation" : "user_annotation")
                                              : (on_device ? "kernel" : "cpu_op");
    events.push_back({{"name", name}, {"cat", category}, {"ph", "X"}, {"ts", start_us(e)},
                      {"dur", duration_us(e)}, {"pid", on_device ? 1 : 0},
                      {"tid", on_device ? 0 : e.startThreadId()}});
  }
  return nlohmann::json{{"traceEvents", events}, {"displayTimeUnit", "ms"}}.dump() + "\n";
}

}  // namespace

StepProfiler::StepProfiler(std::filesystem::path trace_file, at::Device device, int64_t first,
                           int64_t last)
    : trace_file_(std::move(trace_file)), device_(device), first_(first), last_(last) {
  kineto::prepareProfiler(ProfilerConfig(ProfilerState::KINETO), activities(device_));
}

StepProfiler::~StepProfiler() {
  if (!active_) return;
  step_range_.reset();
  kineto::disableProfiler();  // training failed inside the window: no trace
}

void StepProfiler::begin_step(int64_t step) {
  if (step < first_ || step > last_) return;
  if (!active_) {
    kineto::enableProfiler(ProfilerConfig(ProfilerState::KINETO), activities(device_));
    active_ = true;
  }
  step_range_ = std::make_unique<at::RecordFunction>(at::RecordScope::USER_SCOPE);
  if (step_range_->isActive()) step_range_->before(cat("ProfilerStep#", step + 1));
}

void StepProfiler::end_step(int64_t step) {
  if (!active_) return;
  step_range_.reset();  // ends the step's range
  if (step < last_) return;
#if DSHOST_CUDA
  if (device_.is_cuda()) c10::cuda::device_synchronize();  // the last step's kernels finish
#endif
  const auto result = kineto::disableProfiler();
  active_ = false;
  std::error_code ec;
  std::filesystem::create_directories(trace_file_.parent_path(), ec);
  write_file_atomically(trace_file_.string(), chrome_trace(*result));
  log::info(cat("profile of steps ", first_ + 1, "-", last_ + 1, " written to ", trace_file_.string()));
}

}  // namespace dshost
