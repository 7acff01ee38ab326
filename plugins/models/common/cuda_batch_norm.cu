// The kernels of cuda_batch_norm.h where a direction takes no clusters (else
// cuda_batch_norm_clusters.cu's). Each direction is three launches: a pass over the rows
// summing two values per channel into per-block partials, a small kernel adding the
// partials in a fixed order and deriving each channel's coefficients, and an elementwise
// pass applying them. Every pass lays its blocks the same way: a block spans up to 32
// vectors of 8 channels and as many rows as its 256 threads then allow, and each thread
// keeps to its 8 channels (their coefficients in registers), taking every so many rows.
#include "cuda_batch_norm.h"

#include "cuda_batch_norm_clusters.h"
#include "cuda_batch_norm_math.cuh"

namespace dshost_models {
namespace {

using namespace kernels;

constexpr int kThreads = kColumnThreads;
// Rows a thread takes: at least this many in the summing passes (up to kMostRowGroups
// groups of rows), and this many in the elementwise ones.
constexpr int64_t kSummedRowsPerThread = 8, kMostRowGroups = 512, kAppliedRowsPerThread = 4;

// Where a thread works: channels col..col+7 of rows first_row, first_row + step, ...
struct Place {
  int64_t col, first_row, step;
  int lane, row_in_block;
  bool active;
};

__device__ Place place(ColumnTiling t, int64_t channels) {
  Place p;
  p.lane = static_cast<int>(threadIdx.x) % t.tile;
  p.row_in_block = static_cast<int>(threadIdx.x) / t.tile;
  p.col = (static_cast<int64_t>(blockIdx.x) * t.tile + p.lane) * kLanes;
  p.first_row = static_cast<int64_t>(blockIdx.y) * t.rows_per_pass + p.row_in_block;
  p.step = static_cast<int64_t>(gridDim.y) * t.rows_per_pass;
  p.active = p.row_in_block < t.rows_per_pass && p.col < channels;
  return p;
}

// The block's sums a and b of its threads' rows into partials [2, gridDim.y, channels].
// Every thread of the block calls it.
__device__ void store_block_sums(ColumnTiling t, int64_t channels, const float* a, const float* b,
                                 float* partials) {
  __shared__ float part[2][kThreads * kLanes];
  for (int k = 0; k < kLanes; ++k) {
    part[0][threadIdx.x * kLanes + k] = a[k];
    part[1][threadIdx.x * kLanes + k] = b[k];
  }
  const int width = t.tile * kLanes;
  sum_block_rows(&part[0][0], 2, t.rows_per_pass, width);
  for (int i = static_cast<int>(threadIdx.x); i < 2 * width; i += kThreads) {
    const int64_t col = static_cast<int64_t>(blockIdx.x) * width + i % width;
    if (col < channels)
      partials[(i / width * gridDim.y + blockIdx.y) * channels + col] = part[i / width][i % width];
  }
}

// A channel's two sums over `groups` partial rows, added in order by 32 threads a channel
// and then in the order of those threads: blocks of 32 x 32 threads, 32 channels a block.
// The sums are the channel's in the threads with threadIdx.y == 0.
__device__ void add_partials(const float* partials, int64_t groups, int64_t channels, float* a,
                             float* b) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * 32 + threadIdx.x;
  float sa = 0.f, sb = 0.f;
  if (c < channels)
    for (int64_t g = threadIdx.y; g < groups; g += 32) {
      sa += partials[g * channels + c];
      sb += partials[(groups + g) * channels + c];
    }
  __shared__ float part[2][32][33];
  part[0][threadIdx.y][threadIdx.x] = sa;
  part[1][threadIdx.y][threadIdx.x] = sb;
  __syncthreads();
  *a = *b = 0.f;
  for (int r = 0; r < 32; ++r) {
    *a += part[0][r][threadIdx.x];
    *b += part[1][r][threadIdx.x];
  }
}

// Sums of x - shift and of its square, shift being the channel's value in row 0 (so that
// the variance keeps its precision when the mean is far from zero).
__global__ void batch_norm_statistics_kernel(const uint16_t* x, ColumnTiling t, int64_t rows,
                                             int64_t channels, float* partials) {
  const Place p = place(t, channels);
  float sum[kLanes] = {}, squares[kLanes] = {};
  if (p.active) {
    const Bf16x8 shift = load_bf16x8(x + p.col);
#pragma unroll 4
    for (int64_t row = p.first_row; row < rows; row += p.step) {
      const Bf16x8 in = load_bf16x8(x + row * channels + p.col);
      for (int k = 0; k < kLanes; ++k) {
        const float d = to_float(in.v[k]) - to_float(shift.v[k]);
        sum[k] += d;
        squares[k] += d * d;
      }
    }
  }
  store_block_sums(t, channels, sum, squares, partials);
}

// stats [4, channels]: mean, rstd, scale and shift; the running statistics updated.
__global__ void batch_norm_forward_coefficients_kernel(const uint16_t* x, const float* partials,
                                                       int64_t groups, BatchNormParams p,
                                                       int64_t rows, int64_t channels,
                                                       float* stats) {
  float sum, squares;
  add_partials(partials, groups, channels, &sum, &squares);
  const int64_t c = static_cast<int64_t>(blockIdx.x) * 32 + threadIdx.x;
  if (threadIdx.y != 0 || c >= channels) return;
  const float n = static_cast<float>(rows), centred = sum / n;
  const float mean = to_float(x[c]) + centred;
  const float variance = fmaxf(squares / n - centred * centred, 0.f);
  const float rstd = rsqrtf(variance + p.eps), scale = param(p.weight, p.params_fp32, c) * rstd;
  stats[c] = mean;
  stats[channels + c] = rstd;
  stats[2 * channels + c] = scale;
  stats[3 * channels + c] = param(p.bias, p.params_fp32, c) - mean * scale;
  const float m = p.momentum, unbiased = variance * n / (n - 1.f);
  set_param(p.running_mean, p.stats_fp32, c,
            (1.f - m) * param(p.running_mean, p.stats_fp32, c) + m * mean);
  set_param(p.running_var, p.stats_fp32, c,
            (1.f - m) * param(p.running_var, p.stats_fp32, c) + m * unbiased);
  if (c == 0 && p.batches_tracked != nullptr) ++*p.batches_tracked;
}

template <Act A>
__global__ void batch_norm_forward_kernel(const uint16_t* x, const float* stats, ColumnTiling t,
                                          int64_t rows, int64_t channels, uint16_t* y) {
  const Place p = place(t, channels);
  if (!p.active) return;
  const Floats8 scale = load8(stats + 2 * channels + p.col),
                shift = load8(stats + 3 * channels + p.col);
#pragma unroll 4
  for (int64_t row = p.first_row; row < rows; row += p.step) {
    const Bf16x8 in = load_bf16x8(x + row * channels + p.col);
    Bf16x8 out;
    for (int k = 0; k < kLanes; ++k)
      out.v[k] = to_bf16(activate<A>(to_float(in.v[k]) * scale.v[k] + shift.v[k]));
    *reinterpret_cast<Bf16x8*>(y + row * channels + p.col) = out;
  }
}

// Sums of g (the bias's gradient) and of g xhat (the weight's).
template <Act A>
__global__ void batch_norm_backward_sums_kernel(const uint16_t* dy, const uint16_t* x,
                                                const float* stats, ColumnTiling t, int64_t rows,
                                                int64_t channels, float* partials) {
  const Place p = place(t, channels);
  float g_sum[kLanes] = {}, g_xhat_sum[kLanes] = {};
  if (p.active) {
    const ChannelStats s = channel_stats(stats, channels, p.col);
#pragma unroll 4
    for (int64_t row = p.first_row; row < rows; row += p.step) {
      const int64_t at = row * channels + p.col;
      const Recomputed r = recompute<A>(s, load_bf16x8(dy + at), load_bf16x8(x + at));
      for (int k = 0; k < kLanes; ++k) {
        g_sum[k] += r.g[k];
        g_xhat_sum[k] += r.g[k] * r.xhat[k];
      }
    }
  }
  store_block_sums(t, channels, g_sum, g_xhat_sum, partials);
}

// The bias's and weight's gradients, and into coefficients [2, channels] the means of g and
// of g xhat.
__global__ void batch_norm_backward_coefficients_kernel(const float* partials, int64_t groups,
                                                        BatchNormGrads g, int64_t rows,
                                                        int64_t channels, float* coefficients) {
  float g_sum, g_xhat_sum;
  add_partials(partials, groups, channels, &g_sum, &g_xhat_sum);
  const int64_t c = static_cast<int64_t>(blockIdx.x) * 32 + threadIdx.x;
  if (threadIdx.y != 0 || c >= channels) return;
  const float held_bias = g.accumulate ? param(g.dbias, g.fp32, c) : 0.f,
              held_weight = g.accumulate ? param(g.dweight, g.fp32, c) : 0.f;
  set_param(g.dbias, g.fp32, c, held_bias + g_sum);
  set_param(g.dweight, g.fp32, c, held_weight + g_xhat_sum);
  coefficients[c] = g_sum / static_cast<float>(rows);
  coefficients[channels + c] = g_xhat_sum / static_cast<float>(rows);
}

// dx = weight rstd (g - mean(g) - xhat mean(g xhat)).
template <Act A>
__global__ void batch_norm_backward_kernel(const uint16_t* dy, const uint16_t* x,
                                           const float* stats, const float* coefficients,
                                           ColumnTiling t, int64_t rows, int64_t channels,
                                           uint16_t* dx) {
  const Place p = place(t, channels);
  if (!p.active) return;
  const ChannelStats s = channel_stats(stats, channels, p.col);
  const Floats8 g_mean = load8(coefficients + p.col),
                g_xhat_mean = load8(coefficients + channels + p.col);
#pragma unroll 4
  for (int64_t row = p.first_row; row < rows; row += p.step) {
    const int64_t at = row * channels + p.col;
    const Recomputed r = recompute<A>(s, load_bf16x8(dy + at), load_bf16x8(x + at));
    Bf16x8 out;
    for (int k = 0; k < kLanes; ++k)
      out.v[k] = to_bf16(s.scale.v[k] * (r.g[k] - g_mean.v[k] - r.xhat[k] * g_xhat_mean.v[k]));
    *reinterpret_cast<Bf16x8*>(dx + at) = out;
  }
}

// Grids: the channels' blocks across, and groups of rows enough for rows_per_thread each.
dim3 grid(const BatchNormShape& s, int64_t rows_per_thread, int64_t most_groups) {
  const ColumnTiling t = column_tiling(s.channels);
  const int64_t tiles = (s.channels / kLanes + t.tile - 1) / t.tile,
                rows_per_group = t.rows_per_pass * rows_per_thread,
                groups = (s.rows + rows_per_group - 1) / rows_per_group;
  return dim3(static_cast<unsigned>(tiles),
              static_cast<unsigned>(groups < most_groups ? groups : most_groups));
}

dim3 summing_grid(const BatchNormShape& s) { return grid(s, kSummedRowsPerThread, kMostRowGroups); }
dim3 elementwise_grid(const BatchNormShape& s) { return grid(s, kAppliedRowsPerThread, 65535); }
dim3 coefficients_grid(const BatchNormShape& s) {
  return dim3(static_cast<unsigned>((s.channels + 31) / 32));
}

template <Act A>
void forward_passes(const uint16_t* x, const BatchNormParams& p, uint16_t* y, float* stats,
                    float* scratch, const BatchNormShape& s, cudaStream_t stream) {
  const ColumnTiling t = column_tiling(s.channels);
  batch_norm_statistics_kernel<<<summing_grid(s), kThreads, 0, stream>>>(x, t, s.rows, s.channels,
                                                                         scratch);
  batch_norm_forward_coefficients_kernel<<<coefficients_grid(s), dim3(32, 32), 0, stream>>>(
      x, scratch, summing_grid(s).y, p, s.rows, s.channels, stats);
  batch_norm_forward_kernel<A>
      <<<elementwise_grid(s), kThreads, 0, stream>>>(x, stats, t, s.rows, s.channels, y);
}

template <Act A>
void backward_passes(const uint16_t* dy, const uint16_t* x, const float* stats, uint16_t* dx,
                     const BatchNormGrads& g, float* scratch, const BatchNormShape& s,
                     cudaStream_t stream) {
  const ColumnTiling t = column_tiling(s.channels);
  const int64_t groups = summing_grid(s).y;
  float* coefficients = scratch + 2 * groups * s.channels;
  batch_norm_backward_sums_kernel<A>
      <<<summing_grid(s), kThreads, 0, stream>>>(dy, x, stats, t, s.rows, s.channels, scratch);
  batch_norm_backward_coefficients_kernel<<<coefficients_grid(s), dim3(32, 32), 0, stream>>>(
      scratch, groups, g, s.rows, s.channels, coefficients);
  batch_norm_backward_kernel<A><<<elementwise_grid(s), kThreads, 0, stream>>>(
      dy, x, stats, coefficients, t, s.rows, s.channels, dx);
}

}  // namespace

