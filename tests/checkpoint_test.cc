// Checkpoints: the file format pieces (CRC-32C, safetensors, slices in another memory
// layout), and whole runs: killed and resumed runs follow uninterrupted ones bit for bit,
// a checkpoint moves between strategies and world sizes, saves killed at random moments
// never leave a checkpoint that loads wrong, and damaged checkpoints are refused by name.
#include <dshost/torch.hpp>  // first: ATen's DLPack

#include "core/checkpoint.h"
#include "core/crc32c.h"
#include "core/safetensors.h"
#include "tests/test_labels.h"
#include "tests/test_util.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <map>
#include <random>
#include <regex>
#include <sstream>
#include <thread>

namespace fs = std::filesystem;

namespace dshost::test {
namespace {

// ---- format pieces ----------------------------------------------------------------------

TEST(Crc32c, MatchesTheStandardCheckValueInOneCallOrMany) {
  const std::string text = "123456789";
  EXPECT_EQ(crc32c(text.data(), text.size()), 0xE3069283u);  // RFC 3720's check value
  EXPECT_EQ(crc32c(text.data() + 4, 5, crc32c(text.data(), 4)), 0xE3069283u);
  std::string long_text(1000, 'x');
  long_text[517] = 'y';
  EXPECT_NE(crc32c(long_text.data(), long_text.size()),
            crc32c(std::string(1000, 'x').data(), 1000));
}

TEST(Safetensors, RoundTripsEveryDtypeAndRefusesATruncatedFileByName) {
  const std::string dir = scratch_dir("safetensors");
  const at::Tensor f = at::arange(12, at::kFloat).view({3, 4}), i = at::arange(5, at::kLong);
  const at::Tensor b = at::rand({7}).to(at::kBFloat16), u = at::arange(3, at::kByte);
  const std::string path = dir + "/t.safetensors";
  const WrittenFile written =
      write_safetensors(path, {{"u", u}, {"f", f}, {"b", b}, {"i", i}}, {{"note", "hello"}});
  EXPECT_EQ(written.bytes, static_cast<int64_t>(fs::file_size(path)));
  EXPECT_FALSE(fs::exists(path + ".part"));
  {
    const SafetensorsFile file(path);
    EXPECT_EQ(file.crc32c(), written.crc32c);
    EXPECT_TRUE(file.tensor("f").equal(f));
    EXPECT_TRUE(file.tensor("i").equal(i));
    EXPECT_TRUE(file.tensor("b").equal(b));
    EXPECT_TRUE(file.tensor("u").equal(u));
    EXPECT_EQ(file.metadata("note"), "hello");
  }
  fs::resize_file(path, fs::file_size(path) - 3);
  try {
    SafetensorsFile cut(path);
    FAIL() << "a truncated file was read";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find(path + ": not a readable safetensors file"),
              std::string::npos)
        << e.what();
  }
}

// Slices written in one memory layout (channels-last) are read in another (NCHW), so a
// checkpoint survives a change of train or model layout options.
TEST(CheckpointSlices, ReadBackInAnotherMemoryLayout) {
  const std::string dir = scratch_dir("checkpoint_layouts");
  const at::Tensor logical = at::arange(2 * 3 * 2 * 2, at::kFloat).view({2, 3, 2, 2});
  const at::Tensor nhwc = logical.contiguous(at::MemoryFormat::ChannelsLast);
  const std::vector<std::vector<TensorLayout>> saved{{TensorLayout::of("w", nhwc)}};
  ASSERT_EQ(saved[0][0].order, (std::vector<int64_t>{0, 2, 3, 1}));
  CheckpointWriter writer(saved);
  // Two ranks' halves of the flat (memory-order) buffer.
  const at::Tensor flat = nhwc.permute({0, 2, 3, 1}).reshape({-1});
  for (int64_t half : {0, 1}) {
    const at::Tensor piece = flat.narrow(0, half * 12, 12).contiguous();
    DLManagedTensor* dl = to_dlpack(piece);
    const dshost_state_slice where{sizeof(dshost_state_slice), 0, 0, "value", half * 12};
    dshost_error err{sizeof(dshost_error), {}};
    ASSERT_EQ(writer.io()->write(writer.io()->context, &where, &dl->dl_tensor, &err), DSHOST_OK)
        << err.message;
    dl->deleter(dl);
  }
  fs::create_directories(dir + "/step");
  writer.write(rank_checkpoint_file(dir + "/step", 0));
  publish_checkpoint(dir, dir + "/step", 1, build_index(dir + "/step", 1, {{"model", "m"}}), 0);

  const std::vector<std::vector<TensorLayout>> wanted{{TensorLayout::of("w", logical)}};
  const CheckpointReader reader(latest_checkpoint(dir), wanted);
  reader.check_model("m");
  EXPECT_TRUE(reader.whole("w").equal(logical));
  at::Tensor tail = at::zeros({10});  // NCHW elements 14..23
  DLManagedTensor* dl = to_dlpack(tail);
  const dshost_state_slice where{sizeof(dshost_state_slice), 0, 0, "value", 14};
  dshost_error err{sizeof(dshost_error), {}};
  ASSERT_EQ(reader.io()->read(reader.io()->context, &where, &dl->dl_tensor, &err), DSHOST_OK)
      << err.message;
  dl->deleter(dl);
  EXPECT_TRUE(tail.equal(logical.reshape({-1}).narrow(0, 14, 10)));
}

// Publishing moves `latest` to the new checkpoint and keeps the newest ones; a checkpoint
// saved below newer ones (a run resumed from an older one) is kept as the one just saved.
TEST(CheckpointDirectory, LatestMovesAndTheNewestAreKept) {
  const std::string dir = scratch_dir("checkpoint_directory");
  const auto publish = [&](int64_t step, int64_t keep) {
    const std::string staging = dir + "/" + step_dir_name(step) + ".tmp";
    fs::create_directories(staging);
    publish_checkpoint(dir, staging, step, {{"step", step}}, keep);
  };
  const auto listing = [&] {
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
    std::sort(names.begin(), names.end());
    return names;
  };
  for (int64_t step : {10, 20, 30, 40}) publish(step, 2);
  EXPECT_EQ(listing(), (std::vector<std::string>{"latest", "step-00000030", "step-00000040"}));
  EXPECT_EQ(latest_checkpoint(dir), dir + "/step-00000040");
  publish(35, 2);
  EXPECT_EQ(listing(), (std::vector<std::string>{"latest", "step-00000035", "step-00000040"}));
  EXPECT_EQ(latest_checkpoint(dir), dir + "/step-00000035");
  EXPECT_EQ(read_file(dir + "/step-00000035/index.json"), "{\n \"step\": 35\n}\n");
}

// ---- runs ---------------------------------------------------------------------------------

const std::string kQuickstart = std::string(DSHOST_SOURCE_DIR) + "/configs/quickstart.toml";

std::vector<std::string> run_args(const std::string& dir, const std::vector<std::string>& sets) {
  std::vector<std::string> args{DSHOST_BINARY,
                                "run",
                                kQuickstart,
                                "--set",
                                "run.output_dir=\"" + dir + "\"",
                                "--set",
                                "train.eval=false",
                                "--set",
                                "train.log_every=1"};
  for (const auto& s : sets) args.insert(args.end(), {"--set", s});
  return args;
}

// What a run computed at each step, from metrics.jsonl (not its timings or memory): the
// columns a resumed run must reproduce exactly.
std::string metrics(const std::string& dir) {
  std::istringstream lines(read_file(dir + "/quickstart/metrics.jsonl"));
  std::string out;
  for (std::string line; std::getline(lines, line);) {
    const auto row = nlohmann::json::parse(line);
    out += nlohmann::json{{"step", row["step"]},
                          {"epoch", row["epoch"]},
                          {"loss", row["loss"]},
                          {"lr", row["lr"]},
                          {"grad_norm", row["grad_norm"]}}
               .dump() +
           "\n";
  }
  return out;
}

class KillAndResume : public testing::TestWithParam<std::string> {};

DSHOST_SUITE_LABEL(KillAndResume, slow);
// 60 steps, checkpoints every 30, the job killed (SIGKILL, every process) a few steps after
// the first checkpoint: the same command resumes at step 30 and the metrics (loss, lr,
// gradient norm of every step) equal an uninterrupted run's to the last bit. Dropout makes
// the random number generators part of what must be restored.
TEST_P(KillAndResume, FollowsAnUninterruptedRunBitForBit) {
  const std::vector<std::string> sets{"strategy.plugin=\"" + GetParam() + "\"",
                                      "train.max_steps=60", "checkpoint.every_steps=30",
                                      "model.dropout=0.3"};
  const std::string whole = scratch_dir("resume_whole_" + GetParam());
  const Ran reference = run(run_args(whole, sets));
  ASSERT_EQ(reference.exit_code, 0) << reference.err;

  const std::string dir = scratch_dir("resume_killed_" + GetParam());
  const Job job = start_job(run_args(dir, sets), dir, "step 33/");
  ASSERT_EQ(kill(job.pid, SIGKILL), 0);  // the launcher; its ranks die with it
  double seconds = 0;
  EXPECT_EQ(wait_for(job, 30, &seconds), 128 + SIGKILL);
  ASSERT_NE(read_file(dir + "/log").find("checkpoint saved: "), std::string::npos)
      << read_file(dir + "/log");
  ASSERT_EQ(metrics(dir).find("\"step\":60"), std::string::npos) << "the run ended before the kill";

  const Ran resumed = run(run_args(dir, sets));
  ASSERT_EQ(resumed.exit_code, 0) << resumed.err;
  EXPECT_NE(
      resumed.err.find("resumed from " + dir + "/quickstart/checkpoints/step-00000030: step 30"),
      std::string::npos)
      << resumed.err;
  EXPECT_EQ(line_count(metrics(dir)), 60);
  EXPECT_EQ(metrics(dir), metrics(whole));
}

INSTANTIATE_TEST_SUITE_P(Strategies, KillAndResume,
                         testing::Values("ddp", "zero2", "zero3-offload"), [](const auto& info) {
                           return info.param == "zero3-offload" ? std::string("zero3_offload")
                                                                : info.param;
                         });

DSHOST_SUITE_LABEL(AutomaticRestart, slow);
// launcher.max_restarts = 2: rank 1 killed (SIGKILL) at a random step after the first
// checkpoint; dshost stops the other rank, says why, starts every rank again from the latest
// checkpoint, and the run ends with an uninterrupted run's metrics to the last bit. With
// max_restarts = 0 the same kill fails the job with the rank's exit code, as before.
TEST(AutomaticRestart, AKilledRankRestartsTheJobFromItsLatestCheckpoint) {
  const std::vector<std::string> sets{"train.max_steps=60", "checkpoint.every_steps=10",
                                      "model.dropout=0.3"};
  const std::string whole = scratch_dir("restart_whole");
  ASSERT_EQ(run(run_args(whole, sets)).exit_code, 0);
  std::mt19937 random(std::random_device{}());
  const int step = std::uniform_int_distribution<int>(12, 50)(random);
  for (const int restarts : {2, 0}) {
    const std::string dir = scratch_dir(cat("restart_", restarts));
    std::vector<std::string> restarting = sets;
    restarting.push_back(cat("launcher.max_restarts=", restarts));
    const Job job = start_job(run_args(dir, restarting), dir, cat(" step ", step, "/"));
    const int rank1 =
        pid_of_rank(pids_matching("worker " + kQuickstart + " --set run.output_dir=\"" + dir), 1);
    ASSERT_GT(rank1, 0);
    ASSERT_EQ(kill(rank1, SIGKILL), 0);
    double seconds = 0;
    const int code = wait_for(job, 120, &seconds);
    const std::string log = read_file(dir + "/log");
    if (restarts == 0) {
      EXPECT_EQ(code, 128 + SIGKILL) << log;
      EXPECT_EQ(log.find("restart 1"), std::string::npos) << log;
      continue;
    }
    ASSERT_EQ(code, 0) << "rank 1 killed at step " << step << "\n" << log;
    EXPECT_NE(log.find("dshost: restart 1 of 2 (launcher.max_restarts): starting every rank "
                       "again from the latest checkpoint"),
              std::string::npos)
        << log;
    EXPECT_NE(log.find("resumed from " + dir + "/quickstart/checkpoints/step-"), std::string::npos)
        << log;
    EXPECT_EQ(metrics(dir), metrics(whole)) << "rank 1 killed at step " << step;
  }
}

DSHOST_SUITE_LABEL(CrossStrategyResume, slow);
// Saved by zero3-offload on 2 ranks, resumed by ddp on 1 rank (same global batch), and the
// reverse: training goes on from step 21 with the loss of an uninterrupted run, to float
// rounding (sums in another order).
TEST(CrossStrategyResume, Zero3TwoRanksToDdpOneRankAndBack) {
  const std::vector<std::string> two_zero3{"strategy.plugin=\"zero3-offload\"", "launcher.nprocs=2",
                                           "train.micro_batch_size=32", "train.threads=1"};
  const std::vector<std::string> one_ddp{"strategy.plugin=\"ddp\"", "launcher.nprocs=1",
                                         "train.micro_batch_size=64", "train.threads=1"};
  for (const auto& [first, second] :
       {std::pair{two_zero3, one_ddp}, std::pair{one_ddp, two_zero3}}) {
    const std::string whole = scratch_dir("cross_whole"), dir = scratch_dir("cross_resumed");
    ASSERT_EQ(run(run_args(whole, with(first, {"train.max_steps=40"}))).exit_code, 0);
    ASSERT_EQ(run(run_args(dir, with(first, {"train.max_steps=20", "checkpoint.every_steps=20"})))
                  .exit_code,
              0);
    const Ran resumed = run(run_args(dir, with(second, {"train.max_steps=40"})));
    ASSERT_EQ(resumed.exit_code, 0) << resumed.err;
    EXPECT_NE(resumed.err.find(" step 21/"), std::string::npos) << resumed.err;
    EXPECT_EQ(resumed.err.find(" step 20/"), std::string::npos) << "the resumed run started over";
    const auto expected = losses(whole + "/quickstart"), got = losses(dir + "/quickstart");
    ASSERT_EQ(got.size(), 40u);
    EXPECT_LT(max_abs_difference(got, expected), 1e-4) << first[0] << " -> " << second[0];
  }
}

DSHOST_SUITE_LABEL(Eval, slow);
// dshost eval on the checkpoint a run saved (ddp, 2 ranks) gives, under another strategy and
// world size, the accuracy and loss the run's own evaluation gave at that step, and writes
// them to run_dir/eval/step-N.json.
TEST(Eval, AnyStrategyAndWorldSizeGiveTheRunsOwnEvaluation) {
  const std::string dir = scratch_dir("eval");
  ASSERT_EQ(
      run(run_args(dir, {"train.max_steps=30", "checkpoint.every_steps=30", "train.eval=true"}))
          .exit_code,
      0);
  const auto summary = nlohmann::json::parse(read_file(dir + "/quickstart/summary.json"));
  const double accuracy = summary["test_accuracy"].get<double>();
  const double loss = summary["test_loss"].get<double>();
  for (const auto& [strategy, ranks] : {std::pair{"zero3-offload", 1}, std::pair{"zero2", 2}}) {
    const Ran r = dshost({"eval", kQuickstart, "--set", "run.output_dir=\"" + dir + "\"", "--set",
                          cat("strategy.plugin=\"", strategy, "\""), "--set",
                          cat("launcher.nprocs=", ranks)});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_NE(r.err.find(cat("test accuracy ", std::fixed, std::setprecision(4), accuracy)),
              std::string::npos)
        << r.err;
    const auto result =
        nlohmann::json::parse(read_file(dir + "/quickstart/eval/step-00000030.json"));
    EXPECT_EQ(result["step"], 30);
    EXPECT_EQ(result["samples"], 10000);
    EXPECT_NEAR(result["test_accuracy"].get<double>(), accuracy, 1e-4) << strategy;  // a sample
    EXPECT_NEAR(result["test_loss"].get<double>(), loss, 1e-5 * loss) << strategy;
  }
}

TEST(Eval, WithoutACheckpointItSaysWhereItLookedAndWhatToDo) {
  const std::string dir = scratch_dir("eval_none");
  Ran r = dshost({"eval", kQuickstart, "--set", "run.output_dir=\"" + dir + "\""});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("error: no checkpoint in " + dir +
                       "/quickstart/checkpoints (checkpoint.dir) to evaluate; train with "
                       "checkpoint.every_steps or checkpoint.at_epoch_end set"),
            std::string::npos)
      << r.err;
  r = dshost({"eval", kQuickstart, "--checkpoint", dir + "/nowhere"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("error: --checkpoint " + dir + "/nowhere: no checkpoint there"),
            std::string::npos)
      << r.err;
}

DSHOST_SUITE_LABEL(CrossLayoutResume, slow);
// A checkpoint saved with channels-last weights resumes with NCHW weights.
TEST(CrossLayoutResume, ChannelsLastToNchw) {
  const std::string whole = scratch_dir("layout_whole"), dir = scratch_dir("layout_resumed");
  ASSERT_EQ(run(run_args(whole, {"train.max_steps=30"})).exit_code, 0);
  ASSERT_EQ(run(run_args(dir, {"train.max_steps=15", "checkpoint.every_steps=15"})).exit_code, 0);
  const Ran resumed = run(run_args(dir, {"train.max_steps=30", "model.channels_last=false"}));
  ASSERT_EQ(resumed.exit_code, 0) << resumed.err;
  EXPECT_LT(max_abs_difference(losses(dir + "/quickstart"), losses(whole + "/quickstart")), 1e-4);
}

// A staging directory (step-N.tmp) made since `since`: a save under way, or one cut short.
bool fresh_staging(const std::string& dir, fs::file_time_type since) {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (e.path().extension() == ".tmp" && fs::last_write_time(e.path(), ec) >= since) return true;
  return false;
}

DSHOST_SUITE_LABEL(KilledSaves, slow);
// Checkpoints every step; the job killed with SIGKILL 8 times, each resumed by the next
// attempt: at a random moment of training on odd attempts, on even ones a random 0-8 ms
// after a save has begun (rank 0, which publishes, and rank 1 in turn). Every resume
// succeeds and the run ends exactly where an uninterrupted one does. A save of this small
// model can end before the kill lands (on a loaded machine, 2 of 8 attempts once did), so
// up to 8 more attempts are made until 3 kills have landed inside saves.
TEST(KilledSaves, NeverLeaveACheckpointThatLoadsWrong) {
  const std::vector<std::string> sets{"train.max_steps=120", "checkpoint.every_steps=1",
                                      "checkpoint.keep=2"};
  const std::string whole = scratch_dir("killed_saves_whole");
  ASSERT_EQ(run(run_args(whole, sets)).exit_code, 0);
  const std::string dir = scratch_dir("killed_saves"),
                    checkpoints = dir + "/quickstart/checkpoints";
  std::mt19937 random(20261124);
  const auto ms = [&](int from, int to) {
    return std::chrono::milliseconds(std::uniform_int_distribution<int>(from, to)(random));
  };
  int kills = 0, inside_a_save = 0;
  for (int attempt = 0; attempt < 8 || (inside_a_save < 3 && attempt < 16); ++attempt) {
    const auto started = fs::file_time_type::clock::now();
    const Job job = start_job(run_args(dir, sets), dir, "step ");
    if (attempt % 2 == 1) {
      std::this_thread::sleep_for(ms(50, 600));
    } else {
      for (int i = 0; i < 5000 && !fresh_staging(checkpoints, started); ++i)
        std::this_thread::sleep_for(std::chrono::microseconds(200));
      std::this_thread::sleep_for(ms(0, 8));
    }
    const auto ranks = ranks_matching("worker " + kQuickstart + " --set run.output_dir=\"" + dir);
    const int victim = ranks.empty() ? job.pid : pid_of_rank(ranks, attempt / 2 % 2);
    kill(victim > 0 ? victim : job.pid, SIGKILL);
    double seconds = 0;
    const int code = wait_for(job, 60, &seconds);
    ASSERT_NE(code, 2) << read_file(dir + "/log");  // a resume refused its checkpoint
    ASSERT_EQ(read_file(dir + "/log").find("cannot resume"), std::string::npos)
        << read_file(dir + "/log");
    kills += code != 0;
    inside_a_save += fresh_staging(checkpoints, started);  // left behind by the kill
  }
  EXPECT_GE(kills, 6) << "most attempts must have been killed mid-run";
  EXPECT_GE(inside_a_save, 3) << "the kills must land inside saves too";
  const Ran last = run(run_args(dir, sets));
  ASSERT_EQ(last.exit_code, 0) << last.err;
  EXPECT_EQ(metrics(dir), metrics(whole));
}

// A checkpoint of the quickstart (2 ranks, ddp) to damage in the tests below.
class DamagedCheckpoint : public testing::Test {
 protected:
  void SetUp() override {
    dir_ = scratch_dir(std::string("damaged_") +
                       testing::UnitTest::GetInstance()->current_test_info()->name());
    const Ran saved = run(run_args(dir_, {"train.max_steps=5", "checkpoint.every_steps=5"}));
    ASSERT_EQ(saved.exit_code, 0) << saved.err;
    step_ = dir_ + "/quickstart/checkpoints/step-00000005";
  }
  Ran resume(const std::vector<std::string>& more = {}) {
    std::vector<std::string> sets{"train.max_steps=10"};
    sets.insert(sets.end(), more.begin(), more.end());
    return run(run_args(dir_, sets));
  }
  std::string dir_, step_;
};

DSHOST_SUITE_LABEL(DamagedCheckpoint, slow);
TEST_F(DamagedCheckpoint, AFlippedByteIsDetectedNamingTheFile) {
  const std::string file = step_ + "/rank-00001.safetensors";
  std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(static_cast<std::streamoff>(fs::file_size(file) - 100));
  const char c = static_cast<char>(f.get());
  f.seekp(static_cast<std::streamoff>(fs::file_size(file) - 100));
  f.put(static_cast<char>(c ^ 0x10));
  f.close();
  const Ran r = resume();
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("quickstart.toml: error: cannot resume: "), std::string::npos) << r.err;
  EXPECT_NE(
      r.err.find(
          "checkpoint file " + file +
          " is damaged: its CRC-32C differs from its index's; resume from another checkpoint"),
      std::string::npos)
      << r.err;
}

