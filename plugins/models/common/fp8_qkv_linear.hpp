// Attention's input projection in fp8: x [B, T, in] through fp8_linear.hpp's layer to
// [B, T, 3C], returned as q, k and v, each [B, T, heads, C / heads], the views of that output
// that .view(...).unbind(2) gives. Backward casts their three gradients to e5m2 where they lie
// (Fp8Source::stacked), where unbind's backward would first copy them into a stacked [B, T, 3C]
// gradient for the layer's (0.23 ms a step at gpt2-124m in fp8).
//
// Taken where fp8_linear's fp8 path takes the shapes and the layer has a bias; elsewhere
// fp8_linear's output split the same way.
#pragma once

#include "fp8_linear.hpp"

#include <vector>

namespace dshost_models {

#if DSHOST_CUDA_FP8
// q's, k's and v's gradients as a stacked cast's input [B x T, 3C], where their layouts allow
// it: one shape and one set of strides, head_dim contiguous, every part's rows 16-byte
// aligned, the matrix's sides within 32 bits. Its `x` is null where they do not.
inline Fp8CastInput stacked_gradients(const torch::autograd::variable_list& grads) {
  const at::Tensor& first = grads[0];
  Fp8CastInput in{nullptr, first.size(0) * first.size(1), 3 * first.size(2) * first.size(3),
                  Fp8Source::stacked};
  for (const at::Tensor& g : grads)
    if (g.sizes() != first.sizes() || g.strides() != first.strides() || !bf16_vectors_aligned(g))
      return in;
  if (first.size(3) % 8 != 0 || in.rows >= (int64_t{1} << 31) || in.cols >= (int64_t{1} << 31))
    return in;
  for (int i = 0; i < 3; ++i) in.stack.parts[i] = bf16_bits(grads[i]);
  in.stack.steps = first.size(1);
  in.stack.head_dim = first.size(3);
  in.stack.stride_batch = first.stride(0);
  in.stack.stride_step = first.stride(1);
  in.stack.stride_head = first.stride(2);
  in.x = in.stack.parts[0];
  return in;
}

struct Fp8QkvLinear : torch::autograd::Function<Fp8QkvLinear> {
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx,
                                                const at::Tensor& x, const at::Tensor& weight,
                                                const at::Tensor& bias, int64_t heads,
                                                Fp8Scaling* scaling) {
    const Fp8Forward f = fp8_forward(x.reshape({-1, x.size(-1)}), weight, bias, scaling);
    ctx->save_for_backward(
        {f.input.columns, f.input.inverse_scale, f.weight.columns, f.weight.inverse_scale});
    keep_scaling(ctx, "scaling", scaling);
    ctx->saved_data["weight"] = weight;  // the parameters themselves, whose grads may be bound
    ctx->saved_data["bias"] = bias;
    const int64_t width = weight.size(0) / 3;
    return f.output.view({x.size(0), x.size(1), 3, heads, width / heads}).unbind(2);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    Fp8Scaling* scaling = kept_scaling(ctx, "scaling");
    at::Tensor* history = scaling != nullptr ? &scaling->grad : nullptr;
    const at::Tensor like = grads[0].defined()   ? grads[0]
                            : grads[1].defined() ? grads[1]
                                                 : grads[2];
    for (at::Tensor& g : grads)  // an unused part's gradient is zeros, as unbind's backward has it
      g = g.defined() ? g.to(at::kBFloat16) : at::zeros(like.sizes(), like.options());
    const Fp8CastInput stacked = stacked_gradients(grads);
    const Fp8Matrix gq =
        stacked.x != nullptr
            ? cast_to_fp8(stacked, grads[0], Fp8Format::e5m2, /*column_sums=*/true, history)
            : to_fp8(at::stack(grads, 2).reshape({stacked.rows, stacked.cols}), Fp8Format::e5m2,
                     /*column_sums=*/true, history);
    const Fp8Gradients d = fp8_backward(
        gq, {{}, saved[0], saved[1], {}}, {{}, saved[2], saved[3], {}},
        ctx->saved_data["weight"].toTensor(), ctx->saved_data["bias"].toTensor(),
        {ctx->needs_input_grad(0), ctx->needs_input_grad(1), /*weight_into_buffer=*/true});
    return {unflatten_rows(d.input, {like.size(0), like.size(1), 0}), d.weight, d.bias, {}, {}};
  }
};
#endif

// q, k and v, each [B, T, heads, C / heads], from x [B, T, in] and a layer of 3C outputs.
inline std::vector<at::Tensor> fp8_qkv_linear(const at::Tensor& x, const at::Tensor& weight,
                                              const at::Tensor& bias, int64_t heads,
                                              Fp8Scaling* scaling = nullptr) {
  const int64_t width = weight.size(0) / 3;
#if DSHOST_CUDA_FP8
  if (x.dim() == 3 && bias.defined() && Fp8Linear::takes(x, weight, bias))
    return Fp8QkvLinear::apply(x, weight, bias, heads, scaling);
#endif
  return fp8_linear(x, weight, bias, {scaling})
      .view({x.size(0), x.size(1), 3, heads, width / heads})
      .unbind(2);
}

}  // namespace dshost_models
