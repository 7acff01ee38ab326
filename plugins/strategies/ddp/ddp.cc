// ddp: data parallel with ZeRO stage 1, as the product's guide defines "DDP".
//
// Memory: every rank holds the whole parameters and gradients in two flat buffers (units
// end to end, padded to a multiple of the world size) and the optimizer state of its 1/N
// shard only.
// Step: gradients are summed by bucketed all-reduces started from grads_ready, so they
// overlap backward (buckets fill from the last unit backwards, like PyTorch's DDP, and are
// launched strictly in order so every rank issues the same sequence). step() waits for
// them, averages, updates the rank's shard clipped by the global norm and all-gathers the
// updated parameters, all without waiting on the host (the norm goes to the host as a
// device tensor). With gradient accumulation, only the last micro-batch communicates.
// Mixed precision is ZeRO's stage 1 (master_shard.h): under bf16 the flat parameters and
// gradients are bf16 (2 + 2 bytes a parameter) and each rank keeps fp32 masters and AdamW
// moments for its shard only (12/N), where PyTorch DDP + autocast holds fp32 parameters and
// gradients (4 + 4). Gradients are all-reduced in bf16 by default, as PyTorch DDP reduces a
// bf16 model's. Two things use an fp32 buffer of the model's size (4 more bytes a parameter):
// a step of several micro-batches sums them there by default, as DeepSpeed does
// (grad_accum_dtype; "bf16" lets them add up in the bf16 gradients instead), and
// reduce_dtype = "fp32" all-reduces there, as zero2 does by default. Each micro-batch's bf16
// gradients are folded into it; the communicating micro-batch's unit by unit as backward
// finishes each, so that the buffer's buckets are all-reduced while backward goes on. In fp32
// the parameters are their own masters and ddp agrees with PyTorch DDP to the last bit.
#include "master_shard.h"

#include <dshost/strategy.hpp>

namespace {

const dshost_option kOptions[] = {
    DSHOST_OPTION_RANGE("reduce_bucket_size", DSHOST_OPTION_INT, "25000000", 1, 1e12,
                        "gradient elements per all-reduce bucket (DeepSpeed's name)"),
    DSHOST_OPTION("overlap_comm", DSHOST_OPTION_BOOL, "true", nullptr,
                  "start each bucket's all-reduce during backward (false: all in step)"),
    DSHOST_OPTION("grad_accum_dtype", DSHOST_OPTION_STRING, "\"fp32\"", "fp32|bf16",
                  "under bf16, what a step's micro-batches are summed in: an fp32 buffer of the "
                  "model's size (made at the first step of several), or the bf16 gradients"),
    DSHOST_OPTION("reduce_dtype", DSHOST_OPTION_STRING, "\"bf16\"", "bf16|fp32",
                  "under bf16, what gradients are all-reduced in: bf16 (as PyTorch DDP reduces a "
                  "bf16 model's), or the fp32 buffer micro-batches are summed in"),
};

class Ddp : public dshost::Strategy {
 public:
  explicit Ddp(const dshost::Services& s)
      : Strategy(s),
        bucket_elements_(s.get_int("reduce_bucket_size")),
        overlap_(s.get_bool("overlap_comm")),
        fp32_sums_(s.get_string("grad_accum_dtype") == "fp32"),
        fp32_reduce_(s.get_string("reduce_dtype") == "fp32") {}

  void setup(const std::vector<dshost::UnitParams>& units) override {
    const auto& s = services();
    layout_ = std::make_unique<dshost::FlatLayout>(units, s.world_size());
    const auto opts =
        at::TensorOptions().dtype(dshost::compute_dtype(s)).device(dshost::to_device(s.device()));
    params_ = at::zeros({layout_->padded}, opts);
    grads_ = at::zeros({layout_->padded}, opts);
    // The fp32 values, in host memory unless they are the parameters themselves. Every rank
    // builds the model from the run's seed (and init_from's file), so the masters of its
    // shard come from its own values; the broadcast keeps the compute copies bit-equal.
    at::Tensor values = opts.dtype() == at::kFloat ? params_ : at::zeros({layout_->padded});
    dshost::copy_into(*layout_, units, values);
    params_.copy_(values);
    param_id_ = s.register_buffer(dshost::to_dlpack(params_));
    grad_id_ = s.register_buffer(dshost::to_dlpack(grads_));
    s.broadcast(dshost::slice(param_id_, 0, layout_->padded), 0).wait();
    const int64_t begin = s.rank() * layout_->shard;
    master_ = std::make_unique<MasterShard>(s, params_.narrow(0, begin, layout_->shard),
                                            values.narrow(0, begin, layout_->shard));
    make_buckets();
  }

