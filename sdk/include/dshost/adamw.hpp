// One AdamW element update, shared by the fused CPU loop (cpu_adam.hpp) and the fused CUDA
// kernel of the ZeRO strategies: plain C++ that nvcc also compiles for the device. No
// LibTorch here.
#pragma once

#include <math.h>

#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define DSHOST_ADAMW_INLINE __host__ __device__ __forceinline__
#else
#define DSHOST_ADAMW_INLINE __attribute__((always_inline)) inline
#endif

namespace dshost {

struct AdamWStep {
  float lr, beta1, beta2, eps, weight_decay;
  float bias_correction1, bias_correction2;  // 1 - beta^t
  float grad_scale = 1.0f;                   // multiplies g first: clipping, in the same pass
};

// AdamW's bias correction 1 - beta^t after t steps, for a double or (with LibTorch, found
// by argument-dependent lookup) a tensor t that stays on its device.
template <class Steps>
Steps bias_correction(double beta, const Steps& t) {
  using ::pow;
  return 1.0 - pow(beta, t);
}

namespace detail {

// Updates p, m and v as torch.optim.AdamW does; returns the new p. (sqrtf: vectorises on the
// CPU with -fno-math-errno, which dshost_add_plugin sets; v is never negative.)
DSHOST_ADAMW_INLINE float adamw_element(float& p, float g, float& m, float& v, const AdamWStep& s) {
  const float decay = 1.0f - s.lr * s.weight_decay;
  const float step = s.lr / s.bias_correction1;
  const float inv_sqrt_bc2 = 1.0f / sqrtf(s.bias_correction2);
  const float gi = g * s.grad_scale;
  const float mi = s.beta1 * m + (1.0f - s.beta1) * gi;
  const float vi = s.beta2 * v + (1.0f - s.beta2) * gi * gi;
  m = mi;
  v = vi;
  p = p * decay - step * mi / (sqrtf(vi) * inv_sqrt_bc2 + s.eps);
  return p;
}

// A gradient as fp32: itself, or the bits of a bf16 one (a shift that vectorises).
DSHOST_ADAMW_INLINE float gradient(float g) { return g; }
DSHOST_ADAMW_INLINE float gradient(uint16_t bf16) {
  const uint32_t bits = uint32_t{bf16} << 16;
  float g;
  memcpy(&g, &bits, sizeof g);
  return g;
}

// bf16 bits of x rounded to nearest even, as c10::BFloat16 rounds, in integer operations
// that vectorise (c10's conversion keeps the CPU loop scalar).
DSHOST_ADAMW_INLINE uint16_t bf16_bits(float x) {
  uint32_t bits;
  memcpy(&bits, &x, sizeof bits);
  const uint32_t rounded = (bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16;
  return x != x ? uint16_t{0x7FC0} : static_cast<uint16_t>(rounded);  // NaN stays a NaN
}

}  // namespace detail
}  // namespace dshost
