// What both of batch norm's kernel sets (cuda_batch_norm.cu, cuda_batch_norm_clusters.cu)
// compute alike: the activation and its derivative, the layer's parameters in fp32 or bf16,
// 8 channels' values at a time, and backward's per-element terms from the forward's
// statistics.
#pragma once

#include "activation.h"
#include "cuda_bf16.cuh"

#include <type_traits>

namespace dshost_models {
namespace kernels {

template <Act A>
__device__ inline float activate(float z) {
  if (A == Act::relu) return z > 0.f ? z : 0.f;
  if (A == Act::relu6) return z > 0.f ? (z < 6.f ? z : 6.f) : 0.f;
  if (A == Act::silu) return z / (1.f + __expf(-z));
  return z;
}

template <Act A>
__device__ inline float derivative(float z) {
  if (A == Act::relu) return z > 0.f ? 1.f : 0.f;
  if (A == Act::relu6) return z > 0.f && z < 6.f ? 1.f : 0.f;
  if (A == Act::silu) {
    const float s = 1.f / (1.f + __expf(-z));
    return s * (1.f + z * (1.f - s));
  }
  return 1.f;
}

__device__ inline float param(const void* p, bool fp32, int64_t i) {
  return fp32 ? static_cast<const float*>(p)[i] : to_float(static_cast<const uint16_t*>(p)[i]);
}

__device__ inline void set_param(void* p, bool fp32, int64_t i, float v) {
  if (fp32)
    static_cast<float*>(p)[i] = v;
  else
    static_cast<uint16_t*>(p)[i] = to_bf16(v);
}

// 8 consecutive floats from 32-byte aligned `at`.
struct Floats8 {
  float v[kLanes];
};
__device__ inline Floats8 load8(const float* at) {
  const float4 lo = reinterpret_cast<const float4*>(at)[0],
               hi = reinterpret_cast<const float4*>(at)[1];
  return {{lo.x, lo.y, lo.z, lo.w, hi.x, hi.y, hi.z, hi.w}};
}

__device__ inline Bf16x8 load_bf16x8(const uint16_t* at) {
  return *reinterpret_cast<const Bf16x8*>(at);
}

// A thread's channels' forward statistics ([4, channels]: mean, rstd, scale, shift), and
// what backward recomputes of one element vector from them: g, the gradient reaching the
// batch norm's output (dy through the activation's derivative), and xhat, the normalized
// input.
struct ChannelStats {
  Floats8 mean, rstd, scale, shift;
};

__device__ inline ChannelStats channel_stats(const float* stats, int64_t channels, int64_t col) {
  return {load8(stats + col), load8(stats + channels + col), load8(stats + 2 * channels + col),
          load8(stats + 3 * channels + col)};
}

struct Recomputed {
  float g[kLanes], xhat[kLanes];
};

template <Act A>
__device__ inline Recomputed recompute(const ChannelStats& s, const Bf16x8& dy, const Bf16x8& x) {
  Recomputed r;
  for (int k = 0; k < kLanes; ++k) {
    const float v = to_float(x.v[k]);
    r.g[k] = to_float(dy.v[k]) * derivative<A>(v * s.scale.v[k] + s.shift.v[k]);
    r.xhat[k] = (v - s.mean.v[k]) * s.rstd.v[k];
  }
  return r;
}

// Calls f(std::integral_constant<Act, act>()).
template <class F>
void with_activation(Act act, F f) {
  switch (act) {
    case Act::none:
      return f(std::integral_constant<Act, Act::none>());
    case Act::relu:
      return f(std::integral_constant<Act, Act::relu>());
    case Act::relu6:
      return f(std::integral_constant<Act, Act::relu6>());
    case Act::silu:
      return f(std::integral_constant<Act, Act::silu>());
  }
}

}  // namespace kernels
}  // namespace dshost_models
