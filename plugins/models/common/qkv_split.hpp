// c_attn's product split into q, k and v, [B, T, heads, C / heads] views of its [B, T, 3C]
// output, as `.view({B, T, 3, heads, C / heads}).unbind(2)` splits it, where backward stacks
// their gradients into c_attn's output gradient and sums its columns, c_attn's bias
// gradient, in one pass (cuda_qkv_gradient.h): the bias gradient then needs no pass of its
// own (bf16_linear.hpp's BGRADB or column sums), which would read that gradient again. The
// product runs on a detached bias, whose gradient the split's backward returns.
//
// Taken for bf16 on a GPU where Bf16Linear takes the layer and C / heads is a multiple of 8,
// in builds with the kernels; elsewhere the product (bf16_linear) unbound as above: unbind,
// not qkv[i] (three selects would each backpropagate a zero-filled [B, T, 3C] and add them
// up), and by dimension 2 before attention's transposes (unbinding a permuted [3, B, heads,
// T, C / heads] would copy twice, transposing both times).
#pragma once

#include "bf16_linear.hpp"

#if DSHOST_CUDA_QKV_GRADIENT && DSHOST_CUDA_GELU_GEMM
#include "cuda_qkv_gradient.h"
#include "cuda_tensors.hpp"

#include <torch/autograd.h>
#endif

#include <vector>

namespace dshost_models {

// qkv [B, T, 3C] as q, k and v, three [B, T, heads, C / heads] views.
inline std::vector<at::Tensor> unbind_qkv(const at::Tensor& qkv, int64_t heads) {
  return qkv.view({qkv.size(0), qkv.size(1), 3, heads, qkv.size(2) / 3 / heads}).unbind(2);
}

#if DSHOST_CUDA_QKV_GRADIENT && DSHOST_CUDA_GELU_GEMM
struct QkvSplit : torch::autograd::Function<QkvSplit> {
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx,
                                                const at::Tensor& qkv, const at::Tensor& bias,
                                                int64_t heads) {
    ctx->saved_data["bias"] = bias;  // the parameter, whose grad may be bound
    ctx->saved_data["heads"] = heads;
    return unbind_qkv(qkv, heads);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const at::Tensor bias = ctx->saved_data["bias"].toTensor();
    const int64_t heads = ctx->saved_data["heads"].toInt();
    const at::Tensor& shaped = grads[0].defined()   ? grads[0]
                               : grads[1].defined() ? grads[1]
                                                    : grads[2];
    const QkvShape s{shaped.size(0), shaped.size(1), heads, shaped.size(3)};
    std::vector<at::Tensor> kept;  // each gradient as the kernel reads it
    QkvPart parts[3];
    for (int i = 0; i < 3; ++i) {
      kept.push_back(readable(grads[i].defined() ? grads[i] : at::zeros_like(shaped)));
      parts[i] = {bf16_bits(kept[i]), kept[i].stride(0), kept[i].stride(1), kept[i].stride(2)};
    }
    const bool bias_asked = ctx->needs_input_grad(1);
    const bool into_bound = bias_asked && bound_gradient(bias, at::kBFloat16);
    const at::Tensor stacked =
                         at::empty({s.batch, s.time, 3 * heads * s.head_dim}, shaped.options()),
                     dbias = into_bound ? bias.grad()
                                        : at::empty({3 * heads * s.head_dim}, shaped.options()),
                     scratch = at::empty({cuda_qkv_gradient_scratch(s)},
                                         shaped.options().dtype(at::kFloat));
    check_launch(cuda_stack_qkv_gradient(parts, s, bf16_bits(stacked), bf16_bits(dbias), into_bound,
                                         scratch.data_ptr<float>(), stream_of(stacked)),
                 "q, k and v gradient");
    return {stacked, into_bound || !bias_asked ? at::Tensor() : dbias, at::Tensor()};
  }

  // g as the kernel reads it: bf16, head_dim contiguous, its start and strides 16-byte
  // aligned (a copy where it is not).
  static at::Tensor readable(const at::Tensor& g) {
    const at::Tensor bf16 = g.to(at::kBFloat16);
    return bf16_vectors_aligned(bf16) ? bf16 : aligned16(bf16);
  }
};
#endif

// x's q, k and v through c_attn (weight [3C, C], bias [3C]): three [B, T, heads, C / heads]
// views of its output, for x [B, T, C].
inline std::vector<at::Tensor> split_qkv(const at::Tensor& x, const at::Tensor& weight,
                                         const at::Tensor& bias, int64_t heads) {
#if DSHOST_CUDA_QKV_GRADIENT && DSHOST_CUDA_GELU_GEMM
  const int64_t b = x.size(0), t = x.size(1), c = weight.size(0) / 3;
  if (Bf16Linear::takes(x, weight, bias) && x.dim() == 3 && c % heads == 0 &&
      cuda_qkv_gradient_takes({b, t, heads, c / heads}))
    return QkvSplit::apply(bf16_linear(x, weight, bias.detach()), bias, heads);
#endif
  return unbind_qkv(bf16_linear(x, weight, bias), heads);
}

}  // namespace dshost_models
