// Host memory for what a ZeRO strategy keeps there (offloaded state on a GPU run; everything
// on a CPU run), checked before anything is allocated: a clear refusal instead of the
// kernel's OOM killer halfway through setup.
#pragma once

#include "options.h"

#include <cstdint>

namespace dshost_zero {

struct HostMemoryNeed {
  int64_t shard = 0;         // elements of the rank's shard that live in host memory
  int64_t padded_model = 0;  // elements of the whole padded model (stage 2 keeps it whole)
  bool on_gpu = false;
  int64_t compute_bytes = 4;  // of an element in the model's dtype
  bool fused_adamw = false;
  int64_t local_ranks = 1;
  // Host bytes of the model's initial values on each rank, which the model releases when it
  // binds the strategy's views.
  int64_t released = 0;
};

// Bytes one rank keeps in host memory, and of them the fused AdamW's moments, written only
// at the first step.
struct HostBytes {
  int64_t per_rank = 0, moments = 0;
};
HostBytes host_bytes(const Options& o, const HostMemoryNeed& n);

// Twice: what setup writes (all but the moments) against `available` now, while the host
// still holds the model's initial values; and all of it against that plus those values.
// Throws dshost::Error (DSHOST_OUT_OF_MEMORY) naming the need, what is available, and what to
// change.
void check_host_memory(const Options& o, const HostMemoryNeed& n, int64_t available);

// Host bytes a buffer of `bytes` takes where it is pinned: LibTorch's pinned-memory allocator
// rounds every block up to a power of two (a 23 GB gradient shard takes 32 GB).
int64_t pinned_bytes(int64_t bytes, bool pinned);

}  // namespace dshost_zero
