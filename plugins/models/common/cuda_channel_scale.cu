// The kernels of cuda_channel_scale.h. A block spans up to 32 vectors of 8 channels of one
// sample and as many pixels as its 256 threads then allow; gridDim.y blocks share a sample's
// pixels, each thread adding every so many, and write their sums as partial rows, which a
// second kernel adds in order.
#include "cuda_channel_scale.h"

#include "cuda_bf16.cuh"

namespace dshost_models {
namespace {

using namespace kernels;

constexpr int kThreads = kColumnThreads;
constexpr int64_t kPixelsPerThread = 16, kMostGroups = 64;

dim3 grid(const ChannelScaleShape& s) {
  const ColumnTiling t = column_tiling(s.channels);
  const int64_t tiles = (s.channels / kLanes + t.tile - 1) / t.tile,
                per_group = t.rows_per_pass * kPixelsPerThread,
                groups = (s.pixels + per_group - 1) / per_group;
  return dim3(static_cast<unsigned>(tiles),
              static_cast<unsigned>(groups < kMostGroups ? groups : kMostGroups),
              static_cast<unsigned>(s.samples));
}

__global__ void channel_scale_kernel(const uint16_t* x, const uint16_t* scale, const float* shift,
                                     uint16_t* y, int64_t words, int64_t pixels, int64_t channels) {
  const int64_t vectors = channels / kLanes;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < words;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t at = i / (pixels * vectors) * channels + i % vectors * kLanes;
    const Bf16x8 in = reinterpret_cast<const Bf16x8*>(x)[i];
    const Bf16x8 s = *reinterpret_cast<const Bf16x8*>(scale + at);
    Bf16x8 out;
    for (int k = 0; k < kLanes; ++k) {
      const float v = to_float(in.v[k]) * to_float(s.v[k]);
      out.v[k] = to_bf16(shift != nullptr ? v + shift[at + k] : v);
    }
    reinterpret_cast<Bf16x8*>(y)[i] = out;
  }
}

// partials [samples, gridDim.y, channels]: the sums of dy * x, or of dy alone (kDot false,
// x unread).
template <bool kDot>
__global__ void channel_sums_kernel(const uint16_t* dy, const uint16_t* x, ColumnTiling t,
                                    int64_t pixels, int64_t channels, float* partials) {
  const int lane = static_cast<int>(threadIdx.x) % t.tile,
            row = static_cast<int>(threadIdx.x) / t.tile;
  const int64_t col = (static_cast<int64_t>(blockIdx.x) * t.tile + lane) * kLanes;
  const bool active = row < t.rows_per_pass && col < channels;
  const int64_t sample = static_cast<int64_t>(blockIdx.z) * pixels * channels;
  float sums[kLanes] = {};
  if (active) {
    const int64_t step = static_cast<int64_t>(gridDim.y) * t.rows_per_pass;
#pragma unroll 4
    for (int64_t p = static_cast<int64_t>(blockIdx.y) * t.rows_per_pass + row; p < pixels;
         p += step) {
      const int64_t at = sample + p * channels + col;
      const Bf16x8 g = *reinterpret_cast<const Bf16x8*>(dy + at);
      if constexpr (kDot) {
        const Bf16x8 v = *reinterpret_cast<const Bf16x8*>(x + at);
        for (int k = 0; k < kLanes; ++k) sums[k] += to_float(g.v[k]) * to_float(v.v[k]);
      } else {
        for (int k = 0; k < kLanes; ++k) sums[k] += to_float(g.v[k]);
      }
    }
  }
  __shared__ float part[kThreads * kLanes];
  for (int k = 0; k < kLanes; ++k) part[threadIdx.x * kLanes + k] = sums[k];
  const int width = t.tile * kLanes;
  sum_block_rows(part, 1, t.rows_per_pass, width);
  float* own = partials + (blockIdx.z * static_cast<int64_t>(gridDim.y) + blockIdx.y) * channels;
  for (int i = static_cast<int>(threadIdx.x); i < width; i += kThreads) {
    const int64_t c = static_cast<int64_t>(blockIdx.x) * width + i;
    if (c < channels) own[c] = part[i];
  }
}

__device__ inline void store(float* at, float v) { *at = v; }
__device__ inline void store(uint16_t* at, float v) { *at = to_bf16(v); }

// out[n, c] = the sum of partials[n, 0..groups - 1, c] in order, in fp32 or bf16 (Out); a
// thread a value.
template <typename Out>
__global__ void add_groups_kernel(const float* partials, int64_t groups, int64_t samples,
                                  int64_t channels, Out* out) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= samples * channels) return;
  const int64_t n = i / channels, c = i % channels;
  float total = 0.f;
  for (int64_t g = 0; g < groups; ++g) total += partials[(n * groups + g) * channels + c];
  store(out + i, total);
}

// The two passes of cuda_channel_dot and cuda_column_sums.
template <bool kDot, typename Out>
const char* channel_sums(const uint16_t* dy, const uint16_t* x, Out* out, float* scratch,
                         const ChannelScaleShape& s, void* stream) {
  auto st = static_cast<cudaStream_t>(stream);
  const dim3 blocks = grid(s);
  channel_sums_kernel<kDot><<<blocks, kThreads, 0, st>>>(dy, x, column_tiling(s.channels), s.pixels,
                                                         s.channels, scratch);
  const int64_t values = s.samples * s.channels;
  add_groups_kernel<<<static_cast<unsigned>((values + 255) / 256), 256, 0, st>>>(
      scratch, blocks.y, s.samples, s.channels, out);
  return launch_error();
}

}  // namespace

bool cuda_channel_scale_takes(const ChannelScaleShape& s) {
  return s.channels > 0 && s.channels % kLanes == 0 && s.pixels > 0 && s.samples > 0 &&
         s.samples <= 65535;
}

const char* cuda_channel_scale(const uint16_t* x, const uint16_t* scale, const float* shift,
                               uint16_t* y, const ChannelScaleShape& s, void* stream) {
  const int64_t words = s.samples * s.pixels * s.channels / kLanes,
                wanted = (words + kThreads - 1) / kThreads;
  channel_scale_kernel<<<static_cast<unsigned>(wanted < 65535 ? wanted : 65535), kThreads, 0,
                         static_cast<cudaStream_t>(stream)>>>(x, scale, shift, y, words, s.pixels,
                                                              s.channels);
  return launch_error();
}

int64_t cuda_channel_dot_scratch(const ChannelScaleShape& s) {
  return s.samples * static_cast<int64_t>(grid(s).y) * s.channels;
}

const char* cuda_channel_dot(const uint16_t* dy, const uint16_t* x, float* out, float* scratch,
                             const ChannelScaleShape& s, void* stream) {
  return channel_sums<true>(dy, x, out, scratch, s, stream);
}

const char* cuda_column_sums(const uint16_t* x, int64_t rows, int64_t cols, uint16_t* out,
                             float* scratch, void* stream) {
  return channel_sums<false>(x, nullptr, out, scratch, column_shape(rows, cols), stream);
}

}  // namespace dshost_models
