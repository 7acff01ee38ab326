// AdamW for fp32 buffers in CPU memory (the gradients fp32 or bf16), fused into one pass
// over memory and spread over as many threads as LibTorch's intra-op setting
// (train.threads). The loop is compiled for AVX-512, AVX2 and baseline x86-64 and the best
// one the CPU has is picked at load time. One step reads p, g, m, v and writes p, m, v
// once: torch::optim::AdamW makes about ten passes.
#pragma once

#include <dshost/adamw.hpp>

#include <ATen/Parallel.h>
#include <c10/core/thread_pool.h>
#include <c10/util/BFloat16.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

namespace dshost {

namespace detail {

// The loops vectorise fully with -fno-math-errno (adamw.hpp).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define DSHOST_CPU_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define DSHOST_CPU_CLONES
#endif

template <class G>  // float, or uint16_t holding bf16
DSHOST_CPU_CLONES inline void adamw_span(float* __restrict p, const G* __restrict g,
                                         float* __restrict m, float* __restrict v, int64_t n,
                                         AdamWStep s) {
  for (int64_t i = 0; i < n; ++i) adamw_element(p[i], gradient(g[i]), m[i], v[i], s);
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
  const int64_t used =
      std::clamp<int64_t>(n / std::max<int64_t>(grain, 1), 1, std::min<int64_t>(threads, most));
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
  parallel_ranges(
      n, kGrain,
      [&](int64_t begin, int64_t end) {
        if (out != nullptr)
          detail::adamw_span_bf16(p + begin, g + begin, m + begin, v + begin,
                                  reinterpret_cast<uint16_t*>(out + begin), end - begin, s);
        else
          detail::adamw_span(p + begin, g + begin, m + begin, v + begin, end - begin, s);
      },
      threads);
}

}  // namespace dshost
