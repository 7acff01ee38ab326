// An optional kernel for model plugins: causal self-attention, fused where LibTorch has it.
#pragma once

#include <dshost/torch.hpp>

#include <cmath>
#include <limits>

namespace dshost {

// Causal self-attention softmax(q k^T / sqrt(d) + causal mask) v over [batch, heads, T, d]:
// LibTorch 2's fused scaled_dot_product_attention (flash / memory-efficient kernels on
// CUDA) where it exists, the explicit product on 1.13.
inline at::Tensor causal_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
#if TORCH_VERSION_MAJOR >= 2
  return at::scaled_dot_product_attention(q, k, v, {}, 0.0, /*is_causal=*/true);
#else
  const int64_t t = q.size(-2);
  const at::Tensor future = at::ones({t, t}, q.options().dtype(at::kBool)).triu_(1);
  const at::Tensor scores =
      at::matmul(q, k.transpose(-2, -1)).div_(std::sqrt(static_cast<double>(q.size(-1))));
  return at::matmul(
      scores.masked_fill_(future, -std::numeric_limits<float>::infinity()).softmax(-1), v);
#endif
}

}  // namespace dshost
