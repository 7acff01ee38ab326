// The fused CUDA AdamW's update on a stream of its own (CUDA builds only), so that the next
// step's forward starts while later units are still updating: the update follows the step's
// gradients and norm, records an event as each unit's update is enqueued, and unit u's
// forward waits for unit u's event alone. A block's forward is compute-bound, its update
// memory-bound; only the first units' updates stay exposed (gpt-1.3b: 9.3 of a 125 ms step).
//
// Inside a capture the waits are enqueued with cudaEventWaitExternal: a micro-batch captured
// in a CUDA graph keeps them as event-wait nodes, which every replay honours, so unit events still
// launch nothing a replay would miss. A unit's gradients, which the next backward adds into, may be
// cleared on the update stream after its update, before its event.
//
// Plain C++ on this side, as cuda_adamw.h: streams are cudaStream_t passed as void*.
#pragma once

#include <dshost/plugin.hpp>

#include <cstddef>
#include <vector>

// The key of the strategies that overlap their update so (ddp, zero2).
#define DSHOST_OVERLAP_UPDATE_OPTION                                                       \
  DSHOST_OPTION("overlap_update", DSHOST_OPTION_BOOL, "true", nullptr,                     \
                "on a GPU, update each unit on a stream of its own while the next step's " \
                "forward starts (false: the whole update before the next step)")

namespace dshost_zero {

class UpdateStream {
 public:
  // For `units` units on CUDA device `device`. Throws dshost::Error (DSHOST_INTERNAL) where
  // CUDA fails, as every member does.
  UpdateStream(int device, int units);
  // Waits for the update's work.
  ~UpdateStream();
  UpdateStream(const UpdateStream&) = delete;
  UpdateStream& operator=(const UpdateStream&) = delete;

  // After unit u's update, `bytes` at `data` are zeroed on the update stream.
  void clear_after_update(int u, void* data, size_t bytes);
  // Work enqueued on the returned update stream from now on follows the work enqueued on
  // `compute` so far.
  void* begin(void* compute);
  // Unit u's update is enqueued: its memory to clear is zeroed, its event recorded.
  void unit_updated(int u);
  // Work enqueued on `waiter` from now on follows unit u's update, or every update so far.
  void wait_for_unit(void* waiter, int u) const;
  void wait_for_all(void* waiter) const;

 private:
  struct Clear {
    void* data = nullptr;
    size_t bytes = 0;
  };

  int device_;
  void* stream_ = nullptr;
  void* begun_ = nullptr;       // the event begin() records on the compute stream
  std::vector<void*> updated_;  // [unit] events
  std::vector<Clear> clear_;    // [unit]
  int last_ = -1;               // the unit whose update was enqueued last
};

}  // namespace dshost_zero
