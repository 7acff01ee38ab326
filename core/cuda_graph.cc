#include "core/cuda_graph.h"

#include "core/error.h"

#if DSHOST_CUDA
#include <ATen/autocast_mode.h>
#include <ATen/cuda/CUDAEvent.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace dshost {

#if DSHOST_CUDA
struct MicroBatchGraph::State {
  explicit State(at::Device device) : side(c10::cuda::getStreamFromPool(false, device.index())) {}
  c10::cuda::CUDAStream side;
  at::cuda::CUDAGraph graph;
  int calls = 0;
  bool captured = false;
};

namespace {

// Runs `work` on `side`, ordered after what the current stream has queued (the batch just
// filled) and before what it queues next.
void on_side_stream(c10::cuda::CUDAStream side, const std::function<void()>& work) {
  const c10::cuda::CUDAStream current = c10::cuda::getCurrentCUDAStream(side.device_index());
  at::cuda::CUDAEvent queued;
  queued.record(current);
  queued.block(side);
  {
    const c10::cuda::CUDAStreamGuard guard(side);
    work();
  }
  at::cuda::CUDAEvent done;
  done.record(side);
  done.block(current);
}

}  // namespace

MicroBatchGraph::MicroBatchGraph(at::Device device) : state_(std::make_unique<State>(device)) {}

void MicroBatchGraph::run(const std::function<void()>& forward_backward) {
  State& s = *state_;
  if (s.captured) return s.graph.replay();
  if (s.calls++ < kWarmup) return on_side_stream(s.side, forward_backward);
  // Autocast's cache of bf16 weight copies would hand the graph's memory to later eager
  // code; PyTorch's graph capture turns it off too.
  const bool cache = at::autocast::is_autocast_cache_enabled();
  at::autocast::set_autocast_cache_enabled(false);
  try {
    on_side_stream(s.side, [&] {
      s.graph.capture_begin();
      forward_backward();
      s.graph.capture_end();
    });
  } catch (const c10::Error& e) {
    at::autocast::set_autocast_cache_enabled(cache);
    throw UserError(cat("train.cuda_graph: the model's forward/backward cannot be captured in a "
                        "CUDA graph (", e.what_without_backtrace(),
                        "); set train.cuda_graph = false"), 1);
  }
  at::autocast::set_autocast_cache_enabled(cache);
  s.captured = true;
  s.graph.replay();  // capturing recorded the micro-batch without running it
}

bool MicroBatchGraph::captured() const { return state_->captured; }
#else
struct MicroBatchGraph::State {};
MicroBatchGraph::MicroBatchGraph(at::Device) { throw UserError("train.cuda_graph needs a CUDA build", 2); }
void MicroBatchGraph::run(const std::function<void()>& forward_backward) { forward_backward(); }
bool MicroBatchGraph::captured() const { return false; }
#endif

MicroBatchGraph::~MicroBatchGraph() = default;

}  // namespace dshost
