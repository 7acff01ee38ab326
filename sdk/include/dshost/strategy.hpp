// Strategy plugins: derive from dshost::Strategy and export with DSHOST_STRATEGY_PLUGIN.
// Also the pieces every sharding strategy needs: a flat layout of the model's units and
// AdamW / SGD over flat fp32 buffers.
#pragma once

#include <dshost/adamw.hpp>
#include <dshost/step_scalars.hpp>
#include <dshost/torch.hpp>

#include <c10/core/DeviceGuard.h>
#if __has_include(<ATen/ops/_fused_adamw.h>) && __has_include(<ATen/ops/_fused_sgd.h>)
#include <ATen/ops/_fused_adamw.h>  // LibTorch 2: one fused CUDA kernel each for AdamW and SGD
#include <ATen/ops/_fused_sgd.h>
#define DSHOST_FUSED_OPTIMIZERS 1
#endif

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace dshost {

struct UnitParams {
  std::string name;
  std::vector<at::Tensor> values;  // borrowed views of the model's initial parameters
};

// The model's parameters laid end to end in forward order, unit by unit. Each view keeps
// its parameter's strides, so a channels-last convolution weight stays channels-last inside
// the flat buffer. Each parameter starts a multiple of kParamAlignment elements (16 bytes or
// more) into its unit, and in the whole layout units end on such a boundary too, so every
// view of a unit's own buffer or of the whole flat buffer is as aligned as a tensor of its
// own (FSDP pads its flat parameters' members the same way): libraries choose kernels by
// their operands' alignment, and cuDNN's channels-last depthwise convolution (torch 2.11)
// faults on a 2-byte aligned weight. The gaps are padding, zero like the rest.
//
// Sharding, two ways:
//  - whole (pad_each_unit = false): the total is padded to a multiple of world and rank r
//    owns the contiguous range [r * shard, (r + 1) * shard) (ddp).
//  - per unit (pad_each_unit = true): each unit is padded to a multiple of world and split
//    into world chunks; rank r owns chunk r of every unit, so one unit's collectives need no
//    other unit (zero2, zero3). The rank's chunks, end to end, form its shard:
//    unit u's chunk sits at shard_begin[u] in it.
struct FlatLayout {
  struct Param {
    int64_t offset, numel;
    std::vector<int64_t> shape, strides;
  };
  std::vector<std::vector<Param>> params;     // [unit][index]
  std::vector<int64_t> unit_begin, unit_end;  // ranges in the flat buffer, padding included
  std::vector<int64_t> chunk, shard_begin;    // per unit (per-unit sharding only)
  int64_t total = 0;                          // elements of real parameters
  int64_t padded = 0;                         // elements of the flat buffer
  int64_t shard = 0;                          // padded / world: elements each rank owns

  static constexpr int64_t kParamAlignment = 16;

  FlatLayout(const std::vector<UnitParams>& units, int world, bool pad_each_unit = false) {
    int64_t end = 0;
    for (const auto& unit : units) {
      const int64_t begin = end;
      unit_begin.push_back(begin);
      std::vector<Param> ps;
      for (const auto& v : unit.values) {
        if (!v.is_non_overlapping_and_dense())
          throw Error(unit.name + ": a parameter is not dense in memory", DSHOST_INTERNAL);
        end = begin + round_up(end - begin, kParamAlignment);
        ps.push_back(Param{end, v.numel(), v.sizes().vec(), v.strides().vec()});
        end += v.numel();
        total += v.numel();
      }
      params.push_back(std::move(ps));
      if (pad_each_unit) {
        end = begin + round_up(end - begin, world);
        shard_begin.push_back(shard);
        chunk.push_back((end - begin) / world);
        shard += chunk.back();
      } else {
        end = round_up(end, kParamAlignment);
      }
      unit_end.push_back(end);
    }
    padded = round_up(end, world);
    if (!pad_each_unit) shard = padded / world;
  }

  // The parameters' elements inside flat range [begin, end), padding skipped: which
  // parameter, where the piece starts in it (memory order) and in the flat buffer.
  struct Piece {
    int unit, index;
    int64_t param_offset, flat_offset, count;
  };
  std::vector<Piece> pieces(int64_t begin, int64_t end) const {
    std::vector<Piece> out;
    for (int u = 0; u < units(); ++u) {
      if (unit_end[u] <= begin || unit_begin[u] >= end) continue;
      for (size_t i = 0; i < params[u].size(); ++i) {
        const Param& p = params[u][i];
        const int64_t from = std::max(begin, p.offset), to = std::min(end, p.offset + p.numel);
        if (from < to) out.push_back({u, static_cast<int>(i), from - p.offset, from, to - from});
      }
    }
    return out;
  }

  int units() const { return static_cast<int>(unit_begin.size()); }
  int64_t unit_size(int u) const { return unit_end[u] - unit_begin[u]; }

  at::Tensor view(const at::Tensor& flat, int unit, int index) const {
    const Param& p = params.at(unit).at(index);
    return flat.as_strided(p.shape, p.strides, flat.storage_offset() + p.offset);
  }
  // The same parameter inside a buffer that holds unit `unit` alone.
  at::Tensor unit_view(const at::Tensor& unit_buffer, int unit, int index) const {
    const Param& p = params.at(unit).at(index);
    return unit_buffer.as_strided(p.shape, p.strides,
                                  unit_buffer.storage_offset() + p.offset - unit_begin[unit]);
  }

  static int64_t round_up(int64_t n, int64_t multiple) {
    return (n + multiple - 1) / multiple * multiple;
  }
};

// The host's checkpoint writer or reader (dshost_state_io) for LibTorch tensors.
class StateIO {
 public:
  explicit StateIO(const dshost_state_io* io) : io_(io) {}

  // Elements [offset, offset + t.numel()) of parameter (unit, index)'s state `key`.
  void write(int unit, int index, const char* key, int64_t offset, const at::Tensor& t) const {
    const dshost_state_slice where{sizeof(dshost_state_slice), unit, index, key, offset};
    const at::Tensor data = t.contiguous();
    DLManagedTensor* dl = to_dlpack(data);
    dshost_error err{sizeof(dshost_error), {}};
    const dshost_status st = io_->write(io_->context, &where, &dl->dl_tensor, &err);
    dl->deleter(dl);
    if (st != DSHOST_OK) throw Error(err.message, st);
  }
  void read(int unit, int index, const char* key, int64_t offset, const at::Tensor& t) const {
    const dshost_state_slice where{sizeof(dshost_state_slice), unit, index, key, offset};
    const at::Tensor data = t.is_contiguous() ? t : at::empty(t.sizes(), t.options());
    DLManagedTensor* dl = to_dlpack(data);
    dshost_error err{sizeof(dshost_error), {}};
    const dshost_status st = io_->read(io_->context, &where, &dl->dl_tensor, &err);
    dl->deleter(dl);
    if (st != DSHOST_OK) throw Error(err.message, st);
    if (!data.is_same(t)) t.copy_(data);
  }
  // A tensor of the strategy as a whole ("optimizer.step"), written and read whole.
  void write(const char* key, const at::Tensor& t) const { write(-1, 0, key, 0, t); }
  void read(const char* key, const at::Tensor& t) const { read(-1, 0, key, 0, t); }
  // The optimizer's step count ("optimizer.step").
  void write_step_count(int64_t steps) const {
    write("optimizer.step", at::full({1}, steps, at::kLong));
  }
  int64_t read_step_count() const {
    const at::Tensor steps = at::zeros({1}, at::kLong);
    read("optimizer.step", steps);
    return steps.item<int64_t>();
  }

 private:
  const dshost_state_io* io_;
};

// A flat range's state: named tensors (values, optimizer moments) whose element 0 is flat
// element `flat_begin`, saved or loaded per parameter piece.
using NamedState = std::vector<std::pair<std::string, at::Tensor>>;

inline void save_range(const StateIO& io, const FlatLayout& layout, int64_t flat_begin,
                       int64_t flat_end, const NamedState& state) {
  for (const auto& piece : layout.pieces(flat_begin, flat_end))
    for (const auto& [key, t] : state)
      io.write(piece.unit, piece.index, key.c_str(), piece.param_offset,
               t.narrow(0, piece.flat_offset - flat_begin, piece.count));
}

inline void load_range(const StateIO& io, const FlatLayout& layout, int64_t flat_begin,
                       int64_t flat_end, const NamedState& state) {
  at::NoGradGuard no_grad;
  for (const auto& piece : layout.pieces(flat_begin, flat_end))
    for (const auto& [key, t] : state)
      io.read(piece.unit, piece.index, key.c_str(), piece.param_offset,
              t.narrow(0, piece.flat_offset - flat_begin, piece.count));
}

// Bytes of host memory this process may still take: MemAvailable, or less where a cgroup
// (v2) limit is closer.
inline int64_t available_host_memory() {
  int64_t available = INT64_MAX;
  if (FILE* f = std::fopen("/proc/meminfo", "r")) {
    char key[64];
    long long kib = 0;
    while (std::fscanf(f, "%63s %lld kB", key, &kib) == 2)
      if (std::string(key) == "MemAvailable:") available = kib * 1024;
    std::fclose(f);
  }
  long long limit = 0, current = 0;
  FILE* max_file = std::fopen("/sys/fs/cgroup/memory.max", "r");
  FILE* current_file = std::fopen("/sys/fs/cgroup/memory.current", "r");
  if (max_file && current_file && std::fscanf(max_file, "%lld", &limit) == 1 &&
      std::fscanf(current_file, "%lld", &current) == 1)
    available = std::min<int64_t>(available, limit - current);
  if (max_file) std::fclose(max_file);
  if (current_file) std::fclose(current_file);
  return available;
}

// bf16 under mixed precision, else fp32: the dtype of the parameters and gradients the
// model computes with. Masters and optimizer state stay fp32.
inline at::ScalarType compute_dtype(const Services& s) {
  return s.precision() == DSHOST_BF16 ? at::kBFloat16 : at::kFloat;
}

// Frees (bytes = 0) or reallocates the memory behind `t` while every view of it stays
// valid: views, and tensors autograd saved, see the new memory once it is refilled. This is
// how a sharded strategy drops a unit's full parameters between uses (as FSDP does).
inline void resize_storage(const at::Tensor& t, size_t bytes) {
  c10::StorageImpl* storage = t.storage().unsafeGetStorageImpl();
  if (storage->nbytes() == bytes) return;
  // The CUDA allocator allocates on the current device, which on rank 1 need not be the
  // storage's (memory landing on GPU 0 under a cuda:1 tensor hung NCCL on 2 GPUs).
  const c10::DeviceGuard on_its_device(storage->device());
  storage->set_data_ptr_noswap(bytes == 0 ? at::DataPtr(nullptr, storage->device())
                                          : storage->allocator()->allocate(bytes));
  storage->set_nbytes(bytes);
}

// Copies each unit's initial values into `flat` at the layout's offsets.
inline void copy_into(const FlatLayout& layout, const std::vector<UnitParams>& units,
                      at::Tensor& flat) {
  at::NoGradGuard no_grad;
  for (size_t u = 0; u < units.size(); ++u)
    for (size_t i = 0; i < units[u].values.size(); ++i)
      layout.view(flat, static_cast<int>(u), static_cast<int>(i)).copy_(units[u].values[i]);
}

// The squared L2 norm of a flat buffer as a 0-dim double tensor on its device, accurate at
// any length: ATen accumulates a norm in the input's precision, which over 10^7 fp32
// elements drifts by 1e-4 (enough to change every clipped step), so rows of 2^16 elements
// are normed in fp32 (a bf16 buffer's too) and combined in double, as PyTorch's
// clip_grad_norm_ combines per-parameter norms.
inline at::Tensor sum_of_squares(const at::Tensor& flat) {
  constexpr int64_t kRow = 1 << 16;
  const int64_t rows = flat.numel() / kRow, rest = flat.numel() - rows * kRow;
  at::Tensor total = at::zeros({}, flat.options().dtype(at::kDouble));
  const auto squared_norms = [](const at::Tensor& t, int64_t dim) {  // over dim, in double
    return at::norm(t, 2, {dim}, /*keepdim=*/false, at::kFloat).to(at::kDouble).square();
  };
  if (rows > 0) total += squared_norms(flat.narrow(0, 0, rows * kRow).view({rows, kRow}), 1).sum();
  if (rest > 0) total += squared_norms(flat.narrow(0, rows * kRow, rest), 0);
  return total;
}

// Clipping as torch.nn.utils.clip_grad_norm_: gradients scaled by
// min(1, max_norm / (norm + 1e-6)), `norm` their global L2 norm; max_norm 0 = no clipping.
inline double clip_scale(double norm, double max_norm) {
  return max_norm > 0 ? std::min(1.0, max_norm / (norm + 1e-6)) : 1.0;
}

// The scale on the device, without a host synchronisation (norm: a one-element double tensor).
inline at::Tensor clip_scale(const at::Tensor& norm, double max_norm) {
  return at::full_like(norm, max_norm).div_(norm + 1e-6).clamp_max_(1.0);
}

inline void clip_by_norm(const at::Tensor& grads, const at::Tensor& norm, double max_norm) {
  if (max_norm > 0) grads.mul_(clip_scale(norm, max_norm).reshape({}));
}

// The scale as a divisor, fp32 on the device: what the fused AdamW kernels divide each
// gradient by as they read it.
inline at::Tensor clip_divisor(const at::Tensor& norm, double max_norm) {
  return clip_scale(norm, max_norm).reciprocal_().to(at::kFloat);
}

// Whether the host asked (ABI 1.5) to drop the update of a step whose norm is not finite.
inline bool skip_nonfinite(const dshost_step_args& args) {
  return args.struct_size >= DSHOST_STRUCT_SIZE(dshost_step_args, skip_nonfinite) &&
         args.skip_nonfinite != 0;
}

// AdamW (decoupled weight decay, as torch.optim.AdamW) or SGD with momentum, updating a
// flat fp32 parameter range from a flat fp32 gradient range of the same length.
class FlatOptimizer {
 public:
  FlatOptimizer(const dshost_optimizer_config& config, int64_t numel, at::Device device)
      : c_(config), device_(device) {
    const auto opts = at::TensorOptions().dtype(at::kFloat).device(device);
    if (c_.kind == DSHOST_ADAMW) {
      exp_avg_ = at::zeros({numel}, opts);
      exp_avg_sq_ = at::zeros({numel}, opts);
    } else if (c_.momentum != 0) {
      momentum_ = at::zeros({numel}, opts);
    }
  }

  // One step. With max_norm > 0 the gradients are first clipped by the global `norm` (a
  // one-element double tensor on the device), as clip_by_norm clips: inside PyTorch's fused
  // kernels where they run (their grad_scale divides each gradient as it is read, sparing a
  // pass over them), else by clip_by_norm. With skip_nonfinite a norm that is NaN or
  // infinite drops the whole update: parameters, state and step count stay as they were.
  // The fused kernels decide that on the device (their found_inf); elsewhere the norm is
  // read on the host, which costs nothing on the CPU (a CUDA LibTorch without the fused
  // kernels would wait for the device there).
  void step(at::Tensor param, const at::Tensor& grad, double lr, const at::Tensor& norm = {},
            double max_norm = 0, bool skip_nonfinite = false) {
    at::NoGradGuard no_grad;
    const bool clip = max_norm > 0 && norm.defined();
#ifdef DSHOST_FUSED_OPTIMIZERS
    if (param.is_cuda())
      return fused_step(
          param, grad, lr, clip ? clip_divisor(norm, max_norm) : at::Tensor(),
          skip_nonfinite ? at::isfinite(norm).logical_not().to(at::kFloat) : at::Tensor());
#endif
    if (skip_nonfinite && !std::isfinite(norm.item<double>())) return;
    ++steps_;
    if (clip) clip_by_norm(grad, norm, max_norm);
    if (c_.kind == DSHOST_ADAMW) {
      param.mul_(1.0 - lr * c_.weight_decay);
      exp_avg_.mul_(c_.beta1).add_(grad, 1.0 - c_.beta1);
      exp_avg_sq_.mul_(c_.beta2).addcmul_(grad, grad, 1.0 - c_.beta2);
      const double bias1 = bias_correction(c_.beta1, static_cast<double>(steps_));
      const double bias2 = bias_correction(c_.beta2, static_cast<double>(steps_));
      const at::Tensor denom = (exp_avg_sq_.sqrt() / std::sqrt(bias2)).add_(c_.eps);
      param.addcdiv_(exp_avg_, denom, -lr / bias1);
      return;
    }
    at::Tensor g = c_.weight_decay != 0 ? grad.add(param, c_.weight_decay) : grad;
    if (momentum_.defined()) {
      momentum_.mul_(c_.momentum).add_(g);  // the first step's is g: the buffer starts at 0
      g = momentum_;
    }
    param.add_(g, -lr);
  }

  // The state a checkpoint keeps: the moments (or momentum) by their PyTorch names, each
  // as long as the range this optimizer updates, and the steps taken.
  NamedState state() const {
    NamedState out;
    if (exp_avg_.defined()) out = {{"exp_avg", exp_avg_}, {"exp_avg_sq", exp_avg_sq_}};
    if (momentum_.defined()) out = {{"momentum", momentum_}};
    return out;
  }
  // Steps taken (a skipped one not counted): a fused kernel's count is read from the device.
  int64_t steps() const {
    return step_on_device_.defined() ? static_cast<int64_t>(step_on_device_.item<double>())
                                     : steps_;
  }
  void set_steps(int64_t steps) {
    steps_ = steps;
    if (step_on_device_.defined()) step_on_device_.fill_(static_cast<double>(steps));
  }

  // Bytes of optimizer state held, and where.
  at::Device device() const { return device_; }
  int64_t state_bytes() const {
    int64_t n = 0;
    for (const auto* t : {&exp_avg_, &exp_avg_sq_, &momentum_})
      if (t->defined()) n += t->numel() * static_cast<int64_t>(t->element_size());
    return n;
  }

 private:
#ifdef DSHOST_FUSED_OPTIMIZERS
  // PyTorch's fused AdamW or SGD kernel (AdamW(fused=True), SGD(fused=True)) over the whole
  // flat range: one pass over memory instead of the nine of the loop above, and what the
  // PyTorch peer of bench/gpu uses. The same update up to rounding (AdamW's uses lerp for
  // the first moment; tests/reference_test.cc bounds the difference). The step count lives
  // on the device, where the kernel reads it and a skipped step (found_inf = 1) does not
  // advance it.
  void fused_step(at::Tensor& param, const at::Tensor& grad, double lr, const at::Tensor& divisor,
                  const at::Tensor& found_inf) {
    if (!step_on_device_.defined())
      step_on_device_ = at::full({1}, static_cast<double>(steps_),
                                 at::TensorOptions().dtype(at::kFloat).device(device_));
    if (found_inf.defined())
      step_on_device_.sub_(found_inf - 1.0);
    else
      step_on_device_.add_(1.0);
    const auto optional = [](const at::Tensor& t) {
      return t.defined() ? std::optional<at::Tensor>(t) : std::nullopt;
    };
    if (c_.kind == DSHOST_ADAMW) {
      at::_fused_adamw_({param}, {grad}, {exp_avg_}, {exp_avg_sq_}, {}, {step_on_device_}, lr,
                        c_.beta1, c_.beta2, c_.weight_decay, c_.eps, /*amsgrad=*/false,
                        /*maximize=*/false, optional(divisor), optional(found_inf));
      return;
    }
    const std::vector<at::Tensor> momentum =
        momentum_.defined() ? std::vector<at::Tensor>{momentum_} : std::vector<at::Tensor>{};
    at::_fused_sgd_({param}, {grad}, momentum, c_.weight_decay, c_.momentum, lr, /*dampening=*/0.0,
                    /*nesterov=*/false, /*maximize=*/false, /*is_first_step=*/false,
                    optional(divisor), optional(found_inf));
  }
#endif
  at::Tensor step_on_device_;  // the fused kernels' step count, fp32 as theirs

  dshost_optimizer_config c_;
  at::Device device_;
  int64_t steps_ = 0;
  at::Tensor exp_avg_, exp_avg_sq_, momentum_;
};

inline int64_t bytes_of(const at::Tensor& t) {
  return t.defined() ? t.numel() * static_cast<int64_t>(t.element_size()) : 0;
}

// Adds `bytes` held on `where` to *device when that is where the rank computes (the CPU
// itself on a CPU run), else to *host.
inline void tally(int64_t bytes, at::Device where, at::Device compute, int64_t* device,
                  int64_t* host) {
  *(where == compute ? device : host) += bytes;
}

class Strategy {
 public:
  explicit Strategy(const Services& services) : services_(services) {}
  virtual ~Strategy() = default;

  struct Views {
    at::Tensor value, grad;
  };
  virtual void setup(const std::vector<UnitParams>& units) = 0;
  virtual Views param_views(int unit, int index) = 0;
  virtual void begin_micro_batch(int /*index*/, int /*count*/) {}
  virtual void on_unit_event(dshost_unit_event /*event*/, int /*unit*/) {}
  // Returns the global gradient norm before clipping, or NaN after report_norm put it on
  // the device.
  virtual double step(const dshost_step_args& args) = 0;
  virtual dshost_memory_report memory() const = 0;
  // Checkpoints (see dshost_strategy_api.save / load). By default a strategy cannot.
  virtual void save(const StateIO& /*io*/) {
    throw Error("this strategy cannot save checkpoints", DSHOST_UNSUPPORTED);
  }
  virtual void load(const StateIO& /*io*/) {
    throw Error("this strategy cannot load checkpoints", DSHOST_UNSUPPORTED);
  }
  // Whether forward/backward may be captured in a CUDA graph and replayed without unit
  // events (see dshost_strategy_api.capturable). By default not.
  virtual bool capturable() const { return false; }

  const Services& services() const { return services_; }

 private:
  Services services_;
};

template <class S>
S* as_strategy(dshost_strategy* s) {
  return reinterpret_cast<S*>(s);
}

// The C table for strategy class S.
template <class S>
const dshost_strategy_api* strategy_api() {
  static const dshost_strategy_api api = {
      sizeof(dshost_strategy_api),
      [](const dshost_services* t, dshost_strategy** out, dshost_error* err) {
        return guarded(err, [&] { *out = reinterpret_cast<dshost_strategy*>(new S(Services(t))); });
      },
      [](dshost_strategy* s) { delete as_strategy<S>(s); },
      [](dshost_strategy* s, const dshost_unit_params* units, int32_t count, dshost_error* err) {
        return guarded(err, [&] {
          std::vector<UnitParams> copy;
          for (int32_t u = 0; u < count; ++u) {
            const dshost_unit_params& given = element(units, static_cast<size_t>(u));
            UnitParams unit{given.name, {}};
            for (int32_t i = 0; i < given.count; ++i)
              unit.values.push_back(borrow(given.values[i]));
            copy.push_back(std::move(unit));
          }
          as_strategy<S>(s)->setup(copy);
        });
      },
      [](dshost_strategy* s, int32_t unit, int32_t index, DLManagedTensor** value,
         DLManagedTensor** grad, dshost_error* err) {
        return guarded(err, [&] {
          const auto views = as_strategy<S>(s)->param_views(unit, index);
          *value = to_dlpack(views.value);
          *grad = to_dlpack(views.grad);
        });
      },
      [](dshost_strategy* s, int32_t index, int32_t count, dshost_error* err) {
        return guarded(err, [&] { as_strategy<S>(s)->begin_micro_batch(index, count); });
      },
      [](dshost_strategy* s, dshost_unit_event event, int32_t unit, dshost_error* err) {
        return guarded(err, [&] { as_strategy<S>(s)->on_unit_event(event, unit); });
      },
      [](dshost_strategy* s, const dshost_step_args* args, dshost_step_stats* out,
         dshost_error* err) {
        return guarded(err, [&] {
          out->struct_size = sizeof(dshost_step_stats);
          out->grad_norm = as_strategy<S>(s)->step(*args);
        });
      },
      [](dshost_strategy* s, dshost_memory_report* out, dshost_error* err) {
        return guarded(err, [&] {
          *out = as_strategy<S>(s)->memory();
          out->struct_size = sizeof(dshost_memory_report);
        });
      },
      [](dshost_strategy* s, const dshost_state_io* io, dshost_error* err) {
        return guarded(err, [&] { as_strategy<S>(s)->save(StateIO(io)); });
      },
      [](dshost_strategy* s, const dshost_state_io* io, dshost_error* err) {
        return guarded(err, [&] { as_strategy<S>(s)->load(StateIO(io)); });
      },
      [](dshost_strategy* s, int32_t* out, dshost_error* err) {
        return guarded(err, [&] { *out = as_strategy<S>(s)->capturable() ? 1 : 0; });
      },
  };
  return &api;
}

}  // namespace dshost

#define DSHOST_STRATEGY_PLUGIN(CLASS, NAME, VERSION, DESCRIPTION, OPTIONS, OPTION_COUNT)       \
  DSHOST_DEFINE_PLUGIN(DSHOST_KIND_STRATEGY, NAME, VERSION, DESCRIPTION, DSHOST_TORCH_VERSION, \
                       OPTIONS, OPTION_COUNT, ::dshost::strategy_api<CLASS>())
