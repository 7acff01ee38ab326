// The kernels of cuda_batch_norm_clusters.h: one launch a direction, laid out as
// batch_norm_cluster_plan.h says. A thread loads its rows of its 8 channels into registers and
// sums them; the block adds its threads' sums (each warp's by shuffles, then the warps' in
// order); the cluster's blocks, once all have theirs, each add every block's in rank order
// from the others' shared memory (the same bits in each) and derive their channels'
// coefficients, rank 0 writing what the layer keeps; then each thread applies them to the
// rows it holds. Hopper's clusters only: the bodies are empty for older architectures,
// where cuda_batch_norm_plan plans none.
#include "cuda_batch_norm_clusters.h"

#include "cuda_batch_norm_math.cuh"

#include <cooperative_groups.h>

#include <map>
#include <mutex>

namespace dshost_models {
namespace {

namespace cg = cooperative_groups;
using namespace kernels;

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define DSHOST_CLUSTERS 1
#endif

#ifdef DSHOST_CLUSTERS  // what the kernels' bodies use
constexpr int kWarps = kClusterThreads / 32;
constexpr int kMostWidth = kMostClusterLanes * kLanes;  // a block's channels at most

// Where a thread works: channels col..col+7 of rows first_row, first_row + step, ..., `rounds`
// of them (its cluster's slice of channels, its block's turns at passes of rows); and the
// channel whose coefficients it derives where it is among the first lanes x 8 of its block,
// the keeper (the cluster's rank 0) writing what the layer keeps. 32-bit: the plan keeps every
// element's index below 2^31.
struct Place {
  int col, first_row, step, rounds, lane, channel;
  bool active, derives, keeper;
};

// `rounds`: the plan's rows a thread, fewer where the rows end first.
__device__ Place cluster_place(int lanes, int rows, int channels, int rounds, unsigned rank) {
  const int rows_a_pass = kClusterThreads / lanes, t = static_cast<int>(threadIdx.x);
  const int slice = static_cast<int>(blockIdx.x) / kClusterBlocks;
  Place p;
  p.lane = t % lanes;
  p.col = (slice * lanes + p.lane) * kLanes;
  p.first_row = static_cast<int>(rank) * rows_a_pass + t / lanes;
  p.step = kClusterBlocks * rows_a_pass;
  p.rounds = p.first_row < rows ? min(rounds, (rows - p.first_row + p.step - 1) / p.step) : 0;
  p.active = p.col < channels;
  p.channel = slice * lanes * kLanes + t;
  p.derives = t < lanes * kLanes && p.channel < channels;
  p.keeper = rank == 0;
  return p;
}

// A block's two sums a channel, where the cluster's other blocks read them.
struct BlockSums {
  float a[kMostWidth], b[kMostWidth];
};

// The block's sums of its threads' a and b into `out`, channel by channel of its lanes x 8:
// each warp's rows by shuffles, then the warps' in order. Every thread calls it.
__device__ void sum_block(const float (&a)[kLanes], const float (&b)[kLanes], int lanes,
                          BlockSums& out) {
  __shared__ BlockSums warps[kWarps];
  float sa[kLanes], sb[kLanes];
  for (int k = 0; k < kLanes; ++k) {
    sa[k] = a[k];
    sb[k] = b[k];
  }
  for (int offset = lanes; offset < 32; offset *= 2)
    for (int k = 0; k < kLanes; ++k) {
      sa[k] += __shfl_xor_sync(0xffffffffu, sa[k], offset);
      sb[k] += __shfl_xor_sync(0xffffffffu, sb[k], offset);
    }
  const int warp = static_cast<int>(threadIdx.x) / 32, in_warp = static_cast<int>(threadIdx.x) % 32;
  if (in_warp < lanes)
    for (int k = 0; k < kLanes; ++k) {
      warps[warp].a[in_warp * kLanes + k] = sa[k];
      warps[warp].b[in_warp * kLanes + k] = sb[k];
    }
  __syncthreads();
  const int c = static_cast<int>(threadIdx.x);
  if (c >= lanes * kLanes) return;
  float ta = 0.f, tb = 0.f;
  for (int w = 0; w < kWarps; ++w) {
    ta += warps[w].a[c];
    tb += warps[w].b[c];
  }
  out.a[c] = ta;
  out.b[c] = tb;
}

// Hides v's bits from the compiler, so that it keeps the held rows packed (4 registers a
// vector) across the cluster's barrier instead of the 8 floats the sums converted them to.
__device__ inline void keep_packed(Bf16x8& v) {
  uint4& bits = *reinterpret_cast<uint4*>(&v);
  asm volatile("" : "+r"(bits.x), "+r"(bits.y), "+r"(bits.z), "+r"(bits.w));
}

// Channel t's sums over the whole cluster (thread t < lanes x 8, after a cluster barrier):
// every block's in rank order.
__device__ float2 cluster_sums(const cg::cluster_group& cluster, BlockSums& mine) {
  const int c = static_cast<int>(threadIdx.x);
  float a = 0.f, b = 0.f;
#pragma unroll
  for (int rank = 0; rank < kClusterBlocks; ++rank) {
    const BlockSums* theirs = cluster.map_shared_rank(&mine, rank);
    a += theirs->a[c];
    b += theirs->b[c];
  }
  return make_float2(a, b);
}

// What a deriving thread derives its channel's coefficients from besides the sums: loaded
// first, so that these loads wait alongside the rows'. The running statistics for the keeper
// alone.
struct ChannelInputs {
  float first_value, weight, bias, running_mean, running_var;
};

__device__ ChannelInputs channel_inputs(const uint16_t* x, const BatchNormParams& p,
                                        const Place& at) {
  const int c = at.channel;
  ChannelInputs in{to_float(x[c]), param(p.weight, p.params_fp32, c),
                   param(p.bias, p.params_fp32, c), 0.f, 0.f};
  if (at.keeper) {
    in.running_mean = param(p.running_mean, p.stats_fp32, c);
    in.running_var = param(p.running_var, p.stats_fp32, c);
  }
  return in;
}

// The thread's channel's scale and shift from its sums over the rows of x - its first value
// (as the three passes take them); the keeper writes stats [4, channels] (mean, rstd, scale,
// shift), the running statistics and the counter.
__device__ float2 forward_coefficients(float2 sums, const ChannelInputs& in,
                                       const BatchNormParams& p, int rows, int channels,
                                       const Place& at, float* stats) {
  const int c = at.channel;
  const float n = static_cast<float>(rows), centred = sums.x / n;
  const float mean = in.first_value + centred;
  const float variance = fmaxf(sums.y / n - centred * centred, 0.f);
  const float rstd = rsqrtf(variance + p.eps), scale = in.weight * rstd;
  const float shift = in.bias - mean * scale;
  if (at.keeper) {
    stats[c] = mean;
    stats[channels + c] = rstd;
    stats[2 * channels + c] = scale;
    stats[3 * channels + c] = shift;
    const float m = p.momentum, unbiased = variance * n / (n - 1.f);
    set_param(p.running_mean, p.stats_fp32, c, (1.f - m) * in.running_mean + m * mean);
    set_param(p.running_var, p.stats_fp32, c, (1.f - m) * in.running_var + m * unbiased);
    if (c == 0 && p.batches_tracked != nullptr) ++*p.batches_tracked;
  }
  return make_float2(scale, shift);
}

// Calls f(i, row) for the thread's rows, i < kRows (unrolled, so that they stay in registers).
template <int kRows, class F>
__device__ void for_held_rows(const Place& at, F f) {
#pragma unroll
  for (int i = 0; i < kRows; ++i)
    if (i < at.rounds) f(i, at.first_row + i * at.step);
}

// Loads the thread's rows of x into `held`, and adds x - its first row, and the square, into
// sum and squares.
template <int kRows>
__device__ void hold_and_sum(const uint16_t* x, const Place& at, int channels,
                             Bf16x8 (&held)[kRows], float (&sum)[kLanes],
                             float (&squares)[kLanes]) {
  const Bf16x8 shift = load_bf16x8(x + at.col);
  const auto add = [&](const Bf16x8& v) {
    for (int k = 0; k < kLanes; ++k) {
      const float d = to_float(v.v[k]) - to_float(shift.v[k]);
      sum[k] += d;
      squares[k] += d * d;
    }
  };
  for_held_rows<kRows>(at,
                       [&](int i, int row) { held[i] = load_bf16x8(x + row * channels + at.col); });
  for_held_rows<kRows>(at, [&](int i, int) {
    add(held[i]);
    keep_packed(held[i]);
  });
}

// y = act(scale x + shift) for the thread's rows, the block's channels' scale and shift in
// shared memory.
template <Act A, int kRows>
__device__ void apply_forward(const Bf16x8 (&held)[kRows], const Place& at, int channels,
                              const float* scale_of, const float* shift_of, uint16_t* y) {
  const int first = at.lane * kLanes;
  const auto apply = [&](const Bf16x8& v, int row) {
    Bf16x8 out;
    for (int k = 0; k < kLanes; ++k)
      out.v[k] = to_bf16(activate<A>(to_float(v.v[k]) * scale_of[first + k] + shift_of[first + k]));
    *reinterpret_cast<Bf16x8*>(y + row * channels + at.col) = out;
  };
  for_held_rows<kRows>(at, [&](int i, int row) { apply(held[i], row); });
}

// The forward's statistics of a block's channels, in shared memory rather than in each
// thread's registers, which hold its rows.
struct SliceStats {
  float mean[kMostWidth], rstd[kMostWidth], scale[kMostWidth], shift[kMostWidth];
};

// g (dy through the activation's derivative) and xhat of one vector, channels first..first+7
// of the slice.
template <Act A>
__device__ Recomputed recompute_in_slice(const SliceStats& s, int first, const Bf16x8& dy,
                                         const Bf16x8& x) {
  Recomputed r;
  for (int k = 0; k < kLanes; ++k) {
    const int j = first + k;
    const float v = to_float(x.v[k]);
    r.g[k] = to_float(dy.v[k]) * derivative<A>(v * s.scale[j] + s.shift[j]);
    r.xhat[k] = (v - s.mean[j]) * s.rstd[j];
  }
  return r;
}

// The deriving thread's channel's forward statistics into the slice's.
__device__ void load_slice_stats(const float* stats, int channels, int c, SliceStats& slice) {
  const int t = static_cast<int>(threadIdx.x);
  slice.mean[t] = stats[c];
  slice.rstd[t] = stats[channels + c];
  slice.scale[t] = stats[2 * channels + c];
  slice.shift[t] = stats[3 * channels + c];
}

// Loads the thread's rows of dy and x.
template <int kRows>
__device__ void hold(const uint16_t* dy, const uint16_t* x, const Place& at, int channels,
                     Bf16x8 (&held_dy)[kRows], Bf16x8 (&held_x)[kRows]) {
  for_held_rows<kRows>(at, [&](int i, int row) {
    held_dy[i] = load_bf16x8(dy + row * channels + at.col);
    held_x[i] = load_bf16x8(x + row * channels + at.col);
  });
}

// Adds g and g xhat of the thread's rows into g_sum and g_xhat_sum.
template <Act A, int kRows>
__device__ void sum_gradients(const SliceStats& slice, const Place& at, Bf16x8 (&held_dy)[kRows],
                              Bf16x8 (&held_x)[kRows], float (&g_sum)[kLanes],
                              float (&g_xhat_sum)[kLanes]) {
  const auto add = [&](const Bf16x8& dy_v, const Bf16x8& x_v) {
    const Recomputed r = recompute_in_slice<A>(slice, at.lane * kLanes, dy_v, x_v);
    for (int k = 0; k < kLanes; ++k) {
      g_sum[k] += r.g[k];
      g_xhat_sum[k] += r.g[k] * r.xhat[k];
    }
  };
  for_held_rows<kRows>(at, [&](int i, int) {
    add(held_dy[i], held_x[i]);
    keep_packed(held_dy[i]);
    keep_packed(held_x[i]);
  });
}

// dx of the thread's rows from the block's channels' means of g and of g xhat.
template <Act A, int kRows>
__device__ void apply_gradients(const SliceStats& slice, const Place& at, int channels,
                                const Bf16x8 (&held_dy)[kRows], const Bf16x8 (&held_x)[kRows],
                                const float* g_mean_of, const float* g_xhat_mean_of, uint16_t* dx) {
  const int first = at.lane * kLanes;
  const auto apply = [&](const Bf16x8& dy_v, const Bf16x8& x_v, int row) {
    const Recomputed r = recompute_in_slice<A>(slice, first, dy_v, x_v);
    Bf16x8 out;
    for (int k = 0; k < kLanes; ++k) {
      const int j = first + k;
      out.v[k] = to_bf16(slice.scale[j] * (r.g[k] - g_mean_of[j] - r.xhat[k] * g_xhat_mean_of[j]));
    }
    *reinterpret_cast<Bf16x8*>(dx + row * channels + at.col) = out;
  };
  for_held_rows<kRows>(at, [&](int i, int row) { apply(held_dy[i], held_x[i], row); });
}
#endif

// Sums of x - shift and of its square, shift being the channel's value in row 0 (as the
// three passes take them), x held; y = act(scale x + shift) from the cluster's sums.
template <Act A, int kRows>
__global__ void __launch_bounds__(kClusterThreads, 2)
    cluster_forward_kernel(const uint16_t* x, BatchNormParams p, int lanes, int rounds, int rows,
                           int channels, uint16_t* y, float* stats) {
#ifdef DSHOST_CLUSTERS
  const cg::cluster_group cluster = cg::this_cluster();
  __shared__ BlockSums sums;
  __shared__ float scale_of[kMostWidth], shift_of[kMostWidth];
  const Place at = cluster_place(lanes, rows, channels, rounds, cluster.block_rank());
  const ChannelInputs own = at.derives ? channel_inputs(x, p, at) : ChannelInputs{};
  Bf16x8 held[kRows];
  float sum[kLanes] = {}, squares[kLanes] = {};
  if (at.active) hold_and_sum(x, at, channels, held, sum, squares);
  sum_block(sum, squares, lanes, sums);
  cluster.sync();
  if (at.derives) {
    const float2 coefficients =
        forward_coefficients(cluster_sums(cluster, sums), own, p, rows, channels, at, stats);
    scale_of[threadIdx.x] = coefficients.x;
    shift_of[threadIdx.x] = coefficients.y;
  }
  __syncthreads();
  cluster.barrier_arrive();  // done reading the others' sums
  if (at.active) apply_forward<A>(held, at, channels, scale_of, shift_of, y);
  cluster.barrier_wait();  // the others are done reading this block's sums
#endif
}

// Sums of g (the bias's gradient) and of g xhat (the weight's), dy and x held; then
// dx = weight rstd (g - mean(g) - xhat mean(g xhat)).
template <Act A, int kRows>
__global__ void __launch_bounds__(kClusterThreads, 2)
    cluster_backward_kernel(const uint16_t* dy, const uint16_t* x, const float* stats, int lanes,
                            int rounds, int rows, int channels, uint16_t* dx, BatchNormGrads g) {
#ifdef DSHOST_CLUSTERS
  const cg::cluster_group cluster = cg::this_cluster();
  __shared__ BlockSums sums;
  __shared__ SliceStats slice;
  __shared__ float g_mean_of[kMostWidth], g_xhat_mean_of[kMostWidth];
  const Place at = cluster_place(lanes, rows, channels, rounds, cluster.block_rank());
  float held_dbias = 0.f, held_dweight = 0.f;  // what the keeper adds to
  if (at.derives) {
    load_slice_stats(stats, channels, at.channel, slice);
    if (at.keeper && g.accumulate) {
      held_dbias = param(g.dbias, g.fp32, at.channel);
      held_dweight = param(g.dweight, g.fp32, at.channel);
    }
  }
  Bf16x8 held_dy[kRows], held_x[kRows];
  if (at.active) hold(dy, x, at, channels, held_dy, held_x);
  __syncthreads();  // the slice's statistics
  float g_sum[kLanes] = {}, g_xhat_sum[kLanes] = {};
  if (at.active) sum_gradients<A>(slice, at, held_dy, held_x, g_sum, g_xhat_sum);
  sum_block(g_sum, g_xhat_sum, lanes, sums);
  cluster.sync();
  if (at.derives) {
    const float2 total = cluster_sums(cluster, sums);
    g_mean_of[threadIdx.x] = total.x / static_cast<float>(rows);
    g_xhat_mean_of[threadIdx.x] = total.y / static_cast<float>(rows);
    if (at.keeper) {
      set_param(g.dbias, g.fp32, at.channel, held_dbias + total.x);
      set_param(g.dweight, g.fp32, at.channel, held_dweight + total.y);
    }
  }
  __syncthreads();
  cluster.barrier_arrive();  // done reading the others' sums
  if (at.active)
    apply_gradients<A>(slice, at, channels, held_dy, held_x, g_mean_of, g_xhat_mean_of, dx);
  cluster.barrier_wait();  // the others are done reading this block's sums
#endif
}

// Calls f(std::integral_constant<int, n>()) for the rows a thread holds: 4 where it takes no
// more, else kMostClusterRows.
template <class F>
void with_rows(int rows_per_thread, F f) {
  if (rows_per_thread <= 4) return f(std::integral_constant<int, 4>());
  f(std::integral_constant<int, kMostClusterRows>());
}

// Launches `kernel` over the plan's clusters of kClusterBlocks blocks.
template <class... Params, class... Args>
const char* launch_clusters(void (*kernel)(Params...), const ClusterPlan& plan, void* stream,
                            Args... args) {
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3(static_cast<unsigned>(plan.clusters * kClusterBlocks));
  config.blockDim = dim3(kClusterThreads);
  config.stream = static_cast<cudaStream_t>(stream);
  cudaLaunchAttribute cluster;
  cluster.id = cudaLaunchAttributeClusterDimension;
  cluster.val.clusterDim.x = kClusterBlocks;
  cluster.val.clusterDim.y = 1;
  cluster.val.clusterDim.z = 1;
  config.attrs = &cluster;
  config.numAttrs = 1;
  const cudaError_t err = cudaLaunchKernelEx(&config, kernel, args...);
  if (err == cudaSuccess) return nullptr;
  cudaGetLastError();  // cleared: the caller reports it
  return cudaGetErrorString(err);
}

// Whether the current device launches thread block clusters, and its multiprocessors.
struct DeviceFacts {
  bool clusters = false;
  int multiprocessors = 0;
};

DeviceFacts current_device_facts() {
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess) return {};
  static std::mutex mutex;
  static std::map<int, DeviceFacts> known;
  const std::lock_guard<std::mutex> lock(mutex);
  auto it = known.find(device);
  if (it == known.end()) {
    DeviceFacts facts;
    int clusters = 0;
    facts.clusters =
        cudaDeviceGetAttribute(&clusters, cudaDevAttrClusterLaunch, device) == cudaSuccess &&
        clusters != 0;
    if (cudaDeviceGetAttribute(&facts.multiprocessors, cudaDevAttrMultiProcessorCount, device) !=
        cudaSuccess)
      facts = {};
    it = known.emplace(device, facts).first;
  }
  return it->second;
}

}  // namespace

