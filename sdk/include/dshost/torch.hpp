// LibTorch side of the SDK: DLPack conversions and the few LibTorch calls whose spelling
// differs between the supported versions (1.13 and 2.x). Include this before anything
// else that includes <dshost/abi.h>, so that ATen's DLPack is the one in use.
#pragma once

#include <ATen/ATen.h>
#include <ATen/DLConvertor.h>
#include <ATen/autocast_mode.h>
#include <torch/version.h>

#include <dshost/plugin.hpp>

namespace dshost {

// Takes ownership of `t` and returns a tensor sharing its memory.
inline at::Tensor from_dlpack(DLManagedTensor* t) { return at::fromDLPack(t); }

// A zero-copy DLPack view that keeps `t`'s storage alive until its deleter runs.
inline DLManagedTensor* to_dlpack(const at::Tensor& t) { return at::toDLPack(t); }

// A tensor viewing memory borrowed for the duration of a call (not owned, not freed).
inline at::Tensor borrow(const DLTensor* t) {
  auto* managed = new DLManagedTensor{*t, nullptr, [](DLManagedTensor* self) { delete self; }};
  return at::fromDLPack(managed);
}

// A DLPack view of `t` for the length of one call; frees the view, not the memory.
class DLView {
 public:
  explicit DLView(const at::Tensor& t) : m_(at::toDLPack(t)) {}
  ~DLView() { m_->deleter(m_); }
  DLView(const DLView&) = delete;
  DLView& operator=(const DLView&) = delete;
  const DLTensor* get() const { return &m_->dl_tensor; }

 private:
  DLManagedTensor* m_;
};

inline at::Device to_device(DLDevice d) {
  if (d.device_type == kDLCUDA) return at::Device(at::kCUDA, static_cast<int8_t>(d.device_id));
  return at::Device(at::kCPU);
}

// Mixed precision for the scope of one forward: bf16 autocast on the model's device.
class AutocastScope {
 public:
  AutocastScope(at::Device device, bool enabled) : device_(device), enabled_(enabled) {
    if (enabled_) set(true);
  }
  ~AutocastScope() {
    if (!enabled_) return;
    set(false);
    at::autocast::clear_cache();
  }
  AutocastScope(const AutocastScope&) = delete;
  AutocastScope& operator=(const AutocastScope&) = delete;

 private:
  void set(bool on) {
#if TORCH_VERSION_MAJOR >= 2
    at::autocast::set_autocast_dtype(device_.type(), at::kBFloat16);
    at::autocast::set_autocast_enabled(device_.type(), on);
#else
    if (device_.is_cuda()) {
      at::autocast::set_autocast_gpu_dtype(at::kBFloat16);
      at::autocast::set_enabled(on);
    } else {
      at::autocast::set_autocast_cpu_dtype(at::kBFloat16);
      at::autocast::set_cpu_enabled(on);
    }
#endif
  }
  at::Device device_;
  bool enabled_;
};

}  // namespace dshost

#define DSHOST_TORCH_VERSION TORCH_VERSION