TEST_F(DamagedCheckpoint, ATruncatedFileIsDetectedNamingTheFile) {
  const std::string file = step_ + "/rank-00000.safetensors";
  const auto size = fs::file_size(file);
  fs::resize_file(file, size - 1000);
  const Ran r = resume();
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("checkpoint file " + file + " is damaged: " + std::to_string(size - 1000) +
                       " bytes where its index says " + std::to_string(size)),
            std::string::npos)
      << r.err;
}

TEST_F(DamagedCheckpoint, AMissingShardIsNamed) {
  fs::remove(step_ + "/rank-00001.safetensors");
  const Ran r = resume();
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("checkpoint file " + step_ + "/rank-00001.safetensors is missing"),
            std::string::npos)
      << r.err;
}

TEST_F(DamagedCheckpoint, AChangedParameterShapeNamesTheTensor) {
  const Ran r = resume({"model.hidden=64"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(
      r.err.find("quickstart.toml: error: cannot resume: tensor fc1.1.weight has shape [128, "),
      std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("in the model; the model's options differ from the run that saved it"),
            std::string::npos)
      << r.err;
}

TEST_F(DamagedCheckpoint, AnotherModelsCheckpointIsRefused) {
  const Ran r = run(run_args(
      dir_, {"model.plugin=\"gpt\"", "model.n_layer=1", "model.n_head=2", "model.n_embd=32",
             "model.vocab_size=256", "model.block_size=32", "data.dataset=\"text\"",
             "data.path=\"\"", "checkpoint.resume=\"" + step_ + "\""}));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("cannot resume: checkpoint " + step_ +
                       " was saved from model 'basic_cnn' but this run trains 'gpt'"),
            std::string::npos)
      << r.err;
}

// The index names what each slice is; an edit (a weight's slice pointed at its AdamW
// moment's data) is refused by the index's own checksum before any tensor is read.
TEST_F(DamagedCheckpoint, AnEditedIndexIsRefusedBeforeAnythingIsRead) {
  const std::string index_path = step_ + "/index.json";
  auto index = nlohmann::json::parse(read_file(index_path));
  auto& slice = index["tensors"]["fc1.1.weight"]["slices"][0];
  slice["key"] = index["tensors"]["fc1.1.weight.exp_avg"]["slices"][0]["key"];
  slice["file"] = index["tensors"]["fc1.1.weight.exp_avg"]["slices"][0]["file"];
  write_file(index_path, index.dump(1) + "\n");
  const Ran r = resume();
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("cannot resume: " + index_path +
                       " is damaged: its content differs from its checksum (index_crc32c)"),
            std::string::npos)
      << r.err;
}

