// Mean cross entropy of [rows, classes] logits against [rows] class indices: on a GPU with
// bf16 logits, cuda_cross_entropy.h's kernels; otherwise ATen's over the logits cast to
// fp32, as a PyTorch user writes it (F.cross_entropy(logits.float(), targets)).
#pragma once

#include <dshost/torch.hpp>

#include <torch/autograd.h>
#include <torch/nn/functional/loss.h>

#if DSHOST_CUDA_CROSS_ENTROPY
#include "cuda_cross_entropy.h"
#include "cuda_tensors.hpp"
#endif

#include <algorithm>

namespace dshost_models {

#if DSHOST_CUDA_CROSS_ENTROPY
// The kernels as an autograd function. Forward keeps only the rows' log-sum-exp ([rows]
// fp32) beside the logits; backward writes the logits' gradient into a fresh bf16 tensor.
struct CudaCrossEntropy : torch::autograd::Function<CudaCrossEntropy> {
  static bool takes(const at::Tensor& logits, const at::Tensor& targets) {
    return bf16_on_gpu(logits) && logits.dim() == 2 && logits.is_contiguous() &&
           reinterpret_cast<uintptr_t>(logits.data_ptr()) % 16 == 0 && targets.is_cuda() &&
           targets.scalar_type() == at::kLong;
  }
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& logits,
                            const at::Tensor& targets) {
    const at::Tensor t = targets.contiguous();
    const auto fp32 = logits.options().dtype(at::kFloat);
    const at::Tensor losses = at::empty({logits.size(0)}, fp32), lse = at::empty_like(losses);
    check_launch(
        cuda_cross_entropy(bf16_bits(logits), t.data_ptr<int64_t>(), losses.data_ptr<float>(),
                           lse.data_ptr<float>(), shape_of(logits), stream_of(logits)),
        "CUDA cross entropy");
    ctx->save_for_backward({logits, t, lse});
    return losses.mean();
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &logits = saved[0], &t = saved[1], &lse = saved[2];
    // d(mean)/d(loss of a row) = 1 / rows, times the incoming gradient, kept on the device.
    const at::Tensor scale = grads[0].to(at::kFloat).div(std::max<int64_t>(logits.size(0), 1));
    const at::Tensor dlogits = at::empty_like(logits);
    check_launch(
        cuda_cross_entropy_backward(bf16_bits(logits), t.data_ptr<int64_t>(), lse.data_ptr<float>(),
                                    scale.data_ptr<float>(), bf16_bits(dlogits), shape_of(logits),
                                    stream_of(logits)),
        "CUDA cross entropy");
    return {dlogits, at::Tensor()};
  }

 private:
  static CrossEntropyShape shape_of(const at::Tensor& logits) {
    return {logits.size(0), logits.size(1)};
  }
};
#endif

inline at::Tensor cross_entropy(const at::Tensor& logits, const at::Tensor& targets) {
#if DSHOST_CUDA_CROSS_ENTROPY
  if (CudaCrossEntropy::takes(logits, targets)) return CudaCrossEntropy::apply(logits, targets);
#endif
  return torch::nn::functional::cross_entropy(logits.to(at::kFloat), targets);
}

}  // namespace dshost_models
