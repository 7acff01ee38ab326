// The SDK's step scalars (dshost/step_scalars.hpp) as a host of each ABI minor reads them.
#include <dshost/step_scalars.hpp>

#include <gtest/gtest.h>

#include <cmath>

namespace dshost {
namespace {

TEST(StepScalars, AHostThatLendsASlotGetsTheLossThereAndNaNReturned) {
  at::Tensor slot = at::zeros({1});
  DLManagedTensor* lent = at::toDLPack(slot);
  const dshost_step_result out{sizeof(dshost_step_result), 0, &lent->dl_tensor};
  EXPECT_TRUE(std::isnan(hand_loss(out, at::full({}, 2.5))));
  EXPECT_EQ(slot.item<float>(), 2.5f);
  lent->deleter(lent);
}

// A host before ABI 1.3 passes a dshost_step_result that ends at `loss`, and a host before
// 1.4 dshost_step_args that end before grad_norm_out: they get the value itself.
TEST(StepScalars, AnOlderHostGetsTheValueReturned) {
  dshost_step_result out{DSHOST_STRUCT_SIZE(dshost_step_result, loss)};
  EXPECT_EQ(hand_loss(out, at::full({}, 2.5)), 2.5);
  dshost_step_args args{DSHOST_STRUCT_SIZE(dshost_step_args, max_grad_norm)};
  EXPECT_EQ(report_norm(args, at::full({1}, 4.0, at::kDouble)), 4.0);
  const double nan = report_norm(args, at::full({1}, std::nan(""), at::kDouble));
  EXPECT_TRUE(std::isnan(nan));
}

TEST(StepScalars, AHostThatLendsANormSlotGetsTheNormThere) {
  at::Tensor slot = at::zeros({1}, at::kDouble);
  DLManagedTensor* lent = at::toDLPack(slot);
  const dshost_step_args args{sizeof(dshost_step_args), 0.1, 0, &lent->dl_tensor, 0};
  EXPECT_TRUE(std::isnan(report_norm(args, at::full({1}, 4.0, at::kDouble))));
  EXPECT_EQ(slot.item<double>(), 4.0);
  lent->deleter(lent);
}

}  // namespace
}  // namespace dshost
