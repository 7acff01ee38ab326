// A linear layer whose three matrix multiplies run in fp8 on tensor cores (GPUs of compute
// capability 8.9 or later), as torchao's Float8Linear does for torchtitan: the input and
// the weight in e4m3 for the output, the output's gradient in e5m2 for both gradients, each
// matrix scaled as a whole by its current largest magnitude (dynamic scaling, torchao's
// default: a pass over the matrix to find it before the cast), or, given the layer's
// Fp8Scaling, by the largest of its last 16 casts (Transformer Engine's delayed scaling: the
// cast records the matrix's own, and no pass comes before it), the products accumulated in
// fp32 and written in bf16. Forward keeps the input's fp8 copy for backward: one byte an
// element where bf16 autocast keeps two.
//
// Taken where the layer's shapes allow (bf16 input and weight on a GPU, every dimension a
// multiple of 16 as cuBLASLt's fp8 kernels need); elsewhere dshost::linear in bf16.
#pragma once

#include <dshost/ops/linear.hpp>

#if DSHOST_CUDA_FP8
#include "cuda_fp8_cast.h"
#include "cuda_tensors.hpp"
#if DSHOST_CUDA_FP8_GEMM
#include "cuda_fp8_gemm.h"
#endif

#include <torch/autograd.h>

#include <cstdint>
#endif

