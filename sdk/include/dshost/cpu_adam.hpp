// AdamW for fp32 buffers in CPU memory, fused into one pass over memory and spread over
// LibTorch's intra-op threads. The loop is compiled for AVX-512, AVX2 and baseline x86-64
// and the best one the CPU has is picked at load time. One step reads p, g, m, v and writes
// p, m, v once: torch::optim::AdamW makes about ten passes.
#pragma once

#include <ATen/Parallel.h>

#include <cmath>
#include <cstdint>

namespace dshost {

struct AdamWStep {
  float lr, beta1, beta2, eps, weight_decay;
  float bias_correction1, bias_correction2;  // 1 - beta^t
};

namespace detail {

// Vectorises fully when compiled with -fno-math-errno (dshost_add_plugin sets it): sqrt of
// the non-negative v never needs errno.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("avx512f", "avx2", "default")))
#endif
inline void adamw_span(float* __restrict p, const float* __restrict g, float* __restrict m,
                       float* __restrict v, int64_t n, AdamWStep s) {
  const float decay = 1.0f - s.lr * s.weight_decay;
  const float step = s.lr / s.bias_correction1;
  const float inv_sqrt_bc2 = 1.0f / std::sqrt(s.bias_correction2);
  const float b1 = s.beta1, b2 = s.beta2, c1 = 1.0f - s.beta1, c2 = 1.0f - s.beta2;
  for (int64_t i = 0; i < n; ++i) {
    const float gi = g[i];
    const float mi = b1 * m[i] + c1 * gi;
    const float vi = b2 * v[i] + c2 * gi * gi;
    m[i] = mi;
    v[i] = vi;
    p[i] = p[i] * decay - step * mi / (std::sqrt(vi) * inv_sqrt_bc2 + s.eps);
  }
}

}  // namespace detail

// One AdamW step over n elements: param, grad, exp_avg, exp_avg_sq.
inline void cpu_adamw(float* p, const float* g, float* m, float* v, int64_t n, AdamWStep s) {
  constexpr int64_t kGrain = 1 << 15;  // elements per task: 128 KiB of each array
  at::parallel_for(0, n, kGrain, [&](int64_t begin, int64_t end) {
    detail::adamw_span(p + begin, g + begin, m + begin, v + begin, end - begin, s);
  });
}

}  // namespace dshost
