// The kernels of cuda_layer_norm.h. A block of threads takes a row at a time, each thread
// 8 consecutive elements (one 16-byte load of bf16), so the row's statistics are block
// sums and every element stays in registers between them. Backward's blocks each take
// every G-th row (G fixed by the row count) and keep their own sums of the weight's and
// bias's gradients; a second kernel adds those G partial rows up in a fixed order, so the
// gradients are the same bits every run.
#include "cuda_layer_norm.h"

#include "cuda_bf16.cuh"

namespace dshost_models {
namespace {

using namespace kernels;

constexpr int64_t kWidest = 8192;  // 1024 threads of 8
// Backward's grid: a block for every kFewestRowsPerBlock rows, up to kMostBlocks (16 rows a block
// at gpt's 8,192): each block's start (its weights, its first row's wait) and end (its partial
// rows, which sum_partials_kernel reads again) are paid over more rows.
constexpr int64_t kMostBlocks = 512, kFewestRowsPerBlock = 8;

// Each of v's N values summed over the block, the same total in every thread.
template <int N>
__device__ void block_sum(float (&v)[N]) {
  __shared__ float warp_sums[32][N];
  for (int offset = 16; offset > 0; offset /= 2)
    for (int k = 0; k < N; ++k) v[k] += __shfl_xor_sync(0xffffffff, v[k], offset);
  __syncthreads();  // the previous row's readers are done with warp_sums
  if (threadIdx.x % 32 == 0)
    for (int k = 0; k < N; ++k) warp_sums[threadIdx.x / 32][k] = v[k];
  __syncthreads();
  for (int k = 0; k < N; ++k) {
    v[k] = 0.f;
    for (int w = 0; w < static_cast<int>(blockDim.x / 32); ++w) v[k] += warp_sums[w][k];
  }
}

__global__ void forward_kernel(const uint16_t* x, const uint16_t* residual, const uint16_t* weight,
                               const uint16_t* bias, float eps, int64_t width, uint16_t* sum,
                               uint16_t* y, float* mean_out, float* rstd_out) {
  const int64_t row = blockIdx.x, col = static_cast<int64_t>(threadIdx.x) * kLanes;
  const bool active = col < width;
  const int64_t at = row * width + col;
  float v[kLanes] = {};
  if (active) {
    const Bf16x8 in = *reinterpret_cast<const Bf16x8*>(x + at);
    if (residual != nullptr) {
      const Bf16x8 r = *reinterpret_cast<const Bf16x8*>(residual + at);
      Bf16x8 s;
      for (int k = 0; k < kLanes; ++k) {
        s.v[k] = to_bf16(to_float(in.v[k]) + to_float(r.v[k]));
        v[k] = to_float(s.v[k]);
      }
      *reinterpret_cast<Bf16x8*>(sum + at) = s;
    } else {
      for (int k = 0; k < kLanes; ++k) v[k] = to_float(in.v[k]);
    }
  }
  float total[1] = {0.f};
  for (int k = 0; k < kLanes; ++k) total[0] += v[k];
  block_sum(total);
  const float mean = total[0] / static_cast<float>(width);
  float squares[1] = {0.f};
  if (active)
    for (int k = 0; k < kLanes; ++k) squares[0] += (v[k] - mean) * (v[k] - mean);
  block_sum(squares);
  const float rstd = rsqrtf(squares[0] / static_cast<float>(width) + eps);
  if (active) {
    Bf16x8 out;
    for (int k = 0; k < kLanes; ++k)
      out.v[k] =
          to_bf16((v[k] - mean) * rstd * to_float(weight[col + k]) + to_float(bias[col + k]));
    *reinterpret_cast<Bf16x8*>(y + at) = out;
  }
  if (threadIdx.x == 0) {
    mean_out[row] = mean;
    rstd_out[row] = rstd;
  }
}

// What a backward thread loads of a row ahead of it: dy, the sum, the row's mean and rstd.
struct RowLoads {
  Bf16x8 dy{}, sum{};
  float mean = 0.f, rstd = 0.f;
};

__device__ RowLoads load_row(const uint16_t* dy, const uint16_t* sum, const float* mean,
                             const float* rstd, int64_t row, int64_t width, int64_t col,
                             bool active) {
  RowLoads r;
  r.mean = mean[row];
  r.rstd = rstd[row];
  if (!active) return r;
  const int64_t at = row * width + col;
  r.dy = *reinterpret_cast<const Bf16x8*>(dy + at);
  r.sum = *reinterpret_cast<const Bf16x8*>(sum + at);
  return r;
}

// Bytes of shared memory a backward block of up to kMaxThreads keeps its sums and weights in.
template <int kMaxThreads>
constexpr size_t backward_shared_bytes() {
  return 3 * kLanes * kMaxThreads * sizeof(float);
}

// dsum_total = rstd (dy w - mean(dy w) - xhat mean(dy w xhat)) + dsum per row, with
// xhat = (sum - mean) rstd; partials [2, gridDim.x, width]: this block's sums of dy xhat
// (the weight's gradient) and of dy (the bias's). A block keeps two rows' loads in flight
// (the next row's dy and sum are issued before this row's block sum, as this row's dsum is),
// and its threads' running sums and weights in shared memory at offsets known when compiled
// (strided by kMaxThreads: no two threads share a bank), so that four blocks of 256 threads
// fit on a multiprocessor (64 registers) with dy w and xhat kept between the row's two
// passes. kMaxThreads bounds the registers a thread may take, so that a block of that many
// threads can launch.
template <int kMaxThreads>
__global__ void __launch_bounds__(kMaxThreads, kMaxThreads == 256 ? 4 : 1)
    backward_kernel(const uint16_t* dy, const uint16_t* dsum, const uint16_t* sum,
                    const float* mean, const float* rstd, const uint16_t* weight, int64_t rows,
                    int64_t width, uint16_t* dsum_total, float* partials) {
  // Lane k's sum of dy xhat at [k], of dy at [kLanes + k], its weight at [2 kLanes + k]
  extern __shared__ float lanes[];
  const int64_t col = static_cast<int64_t>(threadIdx.x) * kLanes;
  const bool active = col < width;
  float* own = lanes + threadIdx.x;
  float* w = own + 2 * kLanes * kMaxThreads;
  for (int k = 0; k < 2 * kLanes; ++k) own[k * kMaxThreads] = 0.f;
  for (int k = 0; k < kLanes; ++k) w[k * kMaxThreads] = active ? to_float(weight[col + k]) : 0.f;
  RowLoads now = load_row(dy, sum, mean, rstd, blockIdx.x, width, col, active);
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const int64_t next = row + gridDim.x;
    const RowLoads ahead =
        next < rows ? load_row(dy, sum, mean, rstd, next, width, col, active) : RowLoads{};
    Bf16x8 direct{};
    if (active && dsum != nullptr)
      direct = *reinterpret_cast<const Bf16x8*>(dsum + row * width + col);
    const float rs = now.rstd;
    float sums[2] = {0.f, 0.f}, gw[kLanes], xhat[kLanes];
    for (int k = 0; k < kLanes; ++k) {
      const float g = to_float(now.dy.v[k]);
      xhat[k] = (to_float(now.sum.v[k]) - now.mean) * rs;
      gw[k] = g * w[k * kMaxThreads];
      sums[0] += gw[k] * xhat[k];
      sums[1] += gw[k];
      own[k * kMaxThreads] += g * xhat[k];
      own[(kLanes + k) * kMaxThreads] += g;
    }
    block_sum(sums);
    if (active) {
      const float c1 = sums[0] / static_cast<float>(width),
                  c2 = sums[1] / static_cast<float>(width);
      Bf16x8 out;
      for (int k = 0; k < kLanes; ++k)
        out.v[k] = to_bf16(rs * (gw[k] - c2 - xhat[k] * c1) + to_float(direct.v[k]));
      *reinterpret_cast<Bf16x8*>(dsum_total + row * width + col) = out;
    }
    now = ahead;
  }
  if (!active) return;
  float* block_partials = partials + blockIdx.x * width + col;
  for (int k = 0; k < kLanes; ++k) {
    block_partials[k] = own[k * kMaxThreads];
    block_partials[gridDim.x * width + k] = own[(kLanes + k) * kMaxThreads];
  }
}

// dweight (blockIdx.y 0) and dbias (1): partials' columns summed over `blocks` rows, 32
// columns a block, each column by kPartialSlices threads that take every kPartialSlices-th
// row, then in their order; onto what they hold where `accumulate`. Up to 512 rows of
// partials and few columns (64 blocks at width 2048, 24 at 768): the more threads a column,
// the more of them are in flight.
constexpr int kPartialSlices = 32;
__global__ void sum_partials_kernel(const float* partials, int64_t blocks, int64_t width,
                                    uint16_t* dweight, uint16_t* dbias, bool accumulate) {
  const int64_t col = blockIdx.x * 32 + threadIdx.x;
  const float total =
      column_sum<kPartialSlices>(partials + blockIdx.y * blocks * width, blocks, width, col);
  if (threadIdx.y != 0 || col >= width) return;
  store_bf16((blockIdx.y == 0 ? dweight : dbias) + col, total, accumulate);
}

int threads_for(int64_t width) { return static_cast<int>((width / kLanes + 31) / 32 * 32); }

int64_t backward_blocks(int64_t rows) {
  const int64_t blocks = (rows + kFewestRowsPerBlock - 1) / kFewestRowsPerBlock;
  return blocks < 1 ? 1 : blocks < kMostBlocks ? blocks : kMostBlocks;
}

}  // namespace