  Views param_views(int unit, int index) override {
    return {layout_->view(params_, unit, index), layout_->view(grads_, unit, index)};
  }

  // One rank has nothing to reduce or gather: no collective is launched at world size 1.
  // In fp32, each micro-batch after the first adds the one before into the sums whole; the
  // last is folded unit by unit where backward launches the all-reduces, else in step().
  void begin_micro_batch(int index, int count) override {
    const bool bf16 = grads_.scalar_type() != at::kFloat;
    const bool several_ranks = services().world_size() > 1;
    const bool summing = bf16 && count > 1 && fp32_sums_;
    in_fp32_ = summing || (bf16 && several_ranks && fp32_reduce_);
    communicate_ = index == count - 1 && several_ranks;
    fold_on_ready_ = in_fp32_ && communicate_ && overlap_;
    first_fold_ = !summing || index == 0;
    if (in_fp32_ && !sums_.defined()) {
      sums_ = at::zeros({layout_->padded}, grads_.options().dtype(at::kFloat));
      sums_id_ = services().register_buffer(dshost::to_dlpack(sums_));
    }
    if (summing && index > 0) {  // the micro-batch before, whole
      add_to_sums(0, layout_->padded, /*first=*/index == 1);
      grads_.zero_();
    }
  }

  // Unit events only launch bucket all-reduces during backward; without them every bucket
  // goes in step(), so forward/backward may be captured when none is launched there.
  bool capturable() const override { return !overlap_ || services().world_size() == 1; }

  void on_unit_event(dshost_unit_event event, int unit) override {
    if (event != DSHOST_GRADS_READY || !communicate_ || !overlap_) return;
    if (fold_on_ready_) fold(unit);
    Bucket& b = buckets_[bucket_of_unit_[unit]];
    if (--b.pending == 0) launch_ready_buckets();
  }

  double step(const dshost_step_args& args) override {
    const auto& s = services();
    if (in_fp32_) fold_the_rest();
    const at::Tensor& grads = in_fp32_ ? sums_ : grads_;
    if (s.world_size() > 1) {
      reduce();
      grads.div_(s.world_size());
    }
    const at::Tensor norm = dshost::sum_of_squares(grads).sqrt_();  // stays on the device
    const int64_t begin = s.rank() * layout_->shard;
    master_->step(grads.narrow(0, begin, layout_->shard), args, norm);
    if (s.world_size() > 1)
      s.all_gather(dshost::slice(param_id_, begin, layout_->shard),
                   dshost::slice(param_id_, 0, layout_->padded))
          .wait();
    grads_.zero_();
    reset_buckets();
    return dshost::report_norm(args, norm);
  }

  // Checkpoints: each rank saves its shard's masters with the moments it owns (every rank
  // holds the same parameters, so the shards partition the model); loading reads them back,
  // writes the parameters from the masters and all-gathers them, as after a step.
  void save(const dshost::StateIO& io) override {
    const int64_t begin = services().rank() * layout_->shard;
    dshost::save_range(io, *layout_, begin, begin + layout_->shard, master_->state());
    io.write_step_count(master_->steps());
  }

  void load(const dshost::StateIO& io) override {
    const int64_t begin = services().rank() * layout_->shard;
    dshost::load_range(io, *layout_, begin, begin + layout_->shard, master_->state());
    master_->set_steps(io.read_step_count());
    master_->write_back();
    services()
        .all_gather(dshost::slice(param_id_, begin, layout_->shard),
                    dshost::slice(param_id_, 0, layout_->padded))
        .wait();
  }

  dshost_memory_report memory() const override {
    dshost_memory_report r{};
    const at::Device compute = dshost::to_device(services().device());
    dshost::tally(dshost::bytes_of(params_), params_.device(), compute, &r.param_device,
                  &r.param_host);
    dshost::tally(dshost::bytes_of(grads_) + dshost::bytes_of(sums_), grads_.device(), compute,
                  &r.grad_device, &r.grad_host);
    dshost::tally(master_->state_bytes(), params_.device(), compute, &r.optim_device,
                  &r.optim_host);
    return r;
  }