// Without a usable `latest`, the newest complete step directory is resumed from; nothing
// saved before is overwritten or pruned.
TEST_F(DamagedCheckpoint, AMissingEmptyOrDanglingLatestResumesFromTheNewestStep) {
  const std::string checkpoints = dir_ + "/quickstart/checkpoints";
  const std::string rank0 = read_file(step_ + "/rank-00000.safetensors");
  const std::string first_steps = metrics(dir_);
  const std::vector<std::pair<std::string, std::string>> cases{
      {"", "is missing"},
      {"\n", "is empty"},
      {"step-00000099\n", "names 'step-00000099', which is not a whole checkpoint"}};
  int64_t until = 5;
  for (const auto& [latest, said] : cases) {
    fs::remove(checkpoints + "/latest");
    if (!latest.empty() || said == "is empty") write_file(checkpoints + "/latest", latest);
    until += 5;
    const Ran r = run(run_args(dir_, {"train.max_steps=" + std::to_string(until),
                                      "checkpoint.every_steps=5", "checkpoint.keep=0"}));
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const std::string newest = checkpoints + "/" + step_dir_name(until - 5);
    EXPECT_NE(r.err.find(checkpoints + "/latest " + said +
                         ": resuming from the newest complete "
                         "checkpoint, " +
                         newest),
              std::string::npos)
        << r.err;
    EXPECT_NE(r.err.find("resumed from " + newest + ": step " + std::to_string(until - 5)),
              std::string::npos)
        << r.err;
    EXPECT_EQ(line_count(metrics(dir_)), until);
  }
  EXPECT_EQ(read_file(step_ + "/rank-00000.safetensors"), rank0) << "step 5 was overwritten";
  EXPECT_EQ(metrics(dir_).substr(0, first_steps.size()), first_steps);
}

