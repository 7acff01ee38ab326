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
#include <vector>
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

// The values `in` describes cast (cuda_fp8_cast.h), on `like`'s device and stream: scaled by
// their own largest magnitude, or by `history`'s where given (an undefined one is made).
inline Fp8Matrix cast_to_fp8(const Fp8CastInput& in, const at::Tensor& like, Fp8Format format,
                             bool column_sums, at::Tensor* history) {
  const at::ScalarType dtype = format == Fp8Format::e4m3 ? at::kFloat8_e4m3fn : at::kFloat8_e5m2;
  const auto fp32 = like.options().dtype(at::kFloat);
  Fp8Matrix q{at::empty({in.rows, in.cols}, like.options().dtype(dtype)),
              at::empty({in.cols, in.rows}, like.options().dtype(dtype)), at::empty({1}, fp32),
              column_sums
                  ? at::empty({(in.rows + kFp8CastTileRows - 1) / kFp8CastTileRows, in.cols}, fp32)
                  : at::Tensor()};
  void* stream = stream_of(like);
  auto* out = static_cast<uint8_t*>(q.rows.data_ptr());
  auto* out_t = static_cast<uint8_t*>(q.columns.data_ptr());
  float* sums = column_sums ? q.column_partials.data_ptr<float>() : nullptr;
  const char* err = nullptr;
  if (history != nullptr) {
    if (!history->defined()) {  // its first entry seeded with these values' largest magnitude
      *history = at::zeros({kFp8HistoryWords}, like.options().dtype(at::kInt));
      err = cuda_amax(in, reinterpret_cast<float*>(history->data_ptr<int32_t>()), stream);
    }
    if (err == nullptr)
      err = cuda_cast_to_fp8_delayed(in, reinterpret_cast<unsigned*>(history->data_ptr<int32_t>()),
                                     format, out, out_t, q.inverse_scale.data_ptr<float>(), sums,
                                     stream);
  } else {
    const at::Tensor amax = at::empty({1}, fp32);
    err = cuda_amax(in, amax.data_ptr<float>(), stream);
    if (err == nullptr)
      err = cuda_cast_to_fp8(in, amax.data_ptr<float>(), format, out, out_t,
                             q.inverse_scale.data_ptr<float>(), sums, stream);
  }
  check_launch(err, "fp8 cast");
  return q;
}

