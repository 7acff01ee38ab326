// model.init_from: runs that start from a weights file, under every strategy and world size,
// from torchvision's names with a new head, and files that do not fit.
#include <dshost/torch.hpp>  // first: ATen's DLPack

#include "core/safetensors.h"
#include "core/torch_pickle.h"
#include "tests/test_labels.h"
#include "tests/test_util.h"

#include <gtest/gtest.h>

#include <filesystem>

namespace dshost::test {
namespace {

namespace fs = std::filesystem;

// One quickstart run in `dir` with `sets`, checked to succeed; its log.
std::string run_in(const std::string& dir, std::vector<std::string> sets) {
  std::vector<std::string> args{"run",   quickstart_manifest(),
                                "--set", "run.output_dir=\"" + dir + "\"",
                                "--set", "train.eval=false"};
  for (const auto& s : sets) args.insert(args.end(), {"--set", s});
  const Ran r = dshost(args);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return r.err;
}

// The weights of the newest checkpoint in `dir`'s run, as `dshost export` writes them.
std::string exported(const std::string& dir) {
  const std::string file = dir + "/weights.safetensors";
  const Ran r = dshost({"export", dir + "/quickstart/checkpoints", file});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return file;
}

// One step at learning rate 0 from `weights` (AdamW's decay is lr x weight_decay: nothing
// moves), saved: what the run started from.
std::vector<std::string> started_from(const std::string& weights) {
  return {"model.init_from=\"" + weights + "\"", "optimizer.lr=0", "train.max_steps=1",
          "checkpoint.every_steps=1"};
}

DSHOST_SUITE_LABEL(InitFrom, slow);
TEST(InitFrom, EveryStrategyAndWorldSizeStartsFromTheFile) {
  const std::string trained = scratch_dir("init_trained");
  run_in(trained, {"train.max_steps=10", "checkpoint.every_steps=10"});
  const SafetensorsFile weights(exported(trained));
  for (const auto& [strategy, ranks] :
       {std::pair{"ddp", 1}, std::pair{"ddp", 2}, std::pair{"zero2", 1}, std::pair{"zero2", 2},
        std::pair{"zero3-offload", 1}, std::pair{"zero3-offload", 2}}) {
    const std::string dir = scratch_dir(cat("init_", ranks, "_", strategy));
    const std::string log = run_in(
        dir, with(started_from(weights.path()),
                  {cat("strategy.plugin=\"", strategy, "\""), cat("launcher.nprocs=", ranks)}));
    EXPECT_NE(log.find("model.init_from: 8 tensors from " + weights.path()), std::string::npos)
        << log;
    const SafetensorsFile started(exported(dir));
    ASSERT_EQ(started.names(), weights.names());
    for (const std::string& name : weights.names())
      EXPECT_TRUE(at::equal(started.tensor(name), weights.tensor(name))) << strategy << " " << name;
  }
}

// torchvision's mobilenet_v2 (1000 classes, written by Debian's python3-torchvision as
// torch.save writes a state_dict, .pth, in its zip and its legacy format, and as safetensors)
// loads by torchvision's names into a 10-class model: every parameter but the new classifier's
// is torchvision's, the log names the classifier as kept, and every file gives the same model.
TEST(InitFrom, TorchvisionWeightsLoadByTheirNamesFromPthOrSafetensorsAndANewHeadKeepsItsInit) {
  const std::string dir = scratch_dir("init_torchvision");
  std::vector<std::string> exports;
  for (const std::string format : {"safetensors", "pth", "legacy.pth"}) {
    const std::string file = dir + "/mobilenet_v2." + format, run_dir = dir + "/" + format;
    ASSERT_EQ(run({python(), DSHOST_SOURCE_DIR "/tests/torchvision_weights.py", "mobilenet_v2",
                   "1000", file})
                  .exit_code,
              0);
    const std::string log = run_in(
        run_dir,
        with(started_from(file), {"model.plugin=mobilenet_v2", "model.num_classes=10",
                                  "model.image_size=32", "data.channels=3", "data.image_size=32",
                                  "train.micro_batch_size=8", "launcher.nprocs=1"}));
    EXPECT_NE(log.find("model.init_from: kept their initialisation: classifier.1.bias ([1000] in "
                       "the file, [10] in the model), classifier.1.weight ([1000, 1280] in the "
                       "file, [10, 1280] in the model)"),
              std::string::npos)
        << log;
    exports.push_back(exported(run_dir));
  }
  const SafetensorsFile torchvision(dir + "/mobilenet_v2.safetensors"),
      from_safetensors(exports[0]);
  int compared = 0;
  for (const std::string& name : torchvision.names()) {
    const bool statistics = name.find("running_") != std::string::npos ||
                            name.find("num_batches_tracked") != std::string::npos;
    if (statistics || name.rfind("classifier.1.", 0) == 0) continue;  // a training step moves
    ASSERT_TRUE(from_safetensors.has(name)) << name;
    EXPECT_TRUE(at::equal(from_safetensors.tensor(name), torchvision.tensor(name))) << name;
    ++compared;
  }
  EXPECT_EQ(compared, 156);
  EXPECT_EQ(from_safetensors.tensor("classifier.1.weight").sizes(), at::IntArrayRef({10, 1280}));
  for (const std::string& pth : {exports[1], exports[2]}) {
    const SafetensorsFile from_pth(pth);
    ASSERT_EQ(from_pth.names(), from_safetensors.names()) << pth;
    for (const std::string& name : from_pth.names())
      EXPECT_TRUE(at::equal(from_pth.tensor(name), from_safetensors.tensor(name))) << pth << name;
  }
}

// A GPT-2 state_dict in Hugging Face's names and layout (Conv1D weights [in, out]) starts gpt
// under ddp on one rank and zero3-offload on two, and `dshost export` gives it back as it was:
// the same names, the blocks' projections transposed back, every value equal; as
// GPT2LMHeadModel saves it too.
TEST(InitFrom, HuggingFaceGpt2WeightsStartGptAndExportAsTheyCame) {
  const std::string dir = scratch_dir("init_gpt2"), weights = dir + "/gpt2.pth";
  ASSERT_EQ(run({python(), DSHOST_SOURCE_DIR "/tests/gpt2_weights.py", "2", "2", "16", "256", "16",
                 weights, dir + "/io"})
                .exit_code,
            0);
  const std::map<std::string, at::Tensor> file = read_torch_state_dict(weights);
  for (const auto& [strategy, ranks] : {std::pair{"ddp", 1}, std::pair{"zero3-offload", 2}}) {
    const std::string run_dir = cat(dir, "/", strategy);
    run_in(run_dir,
           with(started_from(weights),
                {"model.plugin=\"gpt\"", "model.n_layer=2", "model.n_head=2", "model.n_embd=16",
                 "model.vocab_size=256", "model.block_size=16", "data.dataset=\"text\"",
                 "data.path=\"\"", "train.micro_batch_size=4",
                 cat("strategy.plugin=\"", strategy, "\""), cat("launcher.nprocs=", ranks)}));
    const SafetensorsFile back(exported(run_dir));
    ASSERT_EQ(back.names().size(), file.size());
    for (const auto& [name, value] : file) {
      ASSERT_TRUE(back.has(name)) << name;
      EXPECT_TRUE(at::equal(back.tensor(name), value)) << strategy << " " << name;
    }
  }
  // The same weights as GPT2LMHeadModel's state_dict holds them: under "transformer.", beside
  // lm_head.weight (wte's, tied), which gpt has no place for.
  std::vector<NamedTensor> lm_head_model{{"lm_head.weight", file.at("wte.weight")}};
  for (const auto& [name, value] : file) lm_head_model.push_back({"transformer." + name, value});
  const std::string lm_weights = dir + "/lm_head_model.safetensors", lm_dir = dir + "/lm";
  write_safetensors(lm_weights, lm_head_model, {});
  const std::string log = run_in(
      lm_dir,
      with(started_from(lm_weights),
           {"model.plugin=\"gpt\"", "model.n_layer=2", "model.n_head=2", "model.n_embd=16",
            "model.vocab_size=256", "model.block_size=16", "data.dataset=\"text\"",
            "data.path=\"\"", "train.micro_batch_size=4", "model.init_skip=\"lm_head.weight\""}));
  EXPECT_NE(log.find(cat("model.init_from: ", file.size(), " tensors from ", lm_weights,
                         " (their names read without \"transformer.\")")),
            std::string::npos)
      << log;
  const SafetensorsFile back(exported(lm_dir));
  for (const auto& [name, value] : file)
    EXPECT_TRUE(at::equal(back.tensor(name), value)) << "GPT2LMHeadModel's " << name;
}

// Files that do not fit the model, each refused before training with what is wrong.
TEST(InitFrom, AFileThatDoesNotFitIsRefusedSayingWhy) {
  const std::string dir = scratch_dir("init_bad");
  run_in(dir, {"train.max_steps=1", "checkpoint.every_steps=1"});
  const std::string weights = exported(dir);
  const auto refused = [&](const std::vector<std::string>& sets) {
    std::vector<std::string> args{"run",   quickstart_manifest(),
                                  "--set", "run.output_dir=\"" + dir + "/x\"",
                                  "--set", "train.max_steps=1"};
    for (const auto& s : sets) args.insert(args.end(), {"--set", s});
    const Ran r = dshost(args);
    EXPECT_EQ(r.exit_code, 2) << r.err;
    EXPECT_FALSE(fs::exists(dir + "/x/quickstart/summary.json"));
    return r.err;
  };
  std::string err = refused({"model.init_from=\"" + weights + "\"", "model.plugin=resnet18"});
  EXPECT_NE(err.find("does not match the model's names; the model's tensors not in the file: "),
            std::string::npos)
      << err;
  EXPECT_NE(err.find("the file's tensors not in the model: conv1.0.bias, conv1.0.weight"),
            std::string::npos)
      << err;

  const SafetensorsFile good(weights);
  std::vector<NamedTensor> tensors;
  for (const std::string& name : good.names())
    tensors.push_back(
        {name, name == "conv1.0.weight" ? good.tensor(name).to(at::kLong) : good.tensor(name)});
  write_safetensors(dir + "/ints.safetensors", tensors, {});
  err = refused({"model.init_from=\"" + dir + "/ints.safetensors\""});
  EXPECT_NE(err.find("holds conv1.0.weight as Long, the model's is Float"), std::string::npos)
      << err;

  const std::string whole = read_file(weights);
  write_file(dir + "/cut.safetensors", whole.substr(0, whole.size() / 2));
  err = refused({"model.init_from=\"" + dir + "/cut.safetensors\""});
  EXPECT_NE(err.find(dir + "/cut.safetensors"), std::string::npos) << err;

  err = refused({"model.init_from=\"" + weights + "\"", "model.init_skip=\"head.*\""});
  EXPECT_NE(err.find("model.init_skip: \"head.*\" matches no tensor of the model or of " + weights),
            std::string::npos)
      << err;
  err = refused({"model.init_from=\"" + dir + "/none.safetensors\""});
  EXPECT_NE(err.find("error: model.init_from = \"" + dir + "/none.safetensors\": no such file"),
            std::string::npos)
      << err;
}

}  // namespace
}  // namespace dshost::test