// Running a finished job again changes nothing and succeeds.
TEST_F(DamagedCheckpoint, ACompleteRunRunAgainLeavesEveryFileAsItWas) {
  const std::string run_dir = dir_ + "/quickstart";
  const std::string summary = read_file(run_dir + "/summary.json");
  const std::string jsonl = read_file(run_dir + "/metrics.jsonl");
  const Ran again = run(run_args(dir_, {"train.max_steps=5", "checkpoint.every_steps=5"}));
  EXPECT_EQ(again.exit_code, 0) << again.err;
  EXPECT_NE(again.err.find("the run is already complete: its checkpoint is at step 5 of 5; nothing "
                           "was changed"),
            std::string::npos)
      << again.err;
  EXPECT_EQ(read_file(run_dir + "/summary.json"), summary);
  EXPECT_EQ(read_file(run_dir + "/metrics.jsonl"), jsonl);
  const Ran never = run(run_args(
      dir_, {"train.max_steps=5", "checkpoint.every_steps=5", "checkpoint.resume=\"never\""}));
  EXPECT_EQ(never.exit_code, 2);
  EXPECT_NE(never.err.find("checkpoint.resume = \"never\" but " + run_dir +
                           "/checkpoints already holds checkpoints"),
            std::string::npos)
      << never.err;
  EXPECT_EQ(read_file(run_dir + "/metrics.jsonl"), jsonl);
}