bool cuda_batch_norm_takes(const BatchNormShape& s) {
  return s.channels > 0 && s.channels % kLanes == 0 && s.rows >= 2;
}

int64_t cuda_batch_norm_scratch(const BatchNormShape& s) {
  if (cuda_batch_norm_plan(s).lanes > 0) return 0;
  return 2 * static_cast<int64_t>(summing_grid(s).y) * s.channels + 2 * s.channels;
}

const char* cuda_batch_norm(const uint16_t* x, const BatchNormParams& p, Act act, uint16_t* y,
                            float* stats, float* scratch, const BatchNormShape& s, void* stream) {
  if (const ClusterPlan plan = cuda_batch_norm_plan(s); plan.lanes > 0)
    return cluster_batch_norm(x, p, act, y, stats, s, plan, stream);
  with_activation(act, [&](auto a) {
    forward_passes<decltype(a)::value>(x, p, y, stats, scratch, s,
                                       static_cast<cudaStream_t>(stream));
  });
  return launch_error();
}

const char* cuda_batch_norm_backward(const uint16_t* dy, const uint16_t* x, const float* stats,
                                     Act act, uint16_t* dx, const BatchNormGrads& g, float* scratch,
                                     const BatchNormShape& s, void* stream) {
  if (const ClusterPlan plan = cuda_batch_norm_plan(s); plan.lanes > 0)
    return cluster_batch_norm_backward(dy, x, stats, act, dx, g, s, plan, stream);
  with_activation(act, [&](auto a) {
    backward_passes<decltype(a)::value>(dy, x, stats, dx, g, scratch, s,
                                        static_cast<cudaStream_t>(stream));
  });
  return launch_error();
}

}  // namespace dshost_models