namespace dshost_models {

// A layer's delayed-scaling state: each operand's history on the device (cuda_fp8_cast.h),
// made and seeded with the matrix's own largest magnitude at its first cast, so that cast
// scales as the current scaling does. Not checkpointed, by choice: dshost's checkpoints are
// universal (a run resumes on any number of ranks) and the input's and gradient's histories
// belong to one rank's data, so a resumed run seeds again, its first cast scaled as the
// current scaling would, the next 15 by a shorter history than an unbroken run's.
struct Fp8Scaling {
  at::Tensor input, weight, grad;
};

// A layer's options beyond its tensors: its delayed-scaling state (null for the current
// scaling), and whether its weight's gradient may go into the bound buffer in its own backward
// (not for a tied weight, whose uses autograd sums before the strategy sees the gradient).
struct Fp8LinearOptions {
  Fp8Scaling* scaling = nullptr;
  bool weight_into_buffer = true;
};

#if DSHOST_CUDA_FP8
// A matrix in fp8 in its own layout and transposed, the factor that gives its scale back,
// and, where asked for, its column sums in fp32 (of the values before the cast) by tiles of
// kFp8CastTileRows rows, [tiles, cols].
struct Fp8Matrix {
  at::Tensor rows, columns, inverse_scale, column_partials;
};

// `matrix`'s values in bf16, [rows, cols], cast: its rows and columns multiples of 8; scaled
// by its own largest magnitude, or by `history`'s where given (an undefined one is made).
inline Fp8Matrix to_fp8(const at::Tensor& matrix, Fp8Format format, bool column_sums = false,
                        at::Tensor* history = nullptr) {
  const at::Tensor m = aligned16(matrix);
  const at::ScalarType dtype = format == Fp8Format::e4m3 ? at::kFloat8_e4m3fn : at::kFloat8_e5m2;
  const auto fp32 = m.options().dtype(at::kFloat);
  Fp8Matrix q{at::empty(m.sizes(), m.options().dtype(dtype)),
              at::empty({m.size(1), m.size(0)}, m.options().dtype(dtype)), at::empty({1}, fp32)};
  const at::Tensor partials =
      column_sums
          ? at::empty({(m.size(0) + kFp8CastTileRows - 1) / kFp8CastTileRows, m.size(1)}, fp32)
          : at::Tensor();
  q.column_partials = partials;
  const uint16_t* x = bf16_bits(m);
  void* stream = stream_of(m);
  auto* out = static_cast<uint8_t*>(q.rows.data_ptr());
  auto* out_t = static_cast<uint8_t*>(q.columns.data_ptr());
  float* sums = column_sums ? partials.data_ptr<float>() : nullptr;
  const char* err = nullptr;
  if (history != nullptr) {
    if (!history->defined()) {  // its first entry seeded with this matrix's largest magnitude
      *history = at::zeros({kFp8HistoryWords}, m.options().dtype(at::kInt));
      err = cuda_amax(x, m.numel(), reinterpret_cast<float*>(history->data_ptr<int32_t>()), stream);
    }
    if (err == nullptr)
      err = cuda_cast_to_fp8_delayed(
          x, m.size(0), m.size(1), reinterpret_cast<unsigned*>(history->data_ptr<int32_t>()),
          format, out, out_t, q.inverse_scale.data_ptr<float>(), sums, stream);
  } else {
    const at::Tensor amax = at::empty({1}, fp32);
    err = cuda_amax(x, m.numel(), amax.data_ptr<float>(), stream);
    if (err == nullptr)
      err = cuda_cast_to_fp8(x, m.size(0), m.size(1), amax.data_ptr<float>(), format, out, out_t,
                             q.inverse_scale.data_ptr<float>(), sums, stream);
  }
  check_launch(err, "fp8 cast");
  return q;
}

// A bias's gradient from its output gradient's column partials: added into its bound buffer
// (none is then returned), else a fresh one.
inline at::Tensor bias_gradient_from(const at::Tensor& partials, const at::Tensor& bias) {
  const bool into = bound_gradient(bias, at::kBFloat16);
  const at::Tensor out =
      into ? bias.grad() : at::empty({partials.size(1)}, partials.options().dtype(at::kBFloat16));
  check_launch(
      cuda_sum_column_partials(partials.data_ptr<float>(), partials.size(0), partials.size(1),
                               bf16_bits(out), into, stream_of(partials)),
      "bias gradient");
  return into ? at::Tensor() : out;
}

// a [m, k] @ b [k, n] in fp8, written in bf16: cuBLASLt's fp8 kernels take a row-major and
// b column-major, i.e. both with k contiguous (a.rows and b's .columns transposed back).
inline at::Tensor fp8_matmul(const at::Tensor& a, const at::Tensor& a_inverse_scale,
                             const at::Tensor& b, const at::Tensor& b_inverse_scale,
                             const at::Tensor& bias, bool fast_accumulation) {
  return at::_scaled_mm(a, b, a_inverse_scale, b_inverse_scale,
                        bias.defined() ? c10::optional<at::Tensor>(bias) : c10::nullopt,
                        c10::nullopt, at::kBFloat16, fast_accumulation);
}

// The weight's gradient g^T [out, n] @ x [n, in] (g's and x's casts transposed): added by
// cuBLASLt into the weight's bound buffer where `into_buffer`, this build has cuBLASLt and
// the buffer is 16-byte aligned (none is then returned), else a fresh one from ATen's product.
inline at::Tensor weight_gradient(const Fp8Matrix& gq, const at::Tensor& x_t,
                                  const at::Tensor& x_inverse_scale, const at::Tensor& weight,
                                  bool into_buffer) {
#if DSHOST_CUDA_FP8_GEMM
  const at::Tensor& held = weight.grad();
  if (into_buffer && bound_gradient(weight, at::kBFloat16) &&
      reinterpret_cast<uintptr_t>(held.data_ptr()) % 16 == 0) {
    const at::Tensor workspace =
        at::empty({static_cast<int64_t>(kFp8GemmWorkspaceBytes)}, x_t.options().dtype(at::kByte));
    check_launch(
        cuda_fp8_gemm_accumulate(
            {gq.columns.data_ptr(), Fp8Format::e5m2, gq.inverse_scale.data_ptr<float>()},
            {x_t.data_ptr(), Fp8Format::e4m3, x_inverse_scale.data_ptr<float>()}, weight.size(0),
            weight.size(1), x_t.size(1), bf16_bits(held), workspace.data_ptr(), stream_of(x_t)),
        "fp8 weight gradient");
    return {};
  }
#else
  (void)into_buffer;
#endif
  return fp8_matmul(gq.columns, gq.inverse_scale, x_t.t(), x_inverse_scale, {}, false);
}

// A layer without a bias passes a tensor of no elements for it: LibTorch's custom functions
// take no undefined tensor among their inputs.
struct Fp8Linear : torch::autograd::Function<Fp8Linear> {
  static bool takes(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
    const auto multiple_of_16 = [](int64_t d) { return d % 16 == 0; };
    return x.is_cuda() && x.numel() > 0 && x.scalar_type() == at::kBFloat16 && weight.dim() == 2 &&
           weight.scalar_type() == at::kBFloat16 && x.size(-1) == weight.size(1) &&
           multiple_of_16(x.numel() / x.size(-1)) && multiple_of_16(weight.size(0)) &&
           multiple_of_16(weight.size(1)) &&
           (!bias.defined() || bias.scalar_type() == at::kBFloat16);
  }

  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                            const at::Tensor& weight, const at::Tensor& bias,
                            Fp8LinearOptions options) {
    Fp8Scaling* scaling = options.scaling;
    const Fp8Matrix xq = to_fp8(x.reshape({-1, x.size(-1)}), Fp8Format::e4m3, false,
                                scaling != nullptr ? &scaling->input : nullptr);
    const Fp8Matrix wq =
        to_fp8(weight, Fp8Format::e4m3, false, scaling != nullptr ? &scaling->weight : nullptr);
    // y = x W^T: W^T as column-major [in, out] is W's own rows.
    const at::Tensor y = fp8_matmul(xq.rows, xq.inverse_scale, wq.rows.t(), wq.inverse_scale,
                                    bias.numel() > 0 ? bias : at::Tensor(), true);
    ctx->save_for_backward({xq.columns, xq.inverse_scale, wq.columns, wq.inverse_scale});
    ctx->saved_data["scaling"] = static_cast<int64_t>(reinterpret_cast<intptr_t>(scaling));
    ctx->saved_data["weight_into_buffer"] = options.weight_into_buffer;
    ctx->saved_data["weight"] = weight;  // the parameters themselves, whose grads may be bound
    ctx->saved_data["bias"] = bias;
    std::vector<int64_t> shape = x.sizes().vec();
    shape.back() = weight.size(0);
    return y.view(shape);
  }