DSHOST_SUITE_LABEL(RunDirectory, slow);
// A second run in a run directory in use refuses at once, naming the holder; the lock goes
// with its holder, even one killed with SIGKILL.
TEST(RunDirectory, ASecondRunThereRefusesAtOnceNamingTheFirst) {
  const std::string dir = scratch_dir("run_directory_lock");
  const std::vector<std::string> sets{"train.max_steps=100000", "checkpoint.every_steps=2"};
  const Job first = start_job(run_args(dir, sets), dir, "step 3/");
  const Ran second = run(run_args(dir, sets));
  EXPECT_EQ(second.exit_code, 2) << second.err;
  EXPECT_NE(second.err.find("run directory " + dir + "/quickstart is in use by another run (host "),
            std::string::npos)
      << second.err;
  const auto ranks = ranks_matching("worker " + kQuickstart + " --set run.output_dir=\"" + dir);
  const int holder = pid_of_rank(ranks, 0);
  EXPECT_NE(second.err.find(", pid " + std::to_string(holder) + ", launch "), std::string::npos)
      << second.err;
  EXPECT_NE(second.err.find("); wait for it to end, or give this run another run.name"),
            std::string::npos)
      << second.err;
  EXPECT_LT(second.seconds, 30);
  EXPECT_EQ(read_file(dir + "/log").find("resumed"), std::string::npos);
  kill(first.pid, SIGKILL);
  double seconds = 0;
  wait_for(first, 30, &seconds);
  const Ran third = run(run_args(dir, {"train.max_steps=6", "checkpoint.every_steps=2"}));
  EXPECT_EQ(third.exit_code, 0) << third.err;
}

