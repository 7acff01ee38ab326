// AdamW for fp32 buffers in CPU memory (the gradients fp32 or bf16), fused into one pass
// over memory and spread over as many threads as LibTorch's intra-op setting
// (train.threads). The loop is compiled for AVX-512, AVX2 and baseline x86-64 and the best
// one the CPU has is picked at load time. One step reads p, g, m, v and writes p, m, v
// once: torch::optim::AdamW makes about ten passes.
#pragma once

#include <ATen/Parallel.h>
#include <c10/core/thread_pool.h>
#include <c10/util/BFloat16.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

namespace dshost {

struct AdamWStep {
  float lr, beta1, beta2, eps, weight_decay;
  float bias_correction1, bias_correction2;  // 1 - beta^t
  float grad_scale = 1.0f;                   // multiplies g first: clipping, in the same pass
};

namespace detail {

// One element's update; inlined into each of the compiled variants below.
__attribute__((always_inline)) inline float adamw_element(float& p, float g, float& m, float& v,
                                                          const AdamWStep& s) {
  const float decay = 1.0f - s.lr * s.weight_decay;
  const float step = s.lr / s.bias_correction1;
  const float inv_sqrt_bc2 = 1.0f / std::sqrt(s.bias_correction2);
  const float gi = g * s.grad_scale;
  const float mi = s.beta1 * m + (1.0f - s.beta1) * gi;
  const float vi = s.beta2 * v + (1.0f - s.beta2) * gi * gi;
  m = mi;
  v = vi;
  p = p * decay - step * mi / (std::sqrt(vi) * inv_sqrt_bc2 + s.eps);
  return p;
}

// Vectorises fully when compiled with -fno-math-errno (dshost_add_plugin sets it): sqrt of
// the non-negative v never needs errno.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define DSHOST_CPU_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define DSHOST_CPU_CLONES
#endif

// A gradient as fp32: itself, or the bits of a bf16 one (a shift the loops vectorise).
__attribute__((always_inline)) inline float gradient(float g) { return g; }
__attribute__((always_inline)) inline float gradient(uint16_t bf16) {
  const uint32_t bits = uint32_t{bf16} << 16;
  float g;
  std::memcpy(&g, &bits, sizeof g);
  return g;
}

template <class G>  // float, or uint16_t holding bf16
DSHOST_CPU_CLONES inline void adamw_span(float* __restrict p, const G* __restrict g,
                                         float* __restrict m, float* __restrict v, int64_t n,
                                         AdamWStep s) {
  for (int64_t i = 0; i < n; ++i) adamw_element(p[i], gradient(g[i]), m[i], v[i], s);
}

// bf16 bits of x rounded to nearest even, as c10::BFloat16 rounds, in integer operations
// the loop below vectorises (c10's conversion kept it scalar: 25% slower than two passes).
__attribute__((always_inline)) inline uint16_t bf16_bits(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  const uint32_t rounded = (bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16;
  return x != x ? uint16_t{0x7FC0} : static_cast<uint16_t>(rounded);  // NaN stays a NaN
}

// The same, also writing the updated value rounded to bf16 (as Tensor::to rounds) into
// `out`: the compute-dtype copy the accelerator reads, without another pass over p.
template <class G>
DSHOST_CPU_CLONES inline void adamw_span_bf16(float* __restrict p, const G* __restrict g,
                                              float* __restrict m, float* __restrict v,
                                              uint16_t* __restrict out, int64_t n, AdamWStep s) {
  for (int64_t i = 0; i < n; ++i)
    out[i] = bf16_bits(adamw_element(p[i], gradient(g[i]), m[i], v[i], s));
}

#undef DSHOST_CPU_CLONES

}  // namespace detail

// Calls f(begin, end) on contiguous ranges that partition [0, n), one per thread: the
// calling thread and a pool of workers, `threads` in all (at most n / grain).
// Not at::parallel_for: its inline body runs f serially in code compiled without
// -fopenmp, as plugins are (the fused AdamW ran on one thread, a quarter of the host's
// memory bandwidth), and a plugin with its own OpenMP runtime would bring a second pool of
// spinning threads beside LibTorch's. The pool is made at first use, sized by the
// intra-op setting then, and serves one caller at a time (the strategy's step).
template <class F>
void parallel_ranges(int64_t n, int64_t grain, const F& f, int threads = at::get_num_threads()) {
  static c10::ThreadPool workers(std::max(1, at::get_num_threads() - 1));
  const int64_t most = static_cast<int64_t>(workers.size()) + 1;
  const int64_t used = std::clamp<int64_t>(n / std::max<int64_t>(grain, 1), 1,
                                           std::min<int64_t>(threads, most));
  const int64_t per_thread = (n + used - 1) / used;
  for (int64_t begin = per_thread; begin < n; begin += per_thread)
    workers.run([&f, begin, end = std::min(n, begin + per_thread)] { f(begin, end); });
  f(0, std::min(n, per_thread));
  if (used > 1) workers.waitWorkComplete();
}

// One AdamW step over n elements: param, grad (fp32 or bf16), exp_avg, exp_avg_sq; with
// `out`, the updated params in bf16 too.
template <class Grad>
void cpu_adamw(float* p, const Grad* grads, float* m, float* v, int64_t n, AdamWStep s,
               c10::BFloat16* out = nullptr, int threads = at::get_num_threads()) {
  static_assert(std::is_same_v<Grad, float> || std::is_same_v<Grad, c10::BFloat16>);
  using G = std::conditional_t<std::is_same_v<Grad, float>, float, uint16_t>;
  const G* g = reinterpret_cast<const G*>(grads);
  constexpr int64_t kGrain = 1 << 15;  // elements per task: 128 KiB of each array
  parallel_ranges(n, kGrain, [&](int64_t begin, int64_t end) {
    if (out != nullptr)
      detail::adamw_span_bf16(p + begin, g + begin, m + begin, v + begin,
                              reinterpret_cast<uint16_t*>(out + begin), end - begin, s);
    else
      detail::adamw_span(p + begin, g + begin, m + begin, v + begin, end - begin, s);
  }, threads);
}

}  // namespace dshost
