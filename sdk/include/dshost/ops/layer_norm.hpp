// An optional kernel for model plugins: layer norm that keeps a bf16 input in bf16 on CUDA.
#pragma once

#include <dshost/torch.hpp>

#include <c10/core/impl/LocalDispatchKeySet.h>

namespace dshost {

// Layer norm over the last dimension, on CUDA in the input's precision. Autocast runs every
// layer norm in fp32 there, so a bf16 input (zero2 and zero3 compute on bf16 parameters)
// would be saved for backward as an fp32 copy, twice its bytes. ATen's CUDA kernels for
// bf16 accumulate statistics, affine and the weights' gradients in fp32 and round only what
// they return, which the next matrix multiply rounds to bf16 anyway; so a bf16 input skips
// autocast here, as it does under FSDP2's MixedPrecisionPolicy. Elsewhere autocast's path
// (LibTorch 1.13's CPU kernel sums the weights' gradients in bf16).
inline at::Tensor layer_norm(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                             double eps) {
  if (x.scalar_type() != at::kBFloat16 || !x.is_cuda())
    return at::layer_norm(x, {x.size(-1)}, weight, bias, eps);
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  return at::layer_norm(x, {x.size(-1)}, weight.to(at::kBFloat16), bias.to(at::kBFloat16), eps);
}

}  // namespace dshost
