#include "core/cuda_graph.h"

#include "core/error.h"

#if DSHOST_CUDA
#include <ATen/autocast_mode.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace dshost {

#if DSHOST_CUDA
struct MicroBatchGraph::State {
  at::cuda::CUDAGraph graph;
  int calls = 0;
  bool captured = false;
};

MicroBatchGraph::MicroBatchGraph(at::Device device) : state_(std::make_unique<State>()) {
  if (c10::cuda::getCurrentCUDAStream(device.index()) ==
      c10::cuda::getDefaultCUDAStream(device.index()))
    throw UserError(
        "train.cuda_graph: the rank computes on the default stream, which cannot be captured", 1);
}

void MicroBatchGraph::run(const std::function<void()>& forward_backward) {
  State& s = *state_;
  if (s.captured) return s.graph.replay();
  if (s.calls++ < kWarmup) return forward_backward();
  // Autocast's cache of bf16 weight copies would hand the graph's memory to later eager
  // code; PyTorch's graph capture turns it off too.
  const bool cache = at::autocast::is_autocast_cache_enabled();
  at::autocast::set_autocast_cache_enabled(false);
  try {
    s.graph.capture_begin();
    forward_backward();
    s.graph.capture_end();
  } catch (const c10::Error& e) {
    at::autocast::set_autocast_cache_enabled(cache);
    throw UserError(cat("train.cuda_graph: the model's forward/backward cannot be captured in a "
                        "CUDA graph (",
                        e.what_without_backtrace(), "); set train.cuda_graph = false"),
                    1);
  }
  at::autocast::set_autocast_cache_enabled(cache);
  s.captured = true;
  s.graph.replay();  // capturing recorded the micro-batch without running it
}

#else
struct MicroBatchGraph::State {};
MicroBatchGraph::MicroBatchGraph(at::Device) {
  throw UserError("train.cuda_graph needs a CUDA build", 2);
}
void MicroBatchGraph::run(const std::function<void()>& forward_backward) { forward_backward(); }
#endif

MicroBatchGraph::~MicroBatchGraph() = default;

}  // namespace dshost
