#include "core/profiler.h"

#include "core/error.h"
#include "core/log.h"
#include "core/safetensors.h"  // write_file_atomically

#include <ATen/record_function.h>
#include <nlohmann/json.hpp>
#include <torch/csrc/autograd/profiler_kineto.h>
#include <torch/version.h>
#if DSHOST_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#endif

#include <algorithm>
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

// Operators, and every allocation and free (what bench/gpu/memory.py reads a step's memory
// from).
ProfilerConfig config() {
  return ProfilerConfig(ProfilerState::KINETO, /*report_input_shapes=*/false,
                        /*profile_memory=*/true);
}

// Event times in microseconds (LibTorch 2 reports nanoseconds, 1.13 microseconds).
#if TORCH_VERSION_MAJOR >= 2
double start_us(const kineto::KinetoEvent& e) { return static_cast<double>(e.startNs()) / 1e3; }
double duration_us(const kineto::KinetoEvent& e) {
  return static_cast<double>(e.durationNs()) / 1e3;
}
#else
double start_us(const kineto::KinetoEvent& e) { return static_cast<double>(e.startUs()); }
double duration_us(const kineto::KinetoEvent& e) { return static_cast<double>(e.durationUs()); }
#endif

// An allocation (positive bytes) or a free (negative) by the thread that made it, as
// torch.profiler writes them with profile_memory: an instant event whose "Device Type" is
// c10's number (0 the host, 1 CUDA).
nlohmann::json memory_event(const kineto::KinetoEvent& e) {
  return {{"name", "[memory]"},
          {"cat", "cpu_instant_event"},
          {"ph", "i"},
          {"s", "t"},
          {"ts", start_us(e)},
          {"pid", 0},
          {"tid", e.startThreadId()},
          {"args",
           {{"Bytes", e.nBytes()},
            {"Device Type", static_cast<int>(e.deviceType())},
            {"Device Id", static_cast<int8_t>(e.deviceIndex())}}}};
}

// Gives the device's memory events torch.profiler's "Total Allocated": the bytes allocated
// on `device` after each, counting from `at_start`.
void add_totals(nlohmann::json& events, const at::Device& device, int64_t at_start) {
  std::vector<nlohmann::json*> on_device;
  for (auto& e : events)
    if (e["name"] == "[memory]" && e["args"]["Device Type"] == static_cast<int>(device.type()))
      on_device.push_back(&e);
  std::stable_sort(
      on_device.begin(), on_device.end(),
      [](const nlohmann::json* a, const nlohmann::json* b) { return (*a)["ts"] < (*b)["ts"]; });
  int64_t total = at_start;
  for (nlohmann::json* e : on_device) {
    total += (*e)["args"]["Bytes"].get<int64_t>();
    (*e)["args"]["Total Allocated"] = total;
  }
}

// The Chrome trace format's events, named by torch.profiler's categories: host operators
// and allocations on pid 0 (a row per thread), kernels and copies on pid 1. Written here
// rather than by ProfilerResult::save, which needs a LibTorch built with Kineto (Debian's
// is not).
std::string chrome_trace(const kineto::ProfilerResult& result, const at::Device& device,
                         int64_t allocated_at_start) {
  // User ranges (steps, and the phases strategies mark) appear on the host, in USER_SCOPE,
  // and again on the GPU around their kernels, under the same name.
  std::set<std::string> ranges;
  for (const auto& e : result.events())
    if (e.scope() == static_cast<uint8_t>(at::RecordScope::USER_SCOPE)) ranges.insert(e.name());
  nlohmann::json events = nlohmann::json::array();
  for (const auto& e : result.events()) {
    if (e.name() == "[memory]") {
      events.push_back(memory_event(e));
      continue;
    }
    const bool on_device = e.deviceType() != c10::DeviceType::CPU;
    const std::string name = e.name();
    const char* category = ranges.count(name)
                               ? (on_device ? "gpu_user_annotation" : "user_annotation")
                               : (on_device ? "kernel" : "cpu_op");
    events.push_back({{"name", name},
                      {"cat", category},
                      {"ph", "X"},
                      {"ts", start_us(e)},
                      {"dur", duration_us(e)},
                      {"pid", on_device ? 1 : 0},
                      {"tid", on_device ? 0 : e.startThreadId()}});
  }
  if (device.is_cuda()) add_totals(events, device, allocated_at_start);
  return nlohmann::json{{"traceEvents", events}, {"displayTimeUnit", "ms"}}.dump() + "\n";
}

}  // namespace

DeviceBytes allocated_on(const at::Device& device) {
#if DSHOST_CUDA
  if (device.is_cuda()) {
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device.index());
    const auto& bytes =
        stats.allocated_bytes[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)];
    return {bytes.current, bytes.peak};
  }
#endif
  (void)device;
  return {};
}

StepProfiler::StepProfiler(std::filesystem::path trace_file, at::Device device, int64_t first,
                           int64_t last)
    : trace_file_(std::move(trace_file)), device_(device), first_(first), last_(last) {
  kineto::prepareProfiler(config(), activities(device_));
}

StepProfiler::~StepProfiler() {
  if (!active_) return;
  step_range_.reset();
  kineto::disableProfiler();  // training failed inside the window: no trace
}

void StepProfiler::begin_step(int64_t step) {
  if (step < first_ || step > last_) return;
  if (!active_) {
    allocated_at_start_ = allocated_on(device_).current;
    kineto::enableProfiler(config(), activities(device_));
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
  write_file_atomically(trace_file_.string(), chrome_trace(*result, device_, allocated_at_start_));
  log::info(
      cat("profile of steps ", first_ + 1, "-", last_ + 1, " written to ", trace_file_.string()));
}

std::unique_ptr<StepProfiler> profile_window(std::filesystem::path trace_file, at::Device device,
                                             int64_t from, int64_t after, int64_t steps,
                                             int64_t total) {
  const int64_t first = from + after, last = std::min(first + steps, total) - 1;
  if (first <= last)
    return std::make_unique<StepProfiler>(std::move(trace_file), device, first, last);
  log::warn(cat("train.profile_after = ", after, " skips past the last of ", total,
                " steps: nothing is profiled; lower it"));
  return nullptr;
}

}  // namespace dshost
