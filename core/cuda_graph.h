// CUDA graph capture of a micro-batch's forward and backward (train.cuda_graph).
//
// A training micro-batch launches the same kernels on the same memory every time: the
// host's batch buffers, the strategy's parameter and gradient buffers, the loss slot. Once
// captured, one graph launch replaces hundreds of kernel launches, which is what bounds
// small convolutional models at small batches (mobilenet_v2, efficientnet_b0 at 16 to 64:
// 2.3x to 4.4x PyTorch eager with it on an H100, bench/results/gpu_perf.md).
//
// The first kWarmup calls run eagerly (lazy initialisation: cuBLAS workspaces, cuDNN's
// algorithm search, allocator growth must not happen inside a capture), the next is
// captured on the rank's stream and replayed, every later call is a replay. Kernels of a
// replay read whatever the batch buffers hold when it runs, so the caller fills them before
// each call as before. The rank must compute on a stream of its own (the worker sets one):
// the legacy default stream cannot be captured, and autograd accumulates gradients on the
// stream that was current when the model's parameters were bound.
#pragma once

#include <ATen/ATen.h>

#include <functional>
#include <memory>

namespace dshost {

class MicroBatchGraph {
 public:
  explicit MicroBatchGraph(at::Device device);
  ~MicroBatchGraph();
  MicroBatchGraph(const MicroBatchGraph&) = delete;
  MicroBatchGraph& operator=(const MicroBatchGraph&) = delete;

  // Runs `forward_backward` (eagerly, or captured), or replays the captured graph.
  void run(const std::function<void()>& forward_backward);

  static constexpr int kWarmup = 3;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace dshost
