// Device memory a ZeRO strategy gives back between uses. A freed buffer keeps its storage
// object, emptied, so views made of it (the model's parameters, the tensors autograd saved)
// see the memory again once it is refilled (as FSDP does).
#pragma once

#include <dshost/strategy.hpp>

namespace dshost_zero {

inline void allocate(const at::Tensor& t) {
  if (t.defined()) dshost::resize_storage(t, static_cast<size_t>(t.numel()) * t.element_size());
}

inline void deallocate(const at::Tensor& t) {
  if (t.defined()) dshost::resize_storage(t, 0);
}

// A registered buffer that is emptied between uses.
struct Scratch {
  at::Tensor buffer;
  int32_t id = -1;
};

inline Scratch make_scratch(const dshost::Services& s, int64_t numel,
                            const at::TensorOptions& options) {
  Scratch out{at::empty({numel}, options)};
  out.id = s.register_buffer(dshost::to_dlpack(out.buffer));
  return out;
}

}  // namespace dshost_zero
