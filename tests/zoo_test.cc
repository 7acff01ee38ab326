// The model zoo under the strategies, on 2 ranks. Each model memorises 16 synthetic 3 x 32 x
// 32 images with random labels under ddp (the classic check that a network learns at all:
// the loss falls from ln 10 towards 0), and takes exactly the same steps under zero3-offload
// (every unit gathered before and freed after each use, batch-norm buffers left to the
// model) as under zero2, which keeps units whole; the two share the rest of their code.
// (ddp against the zero strategies is compared on basic_cnn: on fresh batch-norm networks at
// batch 8, gradient norms reach the thousands and two AdamW implementations' rounding parts
// trajectories by 2e-2 within 4 steps.)
#include "tests/test_labels.h"
#include "tests/test_util.h"

#include <ATen/Context.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>

namespace dshost::test {
namespace {

struct ZooCase {
  const char* model;
  const char* lr;     // AdamW's; vgg without batch norm diverges at the others' 2e-3
  const char* extra;  // one more --set
  int steps;          // under ddp; zero2 and zero3 take half as many
  double memorised;   // the loss it gets below by then
};

class ZooTraining : public testing::TestWithParam<ZooCase> {};

DSHOST_SUITE_LABEL(ZooTraining, slow);
TEST_P(ZooTraining, MemorisesUnderDdpAndZero3TakesZero2sSteps) {
  const ZooCase& c = GetParam();
  const std::vector<std::string> common{std::string("model.plugin=") + c.model,
                                        "model.image_size=32",
                                        "model.num_classes=10",
                                        "data.dataset=synthetic",
                                        "data.synthetic_samples=16",
                                        "data.synthetic_classes=10",
                                        "data.image_size=32",
                                        "train.micro_batch_size=8",
                                        "train.eval=false",
                                        "train.threads=1",
                                        "launcher.nprocs=2",
                                        "scheduler.warmup_steps=0",
                                        std::string("optimizer.lr=") + c.lr,
                                        c.extra};
  auto with = [&](std::vector<std::string> extra) {
    extra.insert(extra.end(), common.begin(), common.end());
    return extra;
  };
  const std::string steps = "train.epochs=" + std::to_string(c.steps);  // 1 step an epoch
  const std::string half = "train.max_steps=" + std::to_string(c.steps / 2);
  const auto ddp =
      train_quickstart(std::string("zoo_ddp_") + c.model, with({"strategy.plugin=ddp", steps}));
  ASSERT_EQ(ddp.size(), static_cast<size_t>(c.steps));
  EXPECT_NEAR(ddp.front(), std::log(10.0), 0.5);
  EXPECT_LT(*std::min_element(ddp.end() - 3, ddp.end()), c.memorised);
  const auto zero2 = train_quickstart(std::string("zoo_zero2_") + c.model,
                                      with({"strategy.plugin=zero2", steps, half}));
  const auto zero3 = train_quickstart(std::string("zoo_zero3_") + c.model,
                                      with({"strategy.plugin=zero3-offload", steps, half}));
  ASSERT_EQ(zero2.size(), static_cast<size_t>(c.steps / 2));
  EXPECT_LT(zero2.back(), zero2.front()) << "zero2 and zero3 learn too";
  EXPECT_EQ(zero2, zero3);
}

INSTANTIATE_TEST_SUITE_P(
    Zoo, ZooTraining,
    // measured: 0.09, 0.28, 0.31 in 10 steps; vgg11 2.259 in 6 (slow,
    // steady, and 5 s a step here), vgg16 2.272 in 6; cnn_lstm 0.36,
    // ensemble 0.01, resnet18 0.06 in 10 (seeds that start far from
    // chance, as 2 and 3 do at 2.88 and 3.02, are avoided)
    testing::Values(ZooCase{"mobilenet_v2", "0.002", "run.seed=42", 10, 0.5},
                    ZooCase{"efficientnet_b0", "0.002", "run.seed=42", 10, 0.8},
                    ZooCase{"resnet18", "0.002", "run.seed=42", 10, 0.5},
                    ZooCase{"resnet50", "0.002", "run.seed=42", 10, 1.2},
                    ZooCase{"vgg16", "0.0001", "model.dropout=0", 6, 2.28},
                    ZooCase{"vgg11", "0.0001", "model.dropout=0", 6, 2.28},
                    ZooCase{"cnn_lstm", "0.002", "model.dropout=0", 10, 0.8},
                    ZooCase{"ensemble", "0.002", "model.members=\"mobilenet_v2,resnet18\"", 10,
                            0.3}),
    [](const auto& info) { return std::string(info.param.model); });

DSHOST_SUITE_LABEL(GptTraining, slow);
// A small GPT on the bytes of Debian's fortunes: it learns (the loss falls from ln 256 = 5.5
// to below 2.8 nats in 400 steps, measured 2.64; byte frequencies alone, English's unigram
// entropy, give about 3), and zero3-offload, with its tied embedding unit kept gathered from
// forward to backward, takes zero2's steps exactly.
TEST(GptTraining, LearnsTextAndZero3TakesZero2sSteps) {
  const std::vector<std::string> common{
      "model.plugin=gpt",   "model.n_layer=2",          "model.n_head=2",
      "model.n_embd=64",    "model.vocab_size=256",     "model.block_size=64",
      "data.dataset=text",  "data.path=\"\"",           "train.micro_batch_size=8",
      "train.eval=false",   "train.threads=1",          "launcher.nprocs=2",
      "optimizer.lr=0.003", "scheduler.warmup_steps=10"};
  auto with = [&](std::vector<std::string> extra) {
    extra.insert(extra.end(), common.begin(), common.end());
    return extra;
  };
  const auto learned =
      train_quickstart("gpt_learns", with({"strategy.plugin=ddp", "train.max_steps=400"}));
  ASSERT_EQ(learned.size(), 400u);
  EXPECT_NEAR(learned.front(), std::log(256.0), 0.3);
  EXPECT_LT(learned.back(), 2.8);
  const auto zero2 =
      train_quickstart("gpt_zero2", with({"strategy.plugin=zero2", "train.max_steps=10"}));
  const auto zero3 =
      train_quickstart("gpt_zero3", with({"strategy.plugin=zero3-offload", "train.max_steps=10"}));
  ASSERT_EQ(zero2.size(), 10u);
  EXPECT_EQ(zero2, zero3);
}

// model.activation_checkpointing: each block runs again in backward, between the unit's
// pre_backward (zero3-offload gathers it again) and grads_ready, with the dropout masks and
// autocast of its first run: the same steps exactly, under ddp's bf16 autocast over fp32
// parameters and under zero3-offload's sharded fp32 ones, with dropout on.
TEST(GptTraining, ActivationCheckpointingTakesTheSameSteps) {
  const std::vector<std::string> common{
      "model.plugin=gpt",         "model.n_layer=2",    "model.n_head=2",
      "model.n_embd=64",          "model.dropout=0.1",  "model.vocab_size=256",
      "model.block_size=64",      "data.dataset=text",  "data.path=\"\"",
      "train.micro_batch_size=8", "train.eval=false",   "train.threads=1",
      "launcher.nprocs=2",        "train.max_steps=10", "optimizer.lr=0.003",
      "scheduler.warmup_steps=0"};
  for (const std::string strategy : {"strategy.plugin=ddp", "strategy.plugin=\"zero3-offload\""}) {
    auto sets = common;
    sets.push_back(strategy);
    if (strategy == "strategy.plugin=ddp") sets.push_back("train.precision=bf16");
    const auto kept = train_quickstart("gpt_kept", sets);
    sets.push_back("model.activation_checkpointing=true");
    const auto recomputed = train_quickstart("gpt_recomputed", sets);
    ASSERT_EQ(kept.size(), 10u) << strategy;
    EXPECT_LT(kept.back(), kept.front() - 0.3) << strategy;
    EXPECT_EQ(kept, recomputed) << strategy;
  }
}

// A small gpt on the bytes of Debian's fortunes, on the GPU under zero2, for 300 steps.
std::vector<std::string> small_gpt_on_fortunes() {
  return {"model.plugin=gpt",
          "model.n_layer=2",
          "model.n_head=2",
          "model.n_embd=128",
          "model.vocab_size=256",
          "model.block_size=64",
          "data.dataset=text",
          "train.eval=false",
          "train.micro_batch_size=16",
          "launcher.nprocs=1",
          "train.device=cuda",
          "strategy.plugin=zero2",
          "train.max_steps=300",
          "optimizer.lr=0.003",
          "scheduler.warmup_steps=10",
          "data.path=\"" + fortunes_dir() + "\""};
}

DSHOST_SUITE_LABEL(GptFp8, gpu);
// train.precision = "fp8" on a GPU: a small GPT on the bytes of Debian's fortunes learns as
// under bf16 with either fp8_scaling: over seeds 1 to 8, the mean of the runs' mean loss over
// their last 50 of 300 steps within 3% of bf16's, by steps of its own (the fp8 products round
// differently), and the run says which layers ran in fp8 and how they were scaled; with
// model.fp8_output, the output projection too. Eight seeds, as one run lands up to 0.26 (10%)
// from another seed's under any change of rounding, fp8's or bf16's own: a mean over eight
// differs from bf16's by about 0.035 (1.3%) from that alone.
TEST(GptFp8, LearnsAsBf16Does) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  const std::vector<std::string> common = small_gpt_on_fortunes();
  const auto last_50 = [](const std::vector<double>& losses) {
    return std::accumulate(losses.end() - 50, losses.end(), 0.0) / 50;
  };
  const auto mean = [](const std::vector<double>& values) {
    return std::accumulate(values.begin(), values.end(), 0.0) / values.size();
  };
  // Each fp8 recipe: its model options and the layers its log names.
  const std::vector<std::pair<std::vector<std::string>, std::string>> recipes{
      {{"model.fp8_scaling=current"}, "8 linear layers (four a block), current scaling"},
      {{"model.fp8_scaling=delayed"}, "8 linear layers (four a block), delayed scaling"},
      {{"model.fp8_scaling=delayed", "model.fp8_output=true"},
       "9 linear layers (four a block and the output projection), delayed scaling"}};
  std::vector<double> bf16_seeds;
  std::vector<std::vector<double>> fp8_seeds(recipes.size());
  std::string log;
  for (const std::string seed : {"1", "2", "3", "4", "5", "6", "7", "8"}) {
    const auto bf16_run = train_quickstart(
        "gpt_bf16_" + seed, with(common, {"train.precision=bf16", "run.seed=" + seed}));
    bf16_seeds.push_back(last_50(bf16_run));
    for (size_t r = 0; r < recipes.size(); ++r) {
      const auto& [options, layers] = recipes[r];
      SCOPED_TRACE(layers + ", seed " + seed);
      const auto fp8_run = train_quickstart(
          "gpt_fp8_" + std::to_string(r) + "_" + seed,
          with(with(common, options), {"train.precision=fp8", "run.seed=" + seed}), nullptr, &log);
      ASSERT_EQ(fp8_run.size(), 300u);
      EXPECT_GT(max_abs_difference(bf16_run, fp8_run), 0.0);
      fp8_seeds[r].push_back(last_50(fp8_run));
      EXPECT_NE(log.find("fp8 matrix multiplies in " + layers), std::string::npos) << log;
    }
  }
  const double bf16 = mean(bf16_seeds);
  std::printf("mean over seeds 1-8 of the last 50 steps' mean loss: bf16 %.4f\n", bf16);
  EXPECT_LT(bf16, 3.0);
  for (size_t r = 0; r < recipes.size(); ++r) {
    const double fp8 = mean(fp8_seeds[r]);
    std::printf("  fp8 %.4f (%+.2f%%): %s\n", fp8, 100 * (fp8 / bf16 - 1),
                recipes[r].second.c_str());
    EXPECT_NEAR(fp8, bf16, 0.03 * bf16) << recipes[r].second;
  }
}

// model.fp8_output with a vocabulary of no multiple of 16: the output projection stays in
// bf16, and the run says why and what to do.
TEST(GptFp8, AnUnpaddedVocabularyKeepsTheOutputInBf16AndSaysWhy) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  std::string log;
  const auto losses = train_quickstart(
      "gpt_fp8_vocab_264",
      with(small_gpt_on_fortunes(), {"model.vocab_size=264", "train.max_steps=5",
                                     "train.precision=fp8", "model.fp8_output=true"}),
      nullptr, &log);
  EXPECT_EQ(losses.size(), 5u);
  EXPECT_NE(log.find("fp8 matrix multiplies in 8 linear layers (four a block), delayed scaling; "
                     "embeddings, layer norms, attention, the output projection and the loss in "
                     "bf16 (model.fp8_output: vocab_size 264 is no multiple of 16; pad it, as "
                     "GPT-2's 50257 to 50304)"),
            std::string::npos)
      << log;
}

}  // namespace
}  // namespace dshost::test