bool cuda_layer_norm_takes(int64_t width) {
  return width > 0 && width % kLanes == 0 && width <= kWidest;
}

const char* cuda_layer_norm(const uint16_t* x, const uint16_t* residual, const uint16_t* weight,
                            const uint16_t* bias, float eps, uint16_t* sum, uint16_t* y,
                            float* mean, float* rstd, const LayerNormShape& s, void* stream) {
  if (s.rows > 2147483647) return "over 2^31 rows for one layer norm";
  forward_kernel<<<static_cast<unsigned>(s.rows), threads_for(s.width), 0,
                   static_cast<cudaStream_t>(stream)>>>(x, residual, weight, bias, eps, s.width,
                                                        sum, y, mean, rstd);
  return launch_error();
}

int64_t cuda_layer_norm_scratch(const LayerNormShape& s) {
  return 2 * backward_blocks(s.rows) * s.width;
}

const char* cuda_layer_norm_backward(const uint16_t* dy, const uint16_t* dsum, const uint16_t* sum,
                                     const float* mean, const float* rstd, const uint16_t* weight,
                                     uint16_t* dsum_total, uint16_t* dweight, uint16_t* dbias,
                                     bool accumulate, float* scratch, const LayerNormShape& s,
                                     void* stream) {
  auto st = static_cast<cudaStream_t>(stream);
  const int64_t blocks = backward_blocks(s.rows);
  const int threads = threads_for(s.width);
  // A variant's widest block may take over 48 KiB of shared memory, which a kernel must ask
  // for; asked once.
  static const cudaError_t allowed = [] {
    cudaError_t err = cudaSuccess;
    const auto allow = [&](auto kernel, size_t bytes) {
      if (err == cudaSuccess)
        err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                   static_cast<int>(bytes));
    };
    allow(backward_kernel<256>, backward_shared_bytes<256>());
    allow(backward_kernel<512>, backward_shared_bytes<512>());
    allow(backward_kernel<1024>, backward_shared_bytes<1024>());
    return err;
  }();
  if (allowed != cudaSuccess) return cudaGetErrorString(allowed);
  const auto launch = [&](auto kernel, size_t bytes) {
    kernel<<<static_cast<unsigned>(blocks), threads, bytes, st>>>(
        dy, dsum, sum, mean, rstd, weight, s.rows, s.width, dsum_total, scratch);
  };
  if (threads <= 256)
    launch(backward_kernel<256>, backward_shared_bytes<256>());
  else if (threads <= 512)
    launch(backward_kernel<512>, backward_shared_bytes<512>());
  else
    launch(backward_kernel<1024>, backward_shared_bytes<1024>());
  const char* err = launch_error();
  if (err != nullptr) return err;
  sum_partials_kernel<<<dim3(static_cast<unsigned>((s.width + 31) / 32), 2),
                        dim3(32, kPartialSlices), 0, st>>>(scratch, blocks, s.width, dweight, dbias,
                                                           accumulate);
  return launch_error();
}

}  // namespace dshost_models
