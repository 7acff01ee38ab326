// gpt's memory-bound CUDA kernels (plugins/models/common/cuda_*.cu) alone, at its b8 shapes
// (8192 rows; widths of gpt2-124m, gpt2-350m and gpt-1.3b), the strategies' AdamW over its
// parameters, and mobilenet_v2's batch norms at b32: each kernel's time per launch, and the
// bytes it must move at least as a rate to set against the GPU's memory bandwidth (4.8 TB/s on
// an H200). Launches go back to back on the stream, kLaunches a timed iteration.
// Run: bench/gpu/run.sh kernels (CUDA builds only; each benchmark says so without a GPU).
#include "plugins/models/common/cuda_batch_norm.h"
#include "plugins/models/common/cuda_cross_entropy.h"
#include "plugins/models/common/cuda_layer_norm.h"
#include "plugins/models/common/cuda_tensors.hpp"
#if DSHOST_CUDA_FP8
#include "plugins/models/common/cuda_fp8_cast.h"
#endif
#if DSHOST_CUDA_GELU_GEMM
#include "plugins/models/common/bias_gradient.hpp"
#include "plugins/models/common/cuda_gelu_gemm.h"
#endif
#include "plugins/strategies/common/cuda_adamw.h"

#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <benchmark/benchmark.h>

#include <vector>