DSHOST_SUITE_LABEL(NonFinite, slow);
// A diverging run (SGD at lr 1e5) stops at the first non-finite loss or gradient norm,
// naming its step, before any checkpoint of that state; "ignore" trains on to the end.
TEST(NonFinite, StopNamesTheFirstStepAndSavesNothingOfIt) {
  const std::string dir = scratch_dir("nonfinite");
  const std::vector<std::string> sets{"train.max_steps=40", "train.log_every=10",
                                      "optimizer.name=\"sgd\"", "optimizer.lr=1e5",
                                      "checkpoint.every_steps=3"};
  const Ran stopped = run(run_args(dir, sets));
  EXPECT_EQ(stopped.exit_code, 1) << stopped.err;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(
      stopped.err, m,
      std::regex(
          R"(dshost: error: step (\d+) \(epoch 1\): (the gradient norm is (inf|nan)|the loss of ranks? [0-9, ]+ is not finite); )"
          R"(the run stopped \(train.nonfinite = "stop"\) without saving that state)")))
      << stopped.err;
  const int64_t bad_step = std::stoll(m[1].str());
  const auto norms = metric(dir + "/quickstart", "grad_norm");
  for (const auto& e : fs::directory_iterator(dir + "/quickstart/checkpoints")) {
    const std::string name = e.path().filename().string();
    if (name.rfind("step-", 0) == 0) {
      EXPECT_LT(std::stoll(name.substr(5)), bad_step) << name;
    }
  }
  for (double norm : norms) EXPECT_TRUE(std::isfinite(norm)) << "a non-finite step was recorded";

  const std::string ignored = scratch_dir("nonfinite_ignored");
  std::vector<std::string> on = sets;
  on.push_back("train.nonfinite=\"ignore\"");
  const Ran trained = run(run_args(ignored, on));
  EXPECT_EQ(trained.exit_code, 0) << trained.err;
  EXPECT_EQ(line_count(read_file(ignored + "/quickstart/metrics.jsonl")), 40);
}

// Every tensor of a checkpoint step directory's rank files, by file and name.
std::map<std::string, at::Tensor> checkpoint_tensors(const std::string& step_dir) {
  std::map<std::string, at::Tensor> out;
  for (const auto& e : fs::directory_iterator(step_dir)) {
    if (e.path().extension() != ".safetensors") continue;
    const SafetensorsFile file(e.path().string());
    for (const std::string& name : file.names())
      out[e.path().filename().string() + ":" + name] = file.tensor(name).clone();
  }
  return out;
}

// train.nonfinite = "skip" on each update path of `paths` (name, --set values): a step whose
// outputs are NaN (tests/plugins/failing_model at its third forward) leaves weights, moments
// and the step count as they were, on both ranks; the next step updates again; the run
// ends well and counts the skip.
void expect_skip_drops_the_whole_update(
    const std::vector<std::pair<std::string, std::vector<std::string>>>& paths) {
  for (const auto& [name, strategy] : paths) {
    const std::string dir = scratch_dir("nonfinite_skip_" + name);
    std::vector<std::string> sets{"plugins.paths=\"" DSHOST_TEST_PLUGIN_DIR "\"",
                                  "model.plugin=\"failing_model\"",
                                  "model.fail_in=\"nan_third_forward\"",
                                  "train.nonfinite=\"skip\"",
                                  "train.max_steps=5",
                                  "checkpoint.every_steps=1",
                                  "checkpoint.keep=0",
                                  "data.path=\"" + fashion_mnist_dir() + "\""};
    sets.insert(sets.end(), strategy.begin(), strategy.end());
    const Ran r = run(run_args(dir, sets));
    ASSERT_EQ(r.exit_code, 0) << name << ": " << r.err;
    EXPECT_NE(r.err.find("step 3: the gradient norm is nan; its update was skipped "
                         "(train.nonfinite = \"skip\")"),
              std::string::npos)
        << name << ": " << r.err;
    const std::string checkpoints = dir + "/quickstart/checkpoints/";
    const auto before = checkpoint_tensors(checkpoints + "step-00000002"),
               skipped = checkpoint_tensors(checkpoints + "step-00000003"),
               after = checkpoint_tensors(checkpoints + "step-00000004");
    ASSERT_EQ(before.size(), skipped.size()) << name;
    int changed = 0, trained = 0;  // (the ranks' RNG states are not trained)
    for (const auto& [key, t] : before) {
      EXPECT_TRUE(at::equal(t, skipped.at(key))) << name << ": step 3 changed " << key;
      if (key.find(":rng.") != std::string::npos) continue;
      ++trained;
      if (!at::equal(t, after.at(key))) ++changed;
      if (key.find(":optimizer.step") != std::string::npos) {
        EXPECT_EQ(skipped.at(key).item<int64_t>(), 2) << name << ": " << key;
        EXPECT_EQ(after.at(key).item<int64_t>(), 3) << name << ": " << key;
      }
    }
    EXPECT_EQ(changed, trained) << name << ": step 4 updated every tensor";
    const auto summary = nlohmann::json::parse(read_file(dir + "/quickstart/summary.json"));
    EXPECT_EQ(summary["skipped_steps"], 1) << name;
    EXPECT_TRUE(std::isfinite(summary["final_train_loss"].get<double>())) << name;
  }
}

