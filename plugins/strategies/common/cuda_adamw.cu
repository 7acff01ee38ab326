// The kernel of cuda_adamw.h: a grid-stride loop, four elements a thread in 16-byte loads
// and stores where every range is aligned for them (the flat layout's units are), one at a
// time otherwise and for the tail.
#include "cuda_adamw.h"

#include <cuda_runtime.h>

#include <algorithm>

namespace dshost_zero {
namespace {

template <class T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

template <int N, class G>
__global__ void adamw_kernel(float* __restrict__ p, const G* __restrict__ g, float* __restrict__ m,
                             float* __restrict__ v, uint16_t* __restrict__ out, int64_t n,
                             dshost::AdamWStep s, DeviceScalars d) {
  using dshost::detail::adamw_element;
  using dshost::detail::bf16_bits;
  using dshost::detail::gradient;
  if (d.found_inf != nullptr && *d.found_inf != 0.0f) return;
  if (d.divisor != nullptr) s.grad_scale = 1.0f / *d.divisor;
  if (d.bias_corrections != nullptr) {
    s.bias_correction1 = d.bias_corrections[0];
    s.bias_correction2 = d.bias_corrections[1];
  }
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t packs = n / N;
  for (int64_t k = first; k < packs; k += stride) {
    Pack<float, N> pk = reinterpret_cast<const Pack<float, N>*>(p)[k];
    Pack<float, N> mk = reinterpret_cast<const Pack<float, N>*>(m)[k];
    Pack<float, N> vk = reinterpret_cast<const Pack<float, N>*>(v)[k];
    const Pack<G, N> gk = reinterpret_cast<const Pack<G, N>*>(g)[k];
    Pack<uint16_t, N> ok;
#pragma unroll
    for (int j = 0; j < N; ++j)
      ok.v[j] = bf16_bits(adamw_element(pk.v[j], gradient(gk.v[j]), mk.v[j], vk.v[j], s));
    reinterpret_cast<Pack<float, N>*>(p)[k] = pk;
    reinterpret_cast<Pack<float, N>*>(m)[k] = mk;
    reinterpret_cast<Pack<float, N>*>(v)[k] = vk;
    reinterpret_cast<Pack<uint16_t, N>*>(out)[k] = ok;
  }
  for (int64_t i = packs * N + first; i < n; i += stride)
    out[i] = bf16_bits(adamw_element(p[i], gradient(g[i]), m[i], v[i], s));
}

bool aligned(const void* ptr, int bytes) { return reinterpret_cast<uintptr_t>(ptr) % bytes == 0; }

template <class G>
void launch(const CudaAdamWRange& r, const dshost::AdamWStep& step, const DeviceScalars& scalars,
            cudaStream_t stream) {
  constexpr int kPack = 4, kThreads = 256;
  const bool packed = aligned(r.master, 16) && aligned(r.exp_avg, 16) &&
                      aligned(r.exp_avg_sq, 16) && aligned(r.grad, kPack * sizeof(G)) &&
                      aligned(r.out, kPack * 2);
  const int64_t per_thread = packed ? kPack : 1;
  const int64_t blocks = std::clamp<int64_t>((r.n / per_thread + kThreads - 1) / kThreads, 1, 8192);
  const auto* g = static_cast<const G*>(r.grad);
  if (packed)
    adamw_kernel<kPack><<<blocks, kThreads, 0, stream>>>(r.master, g, r.exp_avg, r.exp_avg_sq,
                                                         r.out, r.n, step, scalars);
  else
    adamw_kernel<1><<<blocks, kThreads, 0, stream>>>(r.master, g, r.exp_avg, r.exp_avg_sq, r.out,
                                                     r.n, step, scalars);
}

}  // namespace

const char* cuda_adamw(const CudaAdamWRange& r, const dshost::AdamWStep& step,
                       const DeviceScalars& scalars, void* stream) {
  if (r.n == 0) return nullptr;
  const auto s = static_cast<cudaStream_t>(stream);
  if (r.grad_bf16)
    launch<uint16_t>(r, step, scalars, s);
  else
    launch<float>(r, step, scalars, s);
  const cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
}

}  // namespace dshost_zero