namespace {

using dshost_models::bf16_bits;

constexpr int kLaunches = 20;
constexpr int64_t kRows = 8192, kVocabulary = 50304;

at::Tensor bf16(const std::vector<int64_t>& sizes) {
  return at::randn(sizes, at::dtype(at::kBFloat16).device(at::kCUDA));
}

at::Tensor floats(int64_t n) { return at::zeros({n}, at::dtype(at::kFloat).device(at::kCUDA)); }

// Times `launch` (a kernel launcher returning its error text or null) as `bytes` a launch.
template <typename Launch>
void time_launches(benchmark::State& state, int64_t bytes, Launch launch) {
  const auto wait = [] { c10::cuda::getCurrentCUDAStream().synchronize(); };
  if (const char* err = launch()) return state.SkipWithError(err);
  wait();
  for (auto _ : state) {
    for (int i = 0; i < kLaunches; ++i) launch();
    wait();
  }
  const double launches = static_cast<double>(state.iterations()) * kLaunches;
  state.SetBytesProcessed(static_cast<int64_t>(launches) * bytes);
  state.counters["per_launch"] =
      benchmark::Counter(launches, benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}

bool have_gpu(benchmark::State& state) {
  if (at::hasCUDA()) return true;
  state.SkipWithError("no CUDA device");
  return false;
}

// gpt's residual add and layer norm: x and the residual read, their sum and its normalized
// rows written.
void LayerNormForward(benchmark::State& state) {
  if (!have_gpu(state)) return;
  const dshost_models::LayerNormShape s{kRows, state.range(0)};
  const at::Tensor x = bf16({s.rows, s.width}), r = bf16({s.rows, s.width}), w = bf16({s.width}),
                   b = bf16({s.width}), sum = at::empty_like(x), y = at::empty_like(x),
                   mean = floats(s.rows), rstd = floats(s.rows);
  time_launches(state, 8 * s.rows * s.width, [&] {
    return dshost_models::cuda_layer_norm(
        bf16_bits(x), bf16_bits(r), bf16_bits(w), bf16_bits(b), 1e-5f, bf16_bits(sum), bf16_bits(y),
        mean.data_ptr<float>(), rstd.data_ptr<float>(), s, dshost_models::stream_of(x));
  });
}

// Its backward: dy, the sum's own gradient and the sum read, the sum's whole gradient
// written (the parameters' gradients, [width] each, are not counted).
void LayerNormBackward(benchmark::State& state) {
  if (!have_gpu(state)) return;
  const dshost_models::LayerNormShape s{kRows, state.range(0)};
  const at::Tensor x = bf16({s.rows, s.width}), w = bf16({s.width}), b = bf16({s.width}),
                   y = at::empty_like(x), mean = floats(s.rows), rstd = floats(s.rows),
                   dy = bf16({s.rows, s.width}), dsum = bf16({s.rows, s.width}),
                   total = at::empty_like(x), dw = at::empty_like(w), db = at::empty_like(b),
                   scratch = floats(dshost_models::cuda_layer_norm_scratch(s));
  void* stream = dshost_models::stream_of(x);
  dshost_models::cuda_layer_norm(bf16_bits(x), nullptr, bf16_bits(w), bf16_bits(b), 1e-5f, nullptr,
                                 bf16_bits(y), mean.data_ptr<float>(), rstd.data_ptr<float>(), s,
                                 stream);
  time_launches(state, 8 * s.rows * s.width, [&] {
    return dshost_models::cuda_layer_norm_backward(
        bf16_bits(dy), bf16_bits(dsum), bf16_bits(x), mean.data_ptr<float>(),
        rstd.data_ptr<float>(), bf16_bits(w), bf16_bits(total), bf16_bits(dw), bf16_bits(db),
        /*accumulate=*/false, scratch.data_ptr<float>(), s, stream);
  });
}

struct Logits {
  dshost_models::CrossEntropyShape s{kRows, kVocabulary};
  at::Tensor logits = bf16({kRows, kVocabulary}) * 4;
  at::Tensor targets = at::randint(kVocabulary, {kRows}, at::dtype(at::kLong).device(at::kCUDA));
  at::Tensor losses = floats(kRows), lse = floats(kRows);
};

// The loss: the logits read once.
void CrossEntropyForward(benchmark::State& state) {
  if (!have_gpu(state)) return;
  Logits l;
  time_launches(state, 2 * kRows * kVocabulary, [&] {
    return dshost_models::cuda_cross_entropy(bf16_bits(l.logits), l.targets.data_ptr<int64_t>(),
                                             l.losses.data_ptr<float>(), l.lse.data_ptr<float>(),
                                             l.s, dshost_models::stream_of(l.logits));
  });
}

// The logits' gradient: the logits read, the gradient written.
void CrossEntropyBackward(benchmark::State& state) {
  if (!have_gpu(state)) return;
  Logits l;
  const at::Tensor scale = floats(1) + 1.0 / kRows, grad = at::empty_like(l.logits);
  void* stream = dshost_models::stream_of(l.logits);
  dshost_models::cuda_cross_entropy(bf16_bits(l.logits), l.targets.data_ptr<int64_t>(),
                                    l.losses.data_ptr<float>(), l.lse.data_ptr<float>(), l.s,
                                    stream);
  time_launches(state, 4 * kRows * kVocabulary, [&] {
    return dshost_models::cuda_cross_entropy_backward(
        bf16_bits(l.logits), l.targets.data_ptr<int64_t>(), l.lse.data_ptr<float>(),
        scale.data_ptr<float>(), bf16_bits(grad), l.s, stream);
  });
}

#if DSHOST_CUDA_FP8
using dshost_models::Fp8Format;
using dshost_models::Fp8Source;

// A delayed-scaling cast of a [rows, cols] input (the arguments), as gpt's layers make them:
// read in bf16 (gelu_gradient's two matrices; stacked's three [8, rows / 8, cols / 192, 64]
// parts, attention's gradients), written in fp8 in both layouts; with the column sums (a
// bias's gradient) where `column_sums`.
void Fp8Cast(benchmark::State& state, Fp8Source source, Fp8Format format, bool column_sums) {
  if (!have_gpu(state)) return;
  const int64_t rows = state.range(0), cols = state.range(1),
                tile_rows = dshost_models::kFp8CastTileRows;
  const at::Tensor x = bf16({rows, cols}), point = bf16({rows, cols});
  const at::Tensor out = at::empty({rows, cols}, at::dtype(at::kByte).device(at::kCUDA)),
                   out_t = at::empty_like(out), inverse_scale = floats(1),
                   history = at::zeros({dshost_models::kFp8HistoryWords},
                                       at::dtype(at::kInt).device(at::kCUDA)),
                   partials = floats(column_sums ? (rows + tile_rows - 1) / tile_rows * cols : 0);
  dshost_models::Fp8CastInput in{bf16_bits(x), rows, cols, source, bf16_bits(point)};
  std::vector<at::Tensor> parts;
  if (source == Fp8Source::stacked) {
    for (int i = 0; i < 3; ++i) parts.push_back(bf16({8, rows / 8, cols / 3 / 64, 64}));
    in.stack = {{bf16_bits(parts[0]), bf16_bits(parts[1]), bf16_bits(parts[2])},
                rows / 8,
                64,
                parts[0].stride(0),
                parts[0].stride(1),
                parts[0].stride(2)};
    in.x = in.stack.parts[0];
  }
  const int64_t read = source == Fp8Source::gelu_gradient ? 4 : 2;
  time_launches(state, (read + 2) * rows * cols, [&] {
    return dshost_models::cuda_cast_to_fp8_delayed(
        in, reinterpret_cast<unsigned*>(history.data_ptr<int>()), format, out.data_ptr<uint8_t>(),
        out_t.data_ptr<uint8_t>(), inverse_scale.data_ptr<float>(),
        column_sums ? partials.data_ptr<float>() : nullptr, dshost_models::stream_of(x));
  });
}

// A bias's gradient from a cast's column sums: [128, cols] floats read, [cols] written.
void SumColumnPartials(benchmark::State& state) {
  if (!have_gpu(state)) return;
  const int64_t cols = state.range(0), tiles = kRows / dshost_models::kFp8CastTileRows;
  const at::Tensor partials = floats(tiles * cols) + 1, out = bf16({cols});
  time_launches(state, 4 * tiles * cols + 2 * cols, [&] {
    return dshost_models::cuda_sum_column_partials(partials.data_ptr<float>(), tiles, cols,
                                                   bf16_bits(out), /*accumulate=*/false,
                                                   dshost_models::stream_of(out));
  });
}
#endif

#if DSHOST_CUDA_GELU_GEMM
// gpt's MLP at width C (an argument) with GELU as ATen's pass after c_fc's product and inside
// cuBLASLt's epilogues (time only: these are products). Forward: [8192, C] x [4C, C]^T + bias,
// then GELU. Backward: mlp_proj's input gradient [8192, C] x [C, 4C], then GELU's derivative;
// in the epilogue with c_fc's bias gradient (DGELU_BGRAD) or without it (DGELU).
struct Mlp {
  int64_t c;
  at::Tensor x = bf16({kRows, c}), fc_weight = bf16({4 * c, c}), fc_bias = bf16({4 * c}),
             proj_weight = bf16({c, 4 * c}), pre = bf16({kRows, 4 * c}), out = at::empty_like(pre),
             g = bf16({kRows, c}), bias_gradient = bf16({4 * c}),
             workspace = at::empty({static_cast<int64_t>(dshost_models::kGeluGemmWorkspaceBytes)},
                                   at::dtype(at::kByte).device(at::kCUDA));
  void* stream = dshost_models::stream_of(x);
};

void GeluForward(benchmark::State& state, bool epilogue) {
  if (!have_gpu(state)) return;
  Mlp p{state.range(0)};
  time_launches(state, 0, [&]() -> const char* {
    if (epilogue)
      return dshost_models::cuda_gelu_linear(
          bf16_bits(p.x), bf16_bits(p.fc_weight), bf16_bits(p.fc_bias), kRows, 4 * p.c, p.c,
          bf16_bits(p.out), bf16_bits(p.pre), p.workspace.data_ptr(), p.stream);
    at::gelu(at::addmm(p.fc_bias, p.x, p.fc_weight.t()), "tanh");
    return nullptr;
  });
}

enum class GeluBackwardBy { aten, epilogue, epilogue_with_bias_gradient };

void GeluBackward(benchmark::State& state, GeluBackwardBy by) {
  if (!have_gpu(state)) return;
  Mlp p{state.range(0)};
  time_launches(state, 0, [&]() -> const char* {
    if (by == GeluBackwardBy::aten) {
      at::gelu_backward(p.g.mm(p.proj_weight), p.pre, "tanh");
      return nullptr;
    }
    return dshost_models::cuda_gelu_linear_backward(
        bf16_bits(p.g), bf16_bits(p.proj_weight), bf16_bits(p.pre), kRows, 4 * p.c, p.c,
        bf16_bits(p.out),
        by == GeluBackwardBy::epilogue_with_bias_gradient ? bf16_bits(p.bias_gradient) : nullptr,
        p.workspace.data_ptr(), p.stream);
  });
}

// A linear layer's bias gradient alone (bias_gradient.hpp's column sums) from 8192 rows by the
// argument's columns: the rows read once.
void ColumnSums(benchmark::State& state) {
  if (!have_gpu(state)) return;
  const at::Tensor g = bf16({kRows, state.range(0)});
  time_launches(state, 2 * g.numel(), [&]() -> const char* {
    dshost_models::bias_gradient(g);
    return nullptr;
  });
}

// A linear layer's weight gradient at [out, in] (the arguments) from 8192 rows, added into a
// bf16 buffer, with the bias's gradient: ATen's product then bias_gradient.hpp's column sums
// (as dshost::linear), the product summing them in its epilogue (BGRADB, as bf16_linear.hpp),
// and the product alone for the epilogue's cost (time only: these are products).
enum class WeightGradientBy { aten_then_column_sums, product_with_bias_gradient, product_alone };

void WeightGradient(benchmark::State& state, WeightGradientBy by) {
  if (!have_gpu(state)) return;
  const int64_t out = state.range(0), in = state.range(1);
  const at::Tensor g = bf16({kRows, out}), x = bf16({kRows, in}), w_grad = bf16({out, in}),
                   b_grad = bf16({out}),
                   workspace =
                       at::empty({static_cast<int64_t>(dshost_models::kGeluGemmWorkspaceBytes)},
                                 at::dtype(at::kByte).device(at::kCUDA));
  time_launches(state, 0, [&]() -> const char* {
    if (by == WeightGradientBy::aten_then_column_sums) {
      w_grad.addmm_(g.t(), x);
      dshost_models::bias_gradient(g);
      return nullptr;
    }
    return dshost_models::cuda_weight_gradient(
        bf16_bits(g), bf16_bits(x), kRows, out, in, /*accumulate=*/true, bf16_bits(w_grad),
        by == WeightGradientBy::product_with_bias_gradient ? bf16_bits(b_grad) : nullptr,
        workspace.data_ptr(), dshost_models::stream_of(g));
  });
}
#endif

// The strategies' AdamW over gpt's parameters (arguments: width, blocks; vocabulary 50304,
// 1024 positions), bf16 gradients and parameters with fp32 masters and moments: in one launch
// (ddp's master shard), and a launch a unit (zero2's: the embeddings, each block, the last layer
// norm). Bytes: the gradient and parameter (2 each) and master and moments read and written (24).
std::vector<int64_t> gpt_unit_sizes(int64_t c, int64_t blocks) {
  std::vector<int64_t> sizes{(kVocabulary + 1024) * c};
  for (int64_t i = 0; i < blocks; ++i) sizes.push_back(12 * c * c + 13 * c);
  sizes.push_back(2 * c);
  return sizes;
}

void AdamW(benchmark::State& state, bool a_launch_a_unit) {
  if (!have_gpu(state)) return;
  const std::vector<int64_t> sizes = gpt_unit_sizes(state.range(0), state.range(1));
  int64_t total = 0;
  for (int64_t n : sizes) total += n;
  const at::Tensor master = floats(total), exp_avg = floats(total), exp_avg_sq = floats(total),
                   grad = bf16({total}), out = at::empty_like(grad);
  const dshost::AdamWStep step{1e-4f, 0.9f, 0.95f, 1e-8f, 0.1f, 0.1f, 0.05f};
  void* stream = dshost_models::stream_of(master);
  const auto update = [&](int64_t begin, int64_t n) {
    const dshost_zero::CudaAdamWRange r{master.data_ptr<float>() + begin,
                                        bf16_bits(grad) + begin,
                                        /*grad_bf16=*/true,
                                        exp_avg.data_ptr<float>() + begin,
                                        exp_avg_sq.data_ptr<float>() + begin,
                                        bf16_bits(out) + begin,
                                        n};
    return dshost_zero::cuda_adamw(r, step, {}, stream);
  };
  time_launches(state, 28 * total, [&]() -> const char* {
    if (!a_launch_a_unit) return update(0, total);
    int64_t begin = 0;
    for (int64_t n : sizes) {
      if (const char* err = update(begin, n)) return err;
      begin += n;
    }
    return nullptr;
  });
}

// mobilenet_v2's batch norms at b32 from 224-pixel images: each one's side (its output's
// height and width), channels and activation, in the order the model runs them.
struct BatchNormLayer {
  int64_t side, channels;
  dshost_models::Act act;
};

std::vector<BatchNormLayer> mobilenet_v2_batch_norms() {
  using dshost_models::Act;
  std::vector<BatchNormLayer> layers{
      {112, 32, Act::relu6}, {112, 32, Act::relu6}, {112, 16, Act::none}};
  int64_t side = 112, in = 16;
  const std::vector<std::vector<int64_t>> stages{{24, 2, 2}, {32, 3, 2},  {64, 4, 2},
                                                 {96, 3, 1}, {160, 3, 2}, {320, 1, 1}};
  for (const auto& stage : stages) {  // channels, blocks, the first block's stride
    for (int64_t block = 0; block < stage[1]; ++block) {
      layers.push_back({side, 6 * in, Act::relu6});  // expansion by 6
      if (block == 0) side /= stage[2];
      layers.push_back({side, 6 * in, Act::relu6});   // depthwise
      layers.push_back({side, stage[0], Act::none});  // projection
      in = stage[0];
    }
  }
  layers.push_back({7, 1280, Act::relu6});
  return layers;
}

// One layer's tensors: x, dy, their results, the parameters and the kernels' workspace.
struct BatchNormTensors {
  dshost_models::BatchNormShape s;
  dshost_models::Act act;
  at::Tensor x = bf16({s.rows, s.channels}), dy = bf16({s.rows, s.channels}),
             out = at::empty_like(x), weight = floats(s.channels) + 1, bias = floats(s.channels),
             mean = floats(s.channels), var = floats(s.channels) + 1, dweight = floats(s.channels),
             dbias = floats(s.channels), stats = floats(4 * s.channels),
             scratch = floats(dshost_models::cuda_batch_norm_scratch(s));

  const char* forward() {
    const dshost_models::BatchNormParams p{weight.data_ptr(),
                                           bias.data_ptr(),
                                           mean.data_ptr(),
                                           var.data_ptr(),
                                           nullptr,
                                           true,
                                           true,
                                           0.1f,
                                           1e-5f};
    return dshost_models::cuda_batch_norm(bf16_bits(x), p, act, bf16_bits(out),
                                          stats.data_ptr<float>(), scratch.data_ptr<float>(), s,
                                          dshost_models::stream_of(x));
  }

  const char* backward() {
    const dshost_models::BatchNormGrads g{dweight.data_ptr(), dbias.data_ptr(), true, false};
    return dshost_models::cuda_batch_norm_backward(
        bf16_bits(dy), bf16_bits(x), stats.data_ptr<float>(), act, bf16_bits(out), g,
        scratch.data_ptr<float>(), s, dshost_models::stream_of(x));
  }
};

// mobilenet_v2's batch norms at b32 whose side is state.range(0) (0: all 52), one after
// another, forward or backward, replayed from a CUDA graph as a captured training step runs
// them (a launch: every such layer), on the kernels each layer's layout takes. Bytes: what each
// layer must move at least, x read and y written forward, dy and x read and dx written backward.
void BatchNormMobilenetV2(benchmark::State& state, bool backward) {
  if (!have_gpu(state)) return;
  const c10::cuda::CUDAStreamGuard on_a_stream(c10::cuda::getStreamFromPool());
  std::vector<BatchNormTensors> layers;
  int64_t elements = 0;
  for (const BatchNormLayer& l : mobilenet_v2_batch_norms()) {
    if (state.range(0) != 0 && l.side != state.range(0)) continue;
    layers.push_back({{32 * l.side * l.side, l.channels}, l.act});
    elements += layers.back().x.numel();
  }
  const auto run_all = [&]() -> const char* {
    for (BatchNormTensors& l : layers)
      if (const char* err = backward ? l.backward() : l.forward()) return err;
    return nullptr;
  };
  for (BatchNormTensors& l : layers) l.forward();  // stats for backward
  if (const char* err = run_all()) return state.SkipWithError(err);
  at::cuda::CUDAGraph graph;
  graph.capture_begin();
  run_all();
  graph.capture_end();
  time_launches(state, (backward ? 6 : 4) * elements, [&]() -> const char* {
    graph.replay();
    return nullptr;
  });
}

// All of mobilenet_v2's batch norms, then those of each side.
void mobilenet_v2_sides(benchmark::internal::Benchmark* b) {
  for (const int64_t side : {0, 112, 56, 28, 14, 7}) b->Arg(side);
  b->UseRealTime();
}

// The widths of gpt2-124m, gpt2-350m and gpt-1.3b, timed in real time.
void gpt_widths(benchmark::internal::Benchmark* b) {
  b->Arg(768)->Arg(1024)->Arg(2048)->UseRealTime();
}

}  // namespace

BENCHMARK(LayerNormForward)->Apply(gpt_widths);
BENCHMARK(LayerNormBackward)->Apply(gpt_widths);
BENCHMARK_CAPTURE(BatchNormMobilenetV2, forward, false)->Apply(mobilenet_v2_sides);
BENCHMARK_CAPTURE(BatchNormMobilenetV2, backward, true)->Apply(mobilenet_v2_sides);
BENCHMARK(CrossEntropyForward)->UseRealTime();
BENCHMARK(CrossEntropyBackward)->UseRealTime();
#if DSHOST_CUDA_FP8
// gpt2-124m's at b8: ln outputs and attention's output (8192 x 768), GELU's output
// (8192 x 3072) and the weights (2304 x 768, 3072 x 768, 768 x 3072) in e4m3; the q/k/v
// gradients (8192 x 2304), the MLP's gradient through GELU (8192 x 3072) and the output
// projections' (8192 x 768) in e5m2, with bias sums.
BENCHMARK_CAPTURE(Fp8Cast, plain_e4m3, Fp8Source::plain, Fp8Format::e4m3, false)
    ->Args({kRows, 768})
    ->Args({2304, 768})
    ->Args({3072, 768})
    ->Args({768, 3072})
    ->UseRealTime();
BENCHMARK_CAPTURE(Fp8Cast, gelu_e4m3, Fp8Source::gelu, Fp8Format::e4m3, false)
    ->Args({kRows, 3072})
    ->UseRealTime();
BENCHMARK_CAPTURE(Fp8Cast, plain_e5m2_sums, Fp8Source::plain, Fp8Format::e5m2, true)
    ->Args({kRows, 768})
    ->Args({kRows, 2304})
    ->UseRealTime();
BENCHMARK_CAPTURE(Fp8Cast, stacked_e5m2_sums, Fp8Source::stacked, Fp8Format::e5m2, true)
    ->Args({kRows, 2304})
    ->UseRealTime();
BENCHMARK_CAPTURE(Fp8Cast, gelu_gradient_e5m2_sums, Fp8Source::gelu_gradient, Fp8Format::e5m2, true)
    ->Args({kRows, 3072})
    ->UseRealTime();
BENCHMARK(SumColumnPartials)->Arg(768)->Arg(3072)->UseRealTime();
#endif
#if DSHOST_CUDA_GELU_GEMM
BENCHMARK_CAPTURE(GeluForward, aten, false)->Apply(gpt_widths);
BENCHMARK_CAPTURE(GeluForward, epilogue, true)->Apply(gpt_widths);
BENCHMARK_CAPTURE(GeluBackward, aten, GeluBackwardBy::aten)->Apply(gpt_widths);
BENCHMARK_CAPTURE(GeluBackward, epilogue, GeluBackwardBy::epilogue)->Apply(gpt_widths);
BENCHMARK_CAPTURE(GeluBackward, epilogue_with_bias_gradient,
                  GeluBackwardBy::epilogue_with_bias_gradient)
    ->Apply(gpt_widths);
// gpt's four layers (c_attn, attn_proj, c_fc, mlp_proj) at widths 768 and 2048.
void gpt_layers(benchmark::internal::Benchmark* b) {
  for (int64_t c : {768, 2048})
    b->Args({3 * c, c})->Args({c, c})->Args({4 * c, c})->Args({c, 4 * c});
  b->UseRealTime();
}
// gpt's layers' output widths at 768 and 2048.
BENCHMARK(ColumnSums)
    ->Arg(768)
    ->Arg(2304)
    ->Arg(3072)
    ->Arg(2048)
    ->Arg(6144)
    ->Arg(8192)
    ->UseRealTime();
BENCHMARK_CAPTURE(WeightGradient, aten_then_column_sums, WeightGradientBy::aten_then_column_sums)
    ->Apply(gpt_layers);
BENCHMARK_CAPTURE(WeightGradient, product_with_bias_gradient,
                  WeightGradientBy::product_with_bias_gradient)
    ->Apply(gpt_layers);
BENCHMARK_CAPTURE(WeightGradient, product_alone, WeightGradientBy::product_alone)
    ->Apply(gpt_layers);
#endif
// gpt2-124m's and gpt-1.3b's parameters.
BENCHMARK_CAPTURE(AdamW, one_launch, false)->Args({768, 12})->Args({2048, 24})->UseRealTime();
BENCHMARK_CAPTURE(AdamW, a_launch_a_unit, true)->Args({768, 12})->Args({2048, 24})->UseRealTime();

BENCHMARK_MAIN();
