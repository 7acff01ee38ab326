#include "master_shard.h"

#if DSHOST_CUDA_ADAMW
#include "../common/cuda_adamw.h"

#include <c10/cuda/CUDAStream.h>
#else
#define DSHOST_CUDA_ADAMW 0
#endif

#include <string>

MasterShard::MasterShard(const dshost::Services& s, at::Tensor params, const at::Tensor& values)
    : services_(s),
      params_(params),
      master_(params.scalar_type() == at::kFloat
                  ? params
                  : values.to(params.device(), at::kFloat, false, /*copy=*/true)),
      cuda_adamw_(DSHOST_CUDA_ADAMW && params.is_cuda() && params.scalar_type() == at::kBFloat16 &&
                  s.optimizer().kind == DSHOST_ADAMW) {
  if (!cuda_adamw_) {
    flat_ = std::make_unique<dshost::FlatOptimizer>(s.optimizer(), params.numel(), params.device());
    return;
  }
  exp_avg_ = at::zeros_like(master_);
  exp_avg_sq_ = at::zeros_like(master_);
  step_count_ = at::zeros({1}, master_.options().dtype(at::kDouble));
}

void MasterShard::step(const at::Tensor& grads, const dshost_step_args& args,
                       const at::Tensor& norm) {
  if (cuda_adamw_) return step_on_cuda(grads, args, norm);
  flat_->step(master_, grads.to(at::kFloat), args.lr, norm, args.max_grad_norm,
              dshost::skip_nonfinite(args));
  write_back();
}

void MasterShard::write_back() {
  if (!master_.is_same(params_)) params_.copy_(master_);
}

void MasterShard::step_on_cuda(const at::Tensor& grads, const dshost_step_args& args,
                               const at::Tensor& norm) {
#if DSHOST_CUDA_ADAMW
  at::NoGradGuard no_grad;
  const at::Tensor found_inf =
      dshost::skip_nonfinite(args) ? at::isfinite(norm).logical_not().to(at::kFloat) : at::Tensor();
  if (found_inf.defined())  // a skipped step is not counted
    step_count_.sub_(found_inf.to(at::kDouble) - 1.0);
  else
    step_count_.add_(1.0);
  const auto& c = services_.optimizer();
  const at::Tensor divisor =
      args.max_grad_norm > 0 ? dshost::clip_divisor(norm, args.max_grad_norm) : at::Tensor();
  const at::Tensor bias_corrections = at::cat({dshost::bias_correction(c.beta1, step_count_),
                                               dshost::bias_correction(c.beta2, step_count_)})
                                          .to(at::kFloat);
  const auto pointer = [](const at::Tensor& t) {
    return t.defined() ? t.data_ptr<float>() : nullptr;
  };
  const dshost_zero::DeviceScalars scalars{pointer(divisor), pointer(bias_corrections),
                                           pointer(found_inf)};
  // Bias corrections and clipping come from the device: the step's own are neutral.
  const dshost::AdamWStep step{static_cast<float>(args.lr),
                               static_cast<float>(c.beta1),
                               static_cast<float>(c.beta2),
                               static_cast<float>(c.eps),
                               static_cast<float>(c.weight_decay),
                               1.0f,
                               1.0f,
                               1.0f};
  const dshost_zero::CudaAdamWRange range{master_.data_ptr<float>(),
                                          grads.data_ptr(),
                                          grads.scalar_type() == at::kBFloat16,
                                          exp_avg_.data_ptr<float>(),
                                          exp_avg_sq_.data_ptr<float>(),
                                          static_cast<uint16_t*>(params_.data_ptr()),
                                          master_.numel()};
  void* stream = c10::cuda::getCurrentCUDAStream(params_.device().index()).stream();
  if (const char* err = dshost_zero::cuda_adamw(range, step, scalars, stream))
    throw dshost::Error(std::string("ddp: the fused CUDA AdamW failed to launch: ") + err,
                        DSHOST_INTERNAL);
#else
  (void)grads, (void)args, (void)norm;
#endif
}

dshost::NamedState MasterShard::state() const {
  dshost::NamedState state{{"value", master_}};
  if (cuda_adamw_) {
    state.push_back({"exp_avg", exp_avg_});
    state.push_back({"exp_avg_sq", exp_avg_sq_});
  } else {
    for (const auto& moment : flat_->state()) state.push_back(moment);
  }
  return state;
}

int64_t MasterShard::steps() const {
  return cuda_adamw_ ? static_cast<int64_t>(step_count_.item<double>()) : flat_->steps();
}

void MasterShard::set_steps(int64_t steps) {
  if (cuda_adamw_)
    step_count_.fill_(static_cast<double>(steps));
  else
    flat_->set_steps(steps);
}

int64_t MasterShard::state_bytes() const {
  const int64_t masters = master_.is_same(params_) ? 0 : dshost::bytes_of(master_);
  return masters + (cuda_adamw_ ? dshost::bytes_of(exp_avg_) + dshost::bytes_of(exp_avg_sq_)
                                : flat_->state_bytes());
}
