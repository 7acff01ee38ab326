// The delayed parameter update's twins (delayed_update.h).
#include "delayed_update.h"

#include <gtest/gtest.h>

#include <thread>

namespace dshost_zero {
namespace {

ShardBuffer filled(float value) { return {{0}, {at::full({4}, value)}, {-1}}; }

TEST(ZeroDelayedUpdate, TheUpdateReadsTheGradientsJustReducedAndItsParametersComeIntoUseWhenDone) {
  ShardBuffer grads = filled(1), spare = filled(2), params = filled(10), next = filled(20);
  DelayedUpdate delayed(grads, spare, params, next);
  std::thread::id updater;
  delayed.start([&](const ShardBuffer& g, const ShardBuffer& p) {
    updater = std::this_thread::get_id();
    p.parts[0].copy_(params.parts[0] - g.parts[0]);  // 10 - 1
  });
  EXPECT_EQ(grads.parts[0][0].item<float>(), 2)
      << "the next backward fills the other gradient shard";
  EXPECT_EQ(params.parts[0][0].item<float>(), 10) << "still the parameters in use";
  delayed.finish();
  EXPECT_NE(updater, std::this_thread::get_id());
  EXPECT_EQ(params.parts[0][0].item<float>(), 9);
  EXPECT_EQ(&delayed.next_params(), &next);
}

TEST(ZeroDelayedUpdate, NeedsEverythingTheUpdateTouchesInHostMemory) {
  Options o;
  o.delayed_update = true;
  o.stage = 3;
  o.offload_optimizer = true;
  EXPECT_THROW(check_delayed_update(o, /*on_gpu=*/true, DSHOST_ADAMW), dshost::Error)
      << "parameters on the GPU";
  EXPECT_NO_THROW(check_delayed_update(o, /*on_gpu=*/false, DSHOST_ADAMW));
  EXPECT_THROW(check_delayed_update(o, /*on_gpu=*/false, DSHOST_SGD), dshost::Error);
  o.offload_param = true;
  EXPECT_NO_THROW(check_delayed_update(o, /*on_gpu=*/true, DSHOST_ADAMW));
  o.stage = 2;  // zero2's parameter shard goes to host memory with DPU
  o.offload_param = false;
  EXPECT_NO_THROW(check_delayed_update(o, /*on_gpu=*/true, DSHOST_ADAMW));
  o.offload_optimizer = false;
  EXPECT_THROW(check_delayed_update(o, /*on_gpu=*/true, DSHOST_ADAMW), dshost::Error);
}

}  // namespace
}  // namespace dshost_zero
