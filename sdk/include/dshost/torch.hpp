// LibTorch side of the SDK: DLPack conversions and the few LibTorch calls whose spelling
// differs between the supported versions (1.13 and 2.x). Include this before anything
// else that includes <dshost/abi.h>, so that ATen's DLPack is the one in use.
#pragma once

#include <ATen/ATen.h>
#include <ATen/DLConvertor.h>
#include <ATen/autocast_mode.h>
#include <torch/version.h>

#include <dshost/plugin.hpp>

#include <cmath>

namespace dshost {

namespace detail {

// The manager context of a capsule made by to_dlpack below. All plugins of a process share
// the host's LibTorch (the loader checks its version and C++ ABI), so the tensor itself can
// ride along: the receiver gets the very same storage, which a strategy may later empty and
// refill (resize_storage) without leaving the model's views dangling. The capsule's shape
// and strides point into that tensor, which the context keeps alive.
struct SdkTensor {
  static constexpr uint64_t kMagic = 0x6473686f73742d31ull;  // "dshost-1"
  uint64_t magic = kMagic;
  at::Tensor tensor;
  DLManagedTensor managed{};
};

inline DLDataType dl_dtype(at::ScalarType t) {
  switch (t) {
    case at::kFloat:
      return {kDLFloat, 32, 1};
    case at::kDouble:
      return {kDLFloat, 64, 1};
    case at::kHalf:
      return {kDLFloat, 16, 1};
    case at::kBFloat16:
      return {kDLBfloat, 16, 1};
    case at::kLong:
      return {kDLInt, 64, 1};
    case at::kInt:
      return {kDLInt, 32, 1};
    case at::kShort:
      return {kDLInt, 16, 1};
    case at::kChar:
      return {kDLInt, 8, 1};
    case at::kByte:
      return {kDLUInt, 8, 1};
    default:
      throw Error(std::string("no DLPack dtype for ") + at::toString(t), DSHOST_UNSUPPORTED);
  }
}

}  // namespace detail

// A zero-copy DLPack view of `t`; the receiver calls its deleter (or from_dlpack does). Works
// for a buffer whose memory is emptied for now (data is then null until it is refilled).
inline DLManagedTensor* to_dlpack(const at::Tensor& t) {
  auto* holder = new detail::SdkTensor;
  holder->tensor = t;
  DLTensor& dl = holder->managed.dl_tensor;
  dl.data = t.storage().nbytes() == 0 ? nullptr : t.data_ptr();
  dl.device = DLDevice{t.is_cuda() ? kDLCUDA : kDLCPU,
                       static_cast<int32_t>(t.is_cuda() ? t.get_device() : 0)};
  dl.ndim = static_cast<int32_t>(t.dim());
  dl.dtype = detail::dl_dtype(t.scalar_type());
  dl.shape = const_cast<int64_t*>(holder->tensor.sizes().data());
  dl.strides = const_cast<int64_t*>(holder->tensor.strides().data());
  dl.byte_offset = 0;
  holder->managed.manager_ctx = holder;
  holder->managed.deleter = [](DLManagedTensor* self) {
    delete static_cast<detail::SdkTensor*>(self->manager_ctx);
  };
  return &holder->managed;
}

// Takes ownership of `t`. A capsule from to_dlpack gives a tensor on the sender's very
// storage (a plain alias with the sender's sizes and strides); any other producer's capsule
// gives a tensor viewing its memory.
inline at::Tensor from_dlpack(DLManagedTensor* t) {
  // An SDK capsule sits inside its context; only then is the context read (another
  // producer's context may be anything, even smaller than the magic).
  const auto* ctx = static_cast<const detail::SdkTensor*>(t->manager_ctx);
  if (ctx != nullptr && &ctx->managed == t && ctx->magic == detail::SdkTensor::kMagic) {
    // detach, not set_: set_ refills an emptied storage to fit the view (zero3's units and
    // their gradients, all of them, were allocated again from set-up to their first use).
    at::Tensor alias = ctx->tensor.detach();
    t->deleter(t);
    return alias;
  }
  return at::fromDLPack(t);
}

// A tensor viewing memory borrowed for the duration of a call (not owned, not freed).
inline at::Tensor borrow(const DLTensor* t) {
  auto* managed = new DLManagedTensor{*t, nullptr, [](DLManagedTensor* self) { delete self; }};
  return at::fromDLPack(managed);
}

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

// Whether autocast is on for `device` in this thread.
inline bool autocast_enabled(at::Device device) {
#if TORCH_VERSION_MAJOR >= 2
  return at::autocast::is_autocast_enabled(device.type());
#else
  return device.is_cuda() ? at::autocast::is_enabled() : at::autocast::is_cpu_enabled();
#endif
}

}  // namespace dshost

#define DSHOST_TORCH_VERSION TORCH_VERSION