  // torchao's recipe: both gradients' products accumulated in full fp32 (no fast accumulation).
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x_t = saved[0], &x_inv = saved[1], &w_t = saved[2], &w_inv = saved[3];
    const at::Tensor g = grads[0].reshape({-1, grads[0].size(-1)}).to(at::kBFloat16);  // [n, out]
    auto* scaling =
        reinterpret_cast<Fp8Scaling*>(static_cast<intptr_t>(ctx->saved_data["scaling"].toInt()));
    const at::Tensor bias = ctx->saved_data["bias"].toTensor();
    const Fp8Matrix gq = to_fp8(g, Fp8Format::e5m2, /*column_sums=*/bias.numel() > 0,
                                scaling != nullptr ? &scaling->grad : nullptr);
    at::Tensor dx, dw;
    if (ctx->needs_input_grad(0)) {  // g [n, out] @ W [out, in]
      std::vector<int64_t> shape = grads[0].sizes().vec();
      shape.back() = w_t.size(0);
      dx = fp8_matmul(gq.rows, gq.inverse_scale, w_t.t(), w_inv, {}, false).view(shape);
    }
    if (ctx->needs_input_grad(1))
      dw = weight_gradient(gq, x_t, x_inv, ctx->saved_data["weight"].toTensor(),
                           ctx->saved_data["weight_into_buffer"].toBool());
    const at::Tensor db =
        bias.numel() > 0 ? bias_gradient_from(gq.column_partials, bias) : at::Tensor();
    return {dx, dw, db, {}};
  }
};
#endif

// Whether this build has fp8_linear's fp8 path at all, and its weight gradients added into
// their buffers by cuBLASLt.
#if DSHOST_CUDA_FP8
constexpr bool kFp8Built = true;
#else
constexpr bool kFp8Built = false;
#endif
#if DSHOST_CUDA_FP8_GEMM
constexpr bool kFp8GemmBuilt = true;
#else
constexpr bool kFp8GemmBuilt = false;
#endif

// y = x W^T + b, in fp8 where Fp8Linear takes the shapes, else dshost::linear (at::linear
// where the weight's gradient may not go into its buffer).
inline at::Tensor fp8_linear(const at::Tensor& x, const at::Tensor& weight,
                             const at::Tensor& bias = {}, Fp8LinearOptions options = {}) {
#if DSHOST_CUDA_FP8
  if (Fp8Linear::takes(x, weight, bias))
    return Fp8Linear::apply(x, weight, bias.defined() ? bias : at::empty({0}, weight.options()),
                            options);
#endif
  return options.weight_into_buffer ? dshost::linear(x, weight, bias) : at::linear(x, weight, bias);
}

}  // namespace dshost_models
