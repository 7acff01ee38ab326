// The ZeRO strategies' fused CUDA AdamW (CUDA builds only): one pass over the fp32 master
// range that reads its gradient (fp32 or bf16), updates master and moments, and writes the
// updated values in bf16 into the parameters the model computes with. PyTorch's fused
// AdamW takes gradients of the master's dtype and writes the master alone, so a bf16 model
// paid a conversion of its gradients and a second pass to write the parameters back.
// Plain C++ on this side: the kernel's file includes no LibTorch.
#pragma once

#include <dshost/adamw.hpp>

#include <cstdint>

namespace dshost_zero {

struct CudaAdamWRange {
  float* master;
  const void* grad;  // fp32, or bf16 where grad_bf16
  bool grad_bf16;
  float* exp_avg;
  float* exp_avg_sq;
  uint16_t* out;  // bf16 bits
  int64_t n;
};

// What the kernel reads on the device rather than from AdamWStep, so the host need not
// wait for it: each is a device pointer, or null for none.
struct DeviceScalars {
  const float* divisor = nullptr;           // divides every gradient (clipping)
  const float* bias_corrections = nullptr;  // 1 - beta1^t, 1 - beta2^t: replace step's
  const float* found_inf = nullptr;         // nonzero: leave the range as it was
};

// Enqueues the update of `r` on `stream` (a cudaStream_t). Returns the launch's error text,
// or null.
const char* cuda_adamw(const CudaAdamWRange& r, const dshost::AdamWStep& step,
                       const DeviceScalars& scalars, void* stream);

}  // namespace dshost_zero
