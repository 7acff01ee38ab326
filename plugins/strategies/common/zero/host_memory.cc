#include "host_memory.h"

#include <string>

namespace dshost_zero {
namespace {

// What the bytes hold, for the refusal; "" where nothing lives on the host.
std::string what_lives_on_host(const Options& o, bool on_gpu) {
  if (!on_gpu) return "parameters, gradient shard, master and AdamW moments";
  std::string what = o.offload_optimizer ? "gradient shard, master and AdamW moments" : "";
  if (param_shard_on_host(o))
    what += what.empty() ? "the parameter shard" : " and the parameter shard";
  return what;
}

}  // namespace

int64_t pinned_bytes(int64_t bytes, bool pinned) {
  if (!pinned) return bytes;
  int64_t rounded = 1;
  while (rounded < bytes) rounded <<= 1;
  return rounded;
}

HostBytes host_bytes(const Options& o, const HostMemoryNeed& n) {
  const int64_t copies = o.delayed_update ? 2 : 1;  // DPU's second gradient and parameter shards
  const int64_t grad_bytes = o.grad_dtype == at::kFloat ? 4 : 2;
  const bool pinned = o.pin_memory && n.on_gpu;
  HostBytes b;
  if (!n.on_gpu)
    b.per_rank = 12 * n.shard + copies * grad_bytes * n.shard +
                 n.compute_bytes * (o.stage == 3 ? copies * n.shard : n.padded_model) +
                 (o.stage == 2 && o.delayed_update ? copies * n.compute_bytes * n.shard : 0);
  else
    b.per_rank =
        (o.offload_optimizer ? 12 * n.shard + copies * pinned_bytes(grad_bytes * n.shard, pinned)
                             : 0) +
        (param_shard_on_host(o) ? copies * pinned_bytes(n.compute_bytes * n.shard, pinned) : 0);
  b.moments = n.fused_adamw && (o.offload_optimizer || !n.on_gpu) ? 8 * n.shard : 0;
  return b;
}

void check_host_memory(const Options& o, const HostMemoryNeed& n, int64_t available_now) {
  if (n.on_gpu && !o.offload_optimizer && !o.offload_param) return;
  const HostBytes b = host_bytes(o, n);
  const bool setup_fits = (b.per_rank - b.moments) * n.local_ranks <= available_now;
  const int64_t needed = b.per_rank * n.local_ranks;
  const int64_t available = setup_fits ? available_now + n.released * n.local_ranks : available_now;
  if (setup_fits && needed <= available) return;
  const auto gib = [](int64_t bytes) {
    return std::to_string(bytes / (1 << 20) / 1024.0).substr(0, 5);
  };
  throw dshost::Error(
      std::string(o.stage == 3 ? "zero3-offload" : "zero2") + " needs " + gib(needed) +
          " GiB of host memory on this node (" + gib(b.per_rank) + " GiB for each of its " +
          std::to_string(n.local_ranks) + " ranks: " + what_lives_on_host(o, n.on_gpu) +
          "), but only " + gib(available) + " GiB is available. Use more nodes, a smaller model" +
          (o.offload_optimizer && n.on_gpu ? ", a lower offload_optimizer_ratio" : "") +
          (o.offload_param ? ", offload_param_device = \"none\"" : "") +
          (o.pin_memory ? ", pin_memory = false (pinned buffers round up to a power of two)" : "") +
          ", or free host memory.",
      DSHOST_OUT_OF_MEMORY);
}

}  // namespace dshost_zero
