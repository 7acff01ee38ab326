// The step's scalars a plugin hands the host: the model's loss (forward_backward) and the
// strategy's global gradient norm (step). Since ABI 1.4 the host lends a one-element device
// tensor for each (dshost_step_result.loss_out, dshost_step_args.grad_norm_out): the value
// is copied there without waiting for the device, so the call can be captured in a CUDA
// graph, and NaN is returned in its place. A host before 1.4 lends none and gets the value
// read back.
#pragma once

#include <dshost/torch.hpp>

#include <cmath>

namespace dshost {

// `value` (one element) copied into `slot`, NaN returned; read back where `slot` is null.
inline double hand_to_host(const at::Tensor& value, const DLTensor* slot) {
  if (slot == nullptr) return value.item<double>();
  borrow(slot).copy_(value.reshape({1}), /*non_blocking=*/true);
  return std::nan("");
}

// forward_backward's loss for `out`, as the host that passed it reads it.
inline double hand_loss(const dshost_step_result& out, const at::Tensor& loss) {
  const bool lent = out.struct_size >= DSHOST_STRUCT_SIZE(dshost_step_result, loss_out);
  return hand_to_host(loss, lent ? out.loss_out : nullptr);
}

// step's gradient norm for `args`, as the host that passed them reads it.
inline double report_norm(const dshost_step_args& args, const at::Tensor& norm) {
  const bool lent = args.struct_size >= DSHOST_STRUCT_SIZE(dshost_step_args, grad_norm_out);
  return hand_to_host(norm, lent ? args.grad_norm_out : nullptr);
}

}  // namespace dshost