// None where the device has no thread block clusters. Two blocks a multiprocessor at once:
// what the kernels' launch bounds ask for (128 registers a thread).
ClusterPlan cuda_batch_norm_plan(const BatchNormShape& s) {
  const DeviceFacts facts = current_device_facts();
  if (!facts.clusters) return {};
  return cluster_plan(s.rows, s.channels, 2 * static_cast<int64_t>(facts.multiprocessors));
}

const char* cluster_batch_norm(const uint16_t* x, const BatchNormParams& p, Act act, uint16_t* y,
                               float* stats, const BatchNormShape& s, const ClusterPlan& plan,
                               void* stream) {
  const char* err = nullptr;
  with_activation(act, [&](auto a) {
    with_rows(plan.rows_per_thread, [&](auto r) {
      err = launch_clusters(cluster_forward_kernel<decltype(a)::value, decltype(r)::value>, plan,
                            stream, x, p, plan.lanes, plan.rows_per_thread,
                            static_cast<int>(s.rows), static_cast<int>(s.channels), y, stats);
    });
  });
  return err;
}

const char* cluster_batch_norm_backward(const uint16_t* dy, const uint16_t* x, const float* stats,
                                        Act act, uint16_t* dx, const BatchNormGrads& g,
                                        const BatchNormShape& s, const ClusterPlan& plan,
                                        void* stream) {
  const char* err = nullptr;
  with_activation(act, [&](auto a) {
    with_rows(plan.rows_per_thread, [&](auto r) {
      err = launch_clusters(cluster_backward_kernel<decltype(a)::value, decltype(r)::value>, plan,
                            stream, dy, x, stats, plan.lanes, plan.rows_per_thread,
                            static_cast<int>(s.rows), static_cast<int>(s.channels), dx, g);
    });
  });
  return err;
}

}  // namespace dshost_models
