// Rendezvous and collectives for one rank, over c10d: a TCPStore on MASTER_ADDR:MASTER_PORT,
// ProcessGroupGloo for CPU tensors and ProcessGroupNCCL for CUDA tensors. Strategies reach
// this only through the ABI's registered buffers and slices.
#pragma once

#include <dshost/abi.h>

#include "core/error.h"

#include <ATen/ATen.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace c10d {
class Work;
}  // namespace c10d

namespace dshost {

class Heartbeat;
class HeartbeatHub;

// torchrun's variables. Missing or malformed ones are a UserError naming the variable.
struct Rendezvous {
  int rank = 0, world_size = 1, local_rank = 0, local_world_size = 1;
  // The ranks the launcher was set up for, where it started fewer (launcher.min_nodes dropped
  // nodes that did not answer; DSHOST_FULL_WORLD_SIZE): else world_size.
  int full_world_size = 1;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  static Rendezvous from_env();
};

// A started collective. finish() waits and then does any host-side epilogue (emulation).
// NCCL's work (on_device) is waited for by the current stream and not by the host: given a
// timeout, LibTorch's wait() blocks the host until the collective is done, which kept it
// from running ahead of the GPU. A hung NCCL collective is ended by the process group's
// watchdog after comm.timeout_s instead, as under PyTorch's DDP and FSDP.
class PendingWork {
 public:
  PendingWork(std::string what, c10::intrusive_ptr<c10d::Work> work, std::function<void()> epilogue,
              bool on_device);
  ~PendingWork();
  void finish(std::chrono::milliseconds timeout);
  const std::string& what() const { return what_; }

 private:
  std::string what_;
  c10::intrusive_ptr<c10d::Work> work_;
  std::function<void()> epilogue_;
  bool on_device_;
};

class Comm {
 public:
  Comm(const Rendezvous& rv, std::chrono::milliseconds timeout, at::Device device);
  ~Comm();

  const Rendezvous& rendezvous() const { return rv_; }
  std::chrono::milliseconds timeout() const { return timeout_; }

  int32_t register_buffer(const at::Tensor& buffer);
  std::unique_ptr<PendingWork> all_reduce(const dshost_slice& s, dshost_reduce_op op);
  std::unique_ptr<PendingWork> all_gather(const dshost_slice& in, const dshost_slice& out);
  std::unique_ptr<PendingWork> reduce_scatter(const dshost_slice& in, const dshost_slice& out,
                                              dshost_reduce_op op);
  std::unique_ptr<PendingWork> broadcast(const dshost_slice& s, int root);

  // Host's own blocking reductions of a few numbers (metrics), over gloo.
  std::vector<double> sum(const std::vector<double>& values);
  double max(double value);

  // A collective of this rank that broke or timed out (`seen`: what it reported), as the
  // error of a rank stopped by another (exit code kStoppedByAnotherRank): it names first the
  // ranks that stopped answering (core/heartbeat.h).
  UserError stopped_by_another_rank(const std::string& seen) const;

 private:
  struct Groups;  // c10d's store and process groups (types differ across LibTorch versions)
  at::Tensor view(const dshost_slice& s) const;
  bool staged(const at::Tensor& t) const;
  at::Tensor reduce_on_host(at::Tensor values, bool maximum, const char* what);
  void start_heartbeat();
  std::string silent_ranks() const;

  Rendezvous rv_;
  std::chrono::milliseconds timeout_;
  std::unique_ptr<Groups> groups_;
  std::unique_ptr<HeartbeatHub> hub_;  // rank 0's
  std::unique_ptr<Heartbeat> heartbeat_;
  std::vector<at::Tensor> buffers_;
};

}  // namespace dshost
