// N ranks in one process, for testing a strategy's parts against the services table alone:
// each rank runs on a thread of its own with its own dshost_services. A collective is
// computed once every rank has called it (ranks call the same collectives in the same order,
// as real ones must), so each call returns finished work. Registered buffers are 1-D.
#pragma once

#include <dshost/abi.h>

#include <ATen/ATen.h>

#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace dshost::test {

// AdamW as the host passes it: PyTorch's defaults.
dshost_optimizer_config adamw(double weight_decay = 0.0);

class FakeRanks {
 public:
  explicit FakeRanks(int world_size, dshost_optimizer_config optimizer = adamw());
  ~FakeRanks();
  FakeRanks(const FakeRanks&) = delete;
  FakeRanks& operator=(const FakeRanks&) = delete;

  const dshost_services* services(int rank) const;
  // Runs body(rank) on a thread per rank; rethrows the first exception a rank threw.
  void run(const std::function<void(int rank)>& body);
  // Collectives rank 0 has called.
  int collectives() const { return collectives_; }
  std::vector<std::string> log(int rank) const;

 private:
  struct Rank;
  struct Call {
    enum Kind { kAllReduce, kAllGather, kReduceScatter, kBroadcast } kind;
    at::Tensor in, out;
    dshost_reduce_op op = DSHOST_SUM;
    int root = 0;
  };
  static FakeRanks::Rank& rank_of(dshost_host* host);
  static dshost_status collective(dshost_host* host, Call call, dshost_work** work);
  void meet(int rank, const Call& call);
  void compute();

  int world_size_;
  dshost_optimizer_config optimizer_;
  std::vector<std::unique_ptr<Rank>> ranks_;
  std::mutex mutex_;
  std::condition_variable met_;
  std::vector<Call> calls_;
  int arrived_ = 0;
  uint64_t generation_ = 0;
  int collectives_ = 0;
};

}  // namespace dshost::test