// Every update path on the CPU: ddp's AdamW and SGD loops (over fp32 masters of bf16
// parameters too), zero2's fused AdamW, zero3-offload's delayed update.
TEST(NonFinite, SkipDropsTheWholeUpdateOfANonFiniteStep) {
  expect_skip_drops_the_whole_update({
      {"ddp_adamw", {"strategy.plugin=\"ddp\""}},
      {"ddp_sgd", {"strategy.plugin=\"ddp\"", "optimizer.name=\"sgd\"", "optimizer.momentum=0.9"}},
      {"ddp_bf16", {"strategy.plugin=\"ddp\"", "train.precision=\"bf16\""}},
      {"zero2", {"strategy.plugin=\"zero2\""}},
      {"zero3_dpu",
       {"strategy.plugin=\"zero3-offload\"", "strategy.offload_param_device=\"cpu\"",
        "strategy.delayed_parameter_update=true"}},
  });
}

DSHOST_SUITE_LABEL(NonFiniteOnGpu, gpu);
// The GPU's paths, deciding on the device (two ranks on one GPU): PyTorch's fused AdamW and
// SGD under ddp, dshost's CUDA AdamW under ddp and zero2 in bf16, and zero3-offload's
// optimizer split between that kernel and the CPU.
TEST(NonFiniteOnGpu, SkipDropsTheWholeUpdate) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  expect_skip_drops_the_whole_update({
      {"cuda_ddp_adamw", {"train.device=\"cuda\"", "strategy.plugin=\"ddp\""}},
      {"cuda_ddp_sgd",
       {"train.device=\"cuda\"", "strategy.plugin=\"ddp\"", "optimizer.name=\"sgd\"",
        "optimizer.momentum=0.9"}},
      {"cuda_ddp_bf16",
       {"train.device=\"cuda\"", "train.precision=\"bf16\"", "strategy.plugin=\"ddp\""}},
      {"cuda_zero2_bf16",
       {"train.device=\"cuda\"", "train.precision=\"bf16\"", "strategy.plugin=\"zero2\""}},
      {"cuda_zero3_split",
       {"train.device=\"cuda\"", "train.precision=\"bf16\"", "strategy.plugin=\"zero3-offload\"",
        "strategy.offload_optimizer_ratio=0.5"}},
  });
}

// Ten skipped steps in a row end the run, naming them; a strategy built before ABI 1.5
// cannot skip and is refused before the run starts.
TEST(NonFinite, TenSkipsInARowStopTheRun) {
  const std::string dir = scratch_dir("nonfinite_skip_ten");
  const Ran r = run(
      run_args(dir, {"plugins.paths=\"" DSHOST_TEST_PLUGIN_DIR "\"",
                     "model.plugin=\"failing_model\"", "model.fail_in=\"nan_from_third_forward\"",
                     "train.nonfinite=\"skip\"", "train.max_steps=40", "train.log_every=5"}));
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(
      r.err.find(
          "dshost: error: steps 3 to 12 (epoch 1): 10 steps in a row had a non-finite gradient "
          "norm and were skipped (train.nonfinite = \"skip\"); the run stopped."),
      std::string::npos)
      << r.err;
  EXPECT_EQ(r.err.find("step 16:"), std::string::npos) << "it trained on: " << r.err;

  const Ran old =
      run(run_args(dir, {"plugins.paths=\"" DSHOST_TEST_PLUGIN_DIR "\"",
                         "strategy.plugin=\"frozen_sgd_abi14\"", "train.nonfinite=\"skip\""}));
  EXPECT_EQ(old.exit_code, 2) << old.err;
  EXPECT_NE(
      old.err.find(
          "--set train.nonfinite=\"skip\": error: train.nonfinite = \"skip\" needs a strategy "
          "built for dshost ABI 1.5 "
          "or later, but strategy 'frozen_sgd_abi14' is built for 1.4 and cannot drop an update; "
          "rebuild it "
          "against this SDK, or set train.nonfinite = \"stop\""),
      std::string::npos)
      << old.err;
}

// ---- monitoring ---------------------------------------------------------------------------

