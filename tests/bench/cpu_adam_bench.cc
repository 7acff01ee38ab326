// The fused CPU AdamW (sdk/include/dshost/cpu_adam.hpp, used by zero3-offload) against
// torch::optim::AdamW stepping the same flat fp32 parameter, 1M to 100M elements, with
// LibTorch's intra-op threads on both sides. Goal (issue 3): at least 5x faster.
// Run: build/tests/bench/dshost_cpu_adam_bench; results in bench/results/cpu_adam.md.
#include <dshost/cpu_adam.hpp>

#include <benchmark/benchmark.h>
#include <torch/optim/adamw.h>

#include <cmath>

namespace {

constexpr double kLr = 1e-3, kBeta1 = 0.9, kBeta2 = 0.999, kEps = 1e-8, kDecay = 0.01;

void TorchAdamW(benchmark::State& state) {
  at::Tensor param = at::randn({state.range(0)}).set_requires_grad(true);
  param.mutable_grad() = at::randn({state.range(0)});
  torch::optim::AdamW optimizer(
      {param},
      torch::optim::AdamWOptions(kLr).betas({kBeta1, kBeta2}).eps(kEps).weight_decay(kDecay));
  for (auto _ : state) optimizer.step();
  state.SetBytesProcessed(state.iterations() * state.range(0) * 4 * 7);  // read 4, write 3
}

// bf16_copy: also writes the updated values in bf16, as zero3-offload's update does.
void FusedCpuAdamW(benchmark::State& state, bool bf16_copy) {
  const int64_t n = state.range(0);
  at::Tensor p = at::randn({n}), g = at::randn({n}), m = at::zeros({n}), v = at::zeros({n});
  at::Tensor copy = at::empty({bf16_copy ? n : 0}, at::kBFloat16);
  int64_t t = 0;
  for (auto _ : state) {
    ++t;
    dshost::cpu_adamw(
        p.data_ptr<float>(), g.data_ptr<float>(), m.data_ptr<float>(), v.data_ptr<float>(), n,
        {static_cast<float>(kLr), static_cast<float>(kBeta1), static_cast<float>(kBeta2),
         static_cast<float>(kEps), static_cast<float>(kDecay),
         static_cast<float>(1 - std::pow(kBeta1, t)), static_cast<float>(1 - std::pow(kBeta2, t))},
        bf16_copy ? copy.data_ptr<at::BFloat16>() : nullptr);
  }
  state.SetBytesProcessed(state.iterations() * n * (4 * 7 + (bf16_copy ? 2 : 0)));
}

}  // namespace

BENCHMARK(TorchAdamW)
    ->Arg(1 << 20)
    ->Arg(10 << 20)
    ->Arg(100 << 20)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK_CAPTURE(FusedCpuAdamW, fp32, false)
    ->Arg(1 << 20)
    ->Arg(10 << 20)
    ->Arg(100 << 20)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK_CAPTURE(FusedCpuAdamW, bf16_copy, true)
    ->Arg(1 << 20)
    ->Arg(100 << 20)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK_MAIN();
