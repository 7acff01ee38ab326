// The host-memory check (host_memory.h).
#include "host_memory.h"

#include <gtest/gtest.h>

namespace dshost_zero {
namespace {

constexpr int64_t kGiB = int64_t{1} << 30;

std::string refusal(const Options& o, const HostMemoryNeed& n, int64_t available) {
  try {
    check_host_memory(o, n, available);
  } catch (const dshost::Error& e) {
    EXPECT_EQ(e.status(), DSHOST_OUT_OF_MEMORY);
    return e.what();
  }
  return "(accepted)";
}

// A CPU run keeps everything on the host: master and moments (12), the gradient shard (4),
// and the whole model under stage 2.
TEST(HostMemory, ACpuRunCountsEveryBuffer) {
  Options o;
  HostMemoryNeed n;
  n.shard = 1000;
  n.padded_model = 2000;
  n.fused_adamw = true;
  const HostBytes b = host_bytes(o, n);
  EXPECT_EQ(b.per_rank, 12 * 1000 + 4 * 1000 + 4 * 2000);
  EXPECT_EQ(b.moments, 8 * 1000);
  o.stage = 3;
  o.offload_optimizer = true;
  o.delayed_update = true;  // second gradient and parameter shards
  EXPECT_EQ(host_bytes(o, n).per_rank, 12 * 1000 + 2 * 4 * 1000 + 4 * 2 * 1000);
}

TEST(HostMemory, PinnedBuffersRoundUpToAPowerOfTwo) {
  Options o;
  o.stage = 3;
  o.offload_param = true;
  HostMemoryNeed n;
  n.on_gpu = true;
  n.shard = 3 * kGiB / 2;  // 3 GiB of bf16 parameters
  n.compute_bytes = 2;
  EXPECT_EQ(host_bytes(o, n).per_rank, 4 * kGiB);
  o.pin_memory = false;
  EXPECT_EQ(host_bytes(o, n).per_rank, 3 * kGiB);
}

TEST(HostMemory, TheModelsReleasedValuesCountOnceSetupFits) {
  Options o;
  HostMemoryNeed n;
  n.shard = n.padded_model = kGiB / 4;  // 1 GiB fp32 model, one rank: 5 GiB with moments
  n.fused_adamw = true;
  n.released = kGiB;
  EXPECT_EQ(refusal(o, n, 4 * kGiB + kGiB / 2), "(accepted)")
      << "3 GiB before the moments; 5 with the model gone";
  const std::string message = refusal(o, n, 2 * kGiB);
  EXPECT_EQ(
      message.rfind(
          "zero2 needs 5.000 GiB of host memory on this node (5.000 GiB for each of its 1 ranks: "
          "parameters, gradient shard, master and AdamW moments), but only 2.000 GiB is available.",
          0),
      0u)
      << message;
}

// zero2 offloading its optimizer from a GPU: master and moments (12), the gradient shard (4),
// and under DPU a second gradient shard and two bf16 parameter shards the update writes.
TEST(HostMemory, Zero2sOffloadHoldsTheOptimizerAndUnderDpuTwoParameterShards) {
  Options o;
  o.offload_optimizer = true;
  o.pin_memory = false;
  HostMemoryNeed n;
  n.on_gpu = true;
  n.shard = 1000;
  n.padded_model = 2000;
  n.compute_bytes = 2;
  EXPECT_EQ(host_bytes(o, n).per_rank, 12 * 1000 + 4 * 1000);
  o.delayed_update = true;
  EXPECT_EQ(host_bytes(o, n).per_rank, 12 * 1000 + 2 * 4 * 1000 + 2 * 2 * 1000);
  EXPECT_NE(refusal(o, n, 0).find("gradient shard, master and AdamW moments and the parameter "
                                  "shard), but only"),
            std::string::npos)
      << refusal(o, n, 0);
}

TEST(HostMemory, AGpuRunWithNothingOffloadedNeedsNoHostMemory) {
  Options o;
  HostMemoryNeed n;
  n.on_gpu = true;
  n.shard = 100 * kGiB;
  EXPECT_EQ(refusal(o, n, 0), "(accepted)");
}

}  // namespace
}  // namespace dshost_zero