 private:
  // A bucket is a run of consecutive units, filled from the last unit backwards until it
  // holds at least bucket_elements_ gradient elements.
  struct Bucket {
    int64_t begin = 0, end = 0;  // flat range
    int units = 0, pending = 0;
  };

  // Every bucket's all-reduce that backward did not launch, then waits for them all.
  void reduce() {
    for (auto& b : buckets_) b.pending = 0;
    launch_ready_buckets();
    for (auto& w : works_) w.wait();
    works_.clear();
  }

  // A flat range of the bf16 gradients added into the fp32 sums (copied into them where
  // nothing was summed before).
  void add_to_sums(int64_t begin, int64_t count, bool first) {
    at::Tensor sums = sums_.narrow(0, begin, count);
    const at::Tensor grads = grads_.narrow(0, begin, count);
    if (first)
      sums.copy_(grads);
    else
      sums.add_(grads);
  }

  // Unit `unit`'s gradients of the step's last micro-batch into the sums.
  void fold(int unit) {
    add_to_sums(layout_->unit_begin[unit], layout_->unit_end[unit] - layout_->unit_begin[unit],
                first_fold_);
    folded_[unit] = true;
  }

  // The last micro-batch's gradients that backward did not fold: all of them, or the units
  // that raised no grads_ready.
  void fold_the_rest() {
    if (!fold_on_ready_) {
      add_to_sums(0, layout_->padded, first_fold_);
      return;
    }
    for (size_t u = 0; u < folded_.size(); ++u)
      if (!folded_[u]) fold(static_cast<int>(u));
  }

  void make_buckets() {
    const int n = static_cast<int>(layout_->unit_begin.size());
    bucket_of_unit_.assign(n, 0);
    for (int u = n - 1; u >= 0; --u) {
      if (buckets_.empty() || buckets_.back().end - buckets_.back().begin >= bucket_elements_)
        buckets_.push_back(Bucket{layout_->unit_begin[u], layout_->unit_end[u], 0, 0});
      Bucket& b = buckets_.back();
      b.begin = layout_->unit_begin[u];
      ++b.units;
      bucket_of_unit_[u] = static_cast<int>(buckets_.size()) - 1;
    }
    buckets_.front().end = layout_->padded;  // padding rides with the last unit's bucket
    reset_buckets();
  }

  void reset_buckets() {
    for (auto& b : buckets_) b.pending = b.units;
    next_bucket_ = 0;
    folded_.assign(layout_->unit_begin.size(), false);
  }

  void launch_ready_buckets() {
    while (next_bucket_ < buckets_.size() && buckets_[next_bucket_].pending == 0) {
      const Bucket& b = buckets_[next_bucket_++];
      works_.push_back(services().all_reduce(
          dshost::slice(in_fp32_ ? sums_id_ : grad_id_, b.begin, b.end - b.begin), DSHOST_SUM));
    }
  }

  const int64_t bucket_elements_;
  const bool overlap_;
  const bool fp32_sums_, fp32_reduce_;
  std::unique_ptr<dshost::FlatLayout> layout_;
  at::Tensor params_, grads_;
  at::Tensor sums_;  // fp32, the step's gradients over bf16 ones (grad_accum_dtype, reduce_dtype)
  int32_t param_id_ = -1, grad_id_ = -1, sums_id_ = -1;
  std::unique_ptr<MasterShard> master_;
  std::vector<Bucket> buckets_;  // in launch order: the last units first
  std::vector<int> bucket_of_unit_;
  size_t next_bucket_ = 0;
  bool communicate_ = true;
  bool in_fp32_ = false;        // this step's gradients go to sums_
  bool fold_on_ready_ = false;  // the last micro-batch's are folded at each grads_ready
  bool first_fold_ = false;     // its fold copies (nothing summed in fp32 before it)
  std::vector<bool> folded_;    // by unit
  std::vector<dshost::Work> works_;
};

}  // namespace

DSHOST_STRATEGY_PLUGIN(Ddp, "ddp", "1.0.0",
                       "ZeRO stage 1: overlapped bucketed all-reduce, sharded optimizer state",
                       kOptions, sizeof(kOptions) / sizeof(kOptions[0]))
