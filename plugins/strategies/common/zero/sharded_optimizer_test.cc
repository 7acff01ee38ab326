// The optimizer over a rank's shard (sharded_optimizer.h), on the CPU.
#include "sharded_optimizer.h"

#include "tests/fake_ranks.h"

#include <gtest/gtest.h>

#include <cmath>

namespace dshost_zero {
namespace {

// One rank, stage 2, one unit of 6 elements: the shard is the whole unit.
struct Shard {
  dshost::test::FakeRanks ranks;
  dshost::Services services{ranks.services(0)};
  dshost::FlatLayout layout{{{"w", {at::zeros({6})}}}, 1, true};
  Options o;
  ShardMemory memory{services, at::kCPU, layout.shard, 0, false};
  ShardBuffer grads = memory.make(at::kFloat, at::kCPU, false);
  ShardBuffer no_param_shard;
  std::vector<at::Tensor> params{at::zeros({6})};
  std::unique_ptr<ShardedOptimizer> optimizer;

  explicit Shard(dshost_optimizer_config config) : ranks(1, config) {
    optimizer =
        std::make_unique<ShardedOptimizer>(services, o, layout, at::kCPU, at::kFloat, memory, grads,
                                           no_param_shard, params, nullptr, 4);
    optimizer->master().parts[0].copy_(at::linspace(-1, 1, 6));
    grads.parts[0].copy_(at::linspace(0.5, -0.5, 6));
  }
  at::Tensor norm() const { return grads.parts[0].norm().to(at::kDouble).view({1}); }
};

dshost_step_args args(double lr, bool skip_nonfinite = false) {
  return {sizeof(dshost_step_args), lr, 0.0, nullptr, skip_nonfinite};
}

// torch.optim.AdamW's first step, in double.
at::Tensor adamw_first_step(const at::Tensor& p, const at::Tensor& g, double lr, double wd) {
  const double b1 = 0.9, b2 = 0.999, eps = 1e-8;
  const at::Tensor m = (1 - b1) * g.to(at::kDouble), v = (1 - b2) * g.to(at::kDouble).pow(2);
  return p.to(at::kDouble) * (1 - lr * wd) -
         lr / (1 - b1) * m / (v.sqrt() / std::sqrt(1 - b2) + eps);
}

TEST(ZeroOptimizer, TheFusedAdamWStepsAsTorchsAndWritesTheParametersBack) {
  Shard s(dshost::test::adamw(0.01));
  ASSERT_TRUE(s.optimizer->fused());
  const at::Tensor expected =
      adamw_first_step(s.optimizer->master().parts[0], s.grads.parts[0], 0.1, 0.01);
  s.optimizer->step(args(0.1), s.norm());
  EXPECT_TRUE(at::allclose(s.optimizer->master().parts[0].to(at::kDouble), expected, 1e-6, 1e-6))
      << s.optimizer->master().parts[0] << expected;
  EXPECT_TRUE(at::equal(s.params[0], s.optimizer->master().parts[0]))
      << "stage 2: the unit's own chunk";
  EXPECT_EQ(s.optimizer->steps(), 1);
  const dshost::NamedState state = s.optimizer->unit_state(0);
  ASSERT_EQ(state.size(), 3u);
  EXPECT_EQ(state[1].first, "exp_avg");
  EXPECT_TRUE(at::allclose(state[1].second, 0.1 * s.grads.parts[0]));
}

TEST(ZeroOptimizer, ASkippedStepLeavesTheMasterAndTheStepCount) {
  Shard s(dshost::test::adamw());
  const at::Tensor before = s.optimizer->master().parts[0].clone();
  s.optimizer->step(args(0.1, /*skip_nonfinite=*/true), at::full({1}, NAN, at::kDouble));
  EXPECT_TRUE(at::equal(s.optimizer->master().parts[0], before));
  EXPECT_EQ(s.optimizer->steps(), 0);
  s.optimizer->set_steps(7);
  EXPECT_EQ(s.optimizer->steps(), 7);
}

TEST(ZeroOptimizer, OtherOptimizersRunAsTheSdksFlatOptimizer) {
  Shard s({sizeof(dshost_optimizer_config), DSHOST_SGD, 0.9, 0.999, 1e-8, 0.0, 0.0});
  ASSERT_FALSE(s.optimizer->fused());
  const at::Tensor expected = s.optimizer->master().parts[0] - 0.5 * s.grads.parts[0];
  s.optimizer->step(args(0.5), s.norm());
  EXPECT_TRUE(at::allclose(s.params[0], expected));
}

TEST(ZeroOptimizer, Bf16GradientsNeedTheFusedAdamW) {
  Options o;
  o.grad_dtype = at::kBFloat16;
  try {
    check_optimizer_options(o, /*fused_adamw=*/false, at::kCPU, at::kFloat);
    FAIL() << "accepted";
  } catch (const dshost::Error& e) {
    EXPECT_NE(
        std::string(e.what()).find("grad_accum_dtype = \"bf16\" needs optimizer.name = \"adamw\""),
        std::string::npos);
  }
  EXPECT_NO_THROW(check_optimizer_options(o, /*fused_adamw=*/true, at::kCPU, at::kFloat));
}

}  // namespace
}  // namespace dshost_zero
