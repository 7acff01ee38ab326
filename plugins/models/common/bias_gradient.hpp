// A linear layer's bias gradient, the column sums of its output's gradient g [N, out], for
// dshost::linear's bias_gradient: on a GPU over bf16, cuda_channel_scale.h's column sums (two
// passes that read g once, 16 bytes at a time, where ATen's column reduction of a [N, out]
// matrix runs well below the memory's bandwidth); elsewhere ATen's sum.
#pragma once

#include <dshost/torch.hpp>

#if DSHOST_CUDA_CHANNEL_SCALE
#include "cuda_channel_scale.h"
#include "cuda_tensors.hpp"
#endif

namespace dshost_models {

inline at::Tensor bias_gradient(const at::Tensor& g) {
#if DSHOST_CUDA_CHANNEL_SCALE
  if (bf16_on_gpu(g) && g.dim() == 2 &&
      cuda_channel_scale_takes(column_shape(g.size(0), g.size(1)))) {
    const at::Tensor m = aligned16(g), out = at::empty({g.size(1)}, g.options());
    const at::Tensor scratch =
        at::empty({cuda_channel_dot_scratch(column_shape(m.size(0), m.size(1)))},
                  g.options().dtype(at::kFloat));
    check_launch(cuda_column_sums(bf16_bits(m), m.size(0), m.size(1), bf16_bits(out),
                                  scratch.data_ptr<float>(), stream_of(m)),
                 "column sums");
    return out;
  }
#endif
  return g.sum(0);
}

}  // namespace dshost_models
