// What the model plugins' CUDA kernels need on LibTorch's side (CUDA builds only): the
// stream to enqueue on, tensors laid out as the kernels read them, whether a parameter's
// gradient is a buffer backward may add into, and a launch's error text turned into
// dshost's internal error.
#pragma once

#include <dshost/torch.hpp>

#include <c10/cuda/CUDAStream.h>

#include <cstdint>
#include <string>

namespace dshost_models {

// The current CUDA stream of t's device, as a cudaStream_t.
inline void* stream_of(const at::Tensor& t) {
  return c10::cuda::getCurrentCUDAStream(t.device().index()).stream();
}

// t contiguous in `format` and starting 16-byte aligned (a copy where it is not), for
// 16-byte loads.
inline at::Tensor aligned16(const at::Tensor& t,
                            at::MemoryFormat format = at::MemoryFormat::Contiguous) {
  at::Tensor c = t.contiguous(format);
  return reinterpret_cast<uintptr_t>(c.data_ptr()) % 16 == 0 ? c : c.clone(format);
}

inline at::Tensor channels_last_aligned16(const at::Tensor& t) {
  return aligned16(t, at::MemoryFormat::ChannelsLast);
}

// Whether bf16 t, read where it lies, gives 16-byte loads of 8 values along its last
// dimension: that dimension contiguous, t's start and every other stride 16-byte aligned.
inline bool bf16_vectors_aligned(const at::Tensor& t) {
  if (t.stride(-1) != 1 || reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 != 0) return false;
  for (int64_t d = 0; d + 1 < t.dim(); ++d)
    if (t.stride(d) % 8 != 0) return false;
  return true;
}

// Whether p's gradient is a buffer the strategy bound, of `dtype`, that a backward kernel may
// add into itself (as dshost::linear does for its weight): the accumulator then gets no
// gradient, and autograd's add kernel is spared.
inline bool bound_gradient(const at::Tensor& p, at::ScalarType dtype) {
  const at::Tensor& g = p.grad();
  return !at::GradMode::is_enabled() && p.requires_grad() && g.defined() && g.is_cuda() &&
         g.scalar_type() == dtype && g.is_contiguous();
}

// Whether t is a bf16 tensor on a GPU (the kernels' dtype).
inline bool bf16_on_gpu(const at::Tensor& t) {
  return t.defined() && t.is_cuda() && t.scalar_type() == at::kBFloat16;
}

inline uint16_t* bf16_bits(const at::Tensor& t) { return static_cast<uint16_t*>(t.data_ptr()); }

// Throws where a kernel launcher returned an error text.
inline void check_launch(const char* err, const char* kernel) {
  if (err != nullptr)
    throw dshost::Error(std::string("the ") + kernel + " kernel failed to launch: " + err,
                        DSHOST_INTERNAL);
}

}  // namespace dshost_models