DSHOST_SUITE_LABEL(Monitoring, slow);
// The TensorBoard event file, read back by an independent reader (Python's protobuf with
// TensorBoard's message definitions, its own CRC-32C), holds every scalar of every step of
// metrics.jsonl and metrics.csv at its step, and the evaluation's accuracy; a resumed run's
// file tells TensorBoard to drop the first run's later steps.
TEST(Monitoring, EventFileCsvAndJsonlHoldTheSameScalars) {
  const std::string dir = scratch_dir("monitoring");
  ASSERT_EQ(run(run_args(dir, {"train.max_steps=20", "checkpoint.every_steps=10", "train.eval=true",
                               "train.log_every=5", "train.peak_tflops=0.5"}))
                .exit_code,
            0);
  const auto jsonl = [&] {
    std::vector<nlohmann::json> rows;
    std::istringstream lines(read_file(dir + "/quickstart/metrics.jsonl"));
    for (std::string line; std::getline(lines, line);) rows.push_back(nlohmann::json::parse(line));
    return rows;
  };
  const auto events = [&](const std::string& file) {
    const Ran r = run({"/usr/bin/python3", DSHOST_SOURCE_DIR "/tests/read_events.py", file});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return nlohmann::json::parse(r.out.empty() ? "{}" : r.out);
  };
  std::vector<std::string> files;
  for (const auto& e : fs::directory_iterator(dir + "/quickstart/tensorboard"))
    files.push_back(e.path().string());
  ASSERT_EQ(files.size(), 1u);
  const nlohmann::json first = events(files[0]);
  EXPECT_EQ(first["file_version"], "brain.Event:2");
  std::map<std::pair<int64_t, std::string>, double> scalars;
  for (const auto& s : first["scalars"])
    scalars[{s[0].get<int64_t>(), s[1].get<std::string>()}] = s[2];
  const auto rows = jsonl();
  ASSERT_EQ(rows.size(), 20u);
  const std::vector<std::string> csv_lines = [&] {
    std::vector<std::string> out;
    std::istringstream lines(read_file(dir + "/quickstart/metrics.csv"));
    for (std::string line; std::getline(lines, line);) out.push_back(line);
    return out;
  }();
  ASSERT_EQ(csv_lines.size(), 21u);
  EXPECT_EQ(csv_lines[0],
            "step,epoch,loss,lr,grad_norm,samples_per_second,peak_host_bytes,peak_device_bytes");
  for (size_t i = 0; i < rows.size(); ++i) {
    const int64_t step = rows[i]["step"];
    for (const auto& [tag, column] : std::vector<std::pair<std::string, std::string>>{
             {"train/loss", "loss"},
             {"train/lr", "lr"},
             {"train/grad_norm", "grad_norm"},
             {"throughput/samples_per_second", "samples_per_second"},
             {"memory/peak_host_bytes", "peak_host_bytes"}}) {
      const std::pair<int64_t, std::string> key{step, tag};
      ASSERT_TRUE(scalars.count(key)) << tag << " at step " << step;
      const double want = rows[i][column].get<double>();
      EXPECT_NEAR(scalars[key], want, 1e-6 * std::max(1.0, std::abs(want))) << tag << " " << step;
    }
    double csv_loss = 0;
    ASSERT_EQ(std::sscanf(csv_lines[i + 1].c_str(), "%*[^,],%*[^,],%lf", &csv_loss), 1);
    EXPECT_NEAR(csv_loss, rows[i]["loss"].get<double>(), 1e-8) << csv_lines[i + 1];
  }
  const auto summary = nlohmann::json::parse(read_file(dir + "/quickstart/summary.json"));
  const std::pair<int64_t, std::string> accuracy{20, "test/accuracy"};
  ASSERT_TRUE(scalars.count(accuracy));
  EXPECT_NEAR(scalars[accuracy], summary["test_accuracy"].get<double>(), 1e-6);
  EXPECT_GT(summary["test_accuracy"].get<double>(), 0.3) << "the run learned nothing";
  // FLOPs: basic_cnn's units as built (conv1: 3x3, 1 -> 32 channels at 28x28), training as 3
  // forwards, MFU against 2 ranks x the manifest's 0.5 TFLOP/s.
  const auto& profile = summary["flops_profile"];
  ASSERT_EQ(profile.size(), 4u);
  EXPECT_EQ(profile[0]["unit"], "conv1");
  EXPECT_EQ(profile[0]["forward_flops_per_sample"], 2 * 9 * 1 * 32 * 28 * 28);
  EXPECT_EQ(profile[0]["parameters"], 9 * 32 + 32);
  // ... at the steady rate (after the first report window), which TensorBoard has beside
  // the whole run's.
  ASSERT_EQ(summary["flops_rate"], "steady");
  const double steady = summary["steady_samples_per_second"].get<double>();
  const double whole = summary["samples_per_second"].get<double>();
  const std::pair<int64_t, std::string> steady_tag{20, "run/steady_samples_per_second"},
      whole_tag{20, "run/samples_per_second"};
  EXPECT_NEAR(scalars[steady_tag], steady, 1e-6 * steady);
  EXPECT_NEAR(scalars[whole_tag], whole, 1e-6 * whole);
  const double achieved = 3.0 * summary["forward_flops_per_sample"].get<double>() * steady / 1e12;
  EXPECT_NEAR(summary["achieved_tflops"].get<double>(), achieved, 1e-12);
  EXPECT_NEAR(summary["mfu"].get<double>(), achieved / 1.0, 1e-12);

  // Resumed from step 10 to step 30: rows 11..20 are recomputed, not duplicated.
  const Ran resumed = run(
      run_args(dir, {"train.max_steps=30", "train.log_every=5",
                     "checkpoint.resume=\"" + dir + "/quickstart/checkpoints/step-00000010\""}));
  ASSERT_EQ(resumed.exit_code, 0) << resumed.err;
  EXPECT_EQ(jsonl().size(), 30u);
  EXPECT_EQ(line_count(read_file(dir + "/quickstart/metrics.csv")), 31);
  files.clear();
  for (const auto& e : fs::directory_iterator(dir + "/quickstart/tensorboard"))
    files.push_back(e.path().string());
  ASSERT_EQ(files.size(), 2u);
  std::sort(files.begin(), files.end());  // named by creation second, then host
  const nlohmann::json second = events(files[1]);
  EXPECT_EQ(second["restarts"], nlohmann::json::array({11}));
}

}  // namespace
}  // namespace dshost::test