// `matrix`'s values in bf16, [rows, cols], cast: its rows and columns multiples of 8.
// `source` casts GELU of the values instead, or the values times GELU's derivative at
// `points` (a bf16 matrix of matrix's shape).
inline Fp8Matrix to_fp8(const at::Tensor& matrix, Fp8Format format, bool column_sums = false,
                        at::Tensor* history = nullptr, Fp8Source source = Fp8Source::plain,
                        const at::Tensor& points = {}) {
  const at::Tensor m = aligned16(matrix);
  const at::Tensor p = source == Fp8Source::gelu_gradient ? aligned16(points) : at::Tensor();
  const Fp8CastInput in{bf16_bits(m), m.size(0), m.size(1), source,
                        p.defined() ? bf16_bits(p) : nullptr};
  return cast_to_fp8(in, m, format, column_sums, history);
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

// A layer's forward in fp8: its input's values (`source` of x [n, in], to_fp8's) and its
// weight cast to e4m3, and y = x W^T + b [n, out] in bf16.
struct Fp8Forward {
  at::Tensor output;
  Fp8Matrix input, weight;
};
inline Fp8Forward fp8_forward(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                              Fp8Scaling* scaling, Fp8Source source = Fp8Source::plain) {
  const Fp8Matrix xq =
      to_fp8(x, Fp8Format::e4m3, false, scaling != nullptr ? &scaling->input : nullptr, source);
  const Fp8Matrix wq =
      to_fp8(weight, Fp8Format::e4m3, false, scaling != nullptr ? &scaling->weight : nullptr);
  // W^T as column-major [in, out] is W's own rows.
  return {fp8_matmul(xq.rows, xq.inverse_scale, wq.rows.t(), wq.inverse_scale, bias, true), xq, wq};
}

// A layer's gradients from its output gradient's e5m2 cast gq [n, out] (its column partials
// where the layer has a bias) and forward's casts of the input and weight (their transposed
// layouts and inverse scales): the input's [n, in] and the weight's where `input` and
// `weight` ask for them (none for the weight where added into its buffer), the bias's where
// it has one. torchao's recipe: both products accumulated in full fp32 (no fast accumulation).
struct Fp8Gradients {
  at::Tensor input, weight, bias;
};
struct Fp8Wanted {
  bool input, weight, weight_into_buffer;
};
inline Fp8Gradients fp8_backward(const Fp8Matrix& gq, const Fp8Matrix& x, const Fp8Matrix& w,
                                 const at::Tensor& weight, const at::Tensor& bias,
                                 Fp8Wanted wanted) {
  Fp8Gradients out;
  if (wanted.input)  // g [n, out] @ W [out, in]
    out.input = fp8_matmul(gq.rows, gq.inverse_scale, w.columns.t(), w.inverse_scale, {}, false);
  if (wanted.weight)
    out.weight = weight_gradient(gq, x.columns, x.inverse_scale, weight, wanted.weight_into_buffer);
  if (bias.defined() && bias.numel() > 0) out.bias = bias_gradient_from(gq.column_partials, bias);
  return out;
}

// A layer's delayed-scaling state (null: the current scaling), kept in a custom function's
// context for its backward.
inline void keep_scaling(torch::autograd::AutogradContext* ctx, const char* name,
                         Fp8Scaling* scaling) {
  ctx->saved_data[name] = static_cast<int64_t>(reinterpret_cast<intptr_t>(scaling));
}
inline Fp8Scaling* kept_scaling(torch::autograd::AutogradContext* ctx, const char* name) {
  return reinterpret_cast<Fp8Scaling*>(static_cast<intptr_t>(ctx->saved_data[name].toInt()));
}

// rows [n, k] in the leading shape of a tensor of sizes `like` ([..., anything], n rows):
// [..., k]. An undefined one stays undefined.
inline at::Tensor unflatten_rows(const at::Tensor& rows, at::IntArrayRef like) {
  if (!rows.defined()) return rows;
  std::vector<int64_t> shape = like.vec();
  shape.back() = rows.size(1);
  return rows.view(shape);
}

// A layer without a bias passes a tensor of no elements for it: LibTorch's custom functions
// take no undefined tensor among their inputs.
struct Fp8Linear : torch::autograd::Function<Fp8Linear> {
  static bool takes(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
    const auto multiple_of_16 = [](int64_t d) { return d % 16 == 0; };
    return bf16_on_gpu(x) && x.numel() > 0 && weight.dim() == 2 &&
           weight.scalar_type() == at::kBFloat16 && x.size(-1) == weight.size(1) &&
           multiple_of_16(x.numel() / x.size(-1)) && multiple_of_16(weight.size(0)) &&
           multiple_of_16(weight.size(1)) &&
           (!bias.defined() || bias.scalar_type() == at::kBFloat16);
  }

  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                            const at::Tensor& weight, const at::Tensor& bias,
                            Fp8LinearOptions options) {
    const Fp8Forward f = fp8_forward(x.reshape({-1, x.size(-1)}), weight,
                                     bias.numel() > 0 ? bias : at::Tensor(), options.scaling);
    ctx->save_for_backward(
        {f.input.columns, f.input.inverse_scale, f.weight.columns, f.weight.inverse_scale});
    keep_scaling(ctx, "scaling", options.scaling);
    ctx->saved_data["weight_into_buffer"] = options.weight_into_buffer;
    ctx->saved_data["weight"] = weight;  // the parameters themselves, whose grads may be bound
    ctx->saved_data["bias"] = bias;
    return unflatten_rows(f.output, x.sizes());
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor g = grads[0].reshape({-1, grads[0].size(-1)}).to(at::kBFloat16);  // [n, out]
    Fp8Scaling* scaling = kept_scaling(ctx, "scaling");
    const at::Tensor bias = ctx->saved_data["bias"].toTensor();
    const Fp8Matrix gq = to_fp8(g, Fp8Format::e5m2, /*column_sums=*/bias.numel() > 0,
                                scaling != nullptr ? &scaling->grad : nullptr);
    const Fp8Gradients d =
        fp8_backward(gq, {{}, saved[0], saved[1], {}}, {{}, saved[2], saved[3], {}},
                     ctx->saved_data["weight"].toTensor(), bias,
                     {ctx->needs_input_grad(0), ctx->needs_input_grad(1),
                      ctx->saved_data["weight_into_buffer"].toBool()});
    return {unflatten_rows(d.input, grads[0].sizes()), d.weight, d.bias, {}};
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
