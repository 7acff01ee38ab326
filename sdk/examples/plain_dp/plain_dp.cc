// plain_dp: data parallel without sharding, as PyTorch's DistributedDataParallel lays out
// memory: every rank holds the whole fp32 parameters, gradients and optimizer state, and
// step() averages the gradients with one all-reduce. A strategy plugin built against the
// installed dshost SDK alone.
#include <dshost/strategy.hpp>

namespace {

class PlainDp : public dshost::Strategy {
 public:
  explicit PlainDp(const dshost::Services& s) : Strategy(s) {}

  // The model's parameters move into two flat buffers this strategy owns; every rank starts
  // from rank 0's values.
  void setup(const std::vector<dshost::UnitParams>& units) override {
    const auto& s = services();
    layout_ = std::make_unique<dshost::FlatLayout>(units, 1);
    const auto fp32 = at::TensorOptions().dtype(at::kFloat).device(dshost::to_device(s.device()));
    params_ = at::zeros({layout_->padded}, fp32);
    grads_ = at::zeros({layout_->padded}, fp32);
    dshost::copy_into(*layout_, units, params_);
    param_id_ = s.register_buffer(dshost::to_dlpack(params_));
    grad_id_ = s.register_buffer(dshost::to_dlpack(grads_));
    s.broadcast(dshost::slice(param_id_, 0, layout_->padded), 0).wait();
    optimizer_ =
        std::make_unique<dshost::FlatOptimizer>(s.optimizer(), layout_->padded, params_.device());
  }

  // What the model binds: views into the flat buffers, so backward writes the gradients
  // straight into grads_.
  Views param_views(int unit, int index) override {
    return {layout_->view(params_, unit, index), layout_->view(grads_, unit, index)};
  }

  double step(const dshost_step_args& args) override {
    services().all_reduce(dshost::slice(grad_id_, 0, layout_->padded), DSHOST_AVG).wait();
    const double norm = std::sqrt(dshost::sum_of_squares(grads_).item<double>());
    if (args.max_grad_norm > 0 && norm > args.max_grad_norm)
      grads_.mul_(args.max_grad_norm / (norm + 1e-6));
    optimizer_->step(params_, grads_, args.lr);
    grads_.zero_();
    return norm;
  }

  dshost_memory_report memory() const override {
    dshost_memory_report r{};
    const at::Device compute = dshost::to_device(services().device());
    dshost::tally(dshost::bytes_of(params_), params_.device(), compute, &r.param_device,
                  &r.param_host);
    dshost::tally(dshost::bytes_of(grads_), grads_.device(), compute, &r.grad_device, &r.grad_host);
    dshost::tally(optimizer_->state_bytes(), optimizer_->device(), compute, &r.optim_device,
                  &r.optim_host);
    return r;
  }

 private:
  std::unique_ptr<dshost::FlatLayout> layout_;
  at::Tensor params_, grads_;
  int32_t param_id_ = -1, grad_id_ = -1;
  std::unique_ptr<dshost::FlatOptimizer> optimizer_;
};

}  // namespace

DSHOST_STRATEGY_PLUGIN(PlainDp, "plain_dp", "1.0.0",
                       "data parallel without sharding: whole fp32 state on every rank", nullptr, 0)
