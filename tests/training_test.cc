// Whole runs through `dshost run`: numerics of ddp across world sizes, accumulation and
// clipping; fail-fast and Ctrl-C on real training jobs; the quickstart's accuracy.
#include "tests/test_labels.h"
#include "tests/test_util.h"

#include <dshost/launcher.hpp>  // kStoppedByAnotherRank, hostname()

#include <gtest/gtest.h>

#include <regex>
#include <nlohmann/json.hpp>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <cmath>
#include <thread>

namespace dshost::test {
namespace {

const std::string kQuickstart = quickstart_manifest();

DSHOST_SUITE_LABEL(DdpNumerics, slow);
// 2 ranks x 32 and 2 ranks x (16 x 2 accumulated) follow 1 rank x 64 step for step:
// the same 64 samples, the gradient of the same mean loss, clipped by the same norm.
// fp32 sums in another order differ in the last bits: measured 6e-7 after 20 Adam steps
// (2e-7 for SGD with momentum).
// The two-rank runs also vary how gradients travel: buckets of 50k elements (four
// all-reduces started during backward), one bucket, and all-reduce only in step().
TEST(DdpNumerics, TwoRanksMatchOneRankWithTheSameGlobalBatch) {
  const std::vector<std::string> common{"train.max_steps=20", "train.threads=1",
                                        "train.grad_clip=0.5", "train.eval=false"};
  auto with = [&](std::vector<std::string> extra) {
    extra.insert(extra.end(), common.begin(), common.end());
    return extra;
  };
  const auto one =
      train_quickstart("one_rank", with({"launcher.nprocs=1", "train.micro_batch_size=64"}));
  const auto two =
      train_quickstart("two_ranks", with({"launcher.nprocs=2", "train.micro_batch_size=32",
                                          "strategy.reduce_bucket_size=50000"}));
  const auto accum = train_quickstart(
      "two_ranks_accum",
      with({"launcher.nprocs=2", "train.micro_batch_size=16", "train.grad_accum_steps=2"}));
  const auto late = train_quickstart(
      "two_ranks_no_overlap",
      with({"launcher.nprocs=2", "train.micro_batch_size=32", "strategy.overlap_comm=false"}));
  ASSERT_EQ(one.size(), 20u);
  EXPECT_LT(one.back(), one.front() - 0.5) << "the reference run did not learn";
  EXPECT_LT(max_abs_difference(one, two), 1e-5);
  EXPECT_LT(max_abs_difference(one, accum), 1e-5);
  EXPECT_LT(max_abs_difference(one, late), 1e-5);
  // And the comparison can fail: another global batch gives another trajectory.
  const auto other =
      train_quickstart("other_batch", with({"launcher.nprocs=2", "train.micro_batch_size=24"}));
  EXPECT_GT(max_abs_difference(one, other), 1e-2);
}

TEST(DdpNumerics, SgdWithMomentumAlsoMatchesAcrossWorldSizes) {
  const std::vector<std::string> sgd{"train.max_steps=20",     "train.threads=1",
                                     "train.eval=false",       "scheduler.warmup_steps=0",
                                     "optimizer.name=sgd",     "optimizer.lr=0.05",
                                     "optimizer.momentum=0.9", "optimizer.weight_decay=0.0005"};
  auto with = [&](std::vector<std::string> extra) {
    extra.insert(extra.end(), sgd.begin(), sgd.end());
    return extra;
  };
  const auto one =
      train_quickstart("sgd_one", with({"launcher.nprocs=1", "train.micro_batch_size=64"}));
  const auto two =
      train_quickstart("sgd_two", with({"launcher.nprocs=2", "train.micro_batch_size=32"}));
  ASSERT_EQ(one.size(), 20u);
  EXPECT_LT(one.back(), one.front() - 0.5) << "SGD did not learn";
  EXPECT_LT(max_abs_difference(one, two), 1e-5);
}

TEST(DdpNumerics, TheSameSeedRepeatsBitForBitAndAnotherSeedDoesNot) {
  const std::vector<std::string> run{"train.max_steps=10", "train.eval=false", "launcher.nprocs=2"};
  const auto a = train_quickstart("seed_a", run);
  const auto b = train_quickstart("seed_b", run);
  auto other_seed = run;
  other_seed.push_back("run.seed=7");
  const auto c = train_quickstart("seed_c", other_seed);
  ASSERT_EQ(a.size(), 10u);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
}

DSHOST_SUITE_LABEL(ProgressOutput, slow);
// Progress: on a terminal (a pseudo-terminal here), rank 0's bar is drawn in place under the
// log lines and gone at the end; in a pipe or a log file only the plain lines appear.
TEST(ProgressOutput, ABarOnATerminalPlainLinesElsewhere) {
  const std::string dir = scratch_dir("training_progress");
  const std::vector<std::string> args{DSHOST_BINARY,
                                      "run",
                                      kQuickstart,
                                      "--set",
                                      "run.output_dir=\"" + dir + "\"",
                                      "--set",
                                      "train.max_steps=40",
                                      "--set",
                                      "train.eval=false",
                                      "--set",
                                      "train.log_every=20"};
  std::vector<std::string> on_terminal{"/usr/bin/python3", "-c",
                                       "import pty, sys; pty.spawn(sys.argv[1:])"};
  on_terminal.insert(on_terminal.end(), args.begin(), args.end());
  const Ran terminal = run(on_terminal);
  ASSERT_EQ(terminal.exit_code, 0) << terminal.out;
  const std::regex bar(
      "\r\x1b\\[2K\\[rank 0\\] \\[#*\\.*\\] \\d+% step \\d+/40 epoch 1/2 loss \\d\\.\\d{4} "
      "\\d+ samples/s eta \\d+s");
  EXPECT_TRUE(std::regex_search(terminal.out, bar)) << terminal.out;
  const std::string tail = terminal.out.substr(terminal.out.rfind("summary written to"));
  EXPECT_EQ(tail.find("% step"), std::string::npos) << "the bar outlived the run: " << tail;

  const Ran piped = run(args);
  ASSERT_EQ(piped.exit_code, 0) << piped.err;
  EXPECT_EQ(piped.err.find('\r'), std::string::npos) << piped.err;
  EXPECT_NE(piped.err.find("epoch 1/2 step 40/937 loss "), std::string::npos) << piped.err;
}

// A long quickstart run in the background with `sets` (--set values), under way when this
// returns.
Job start_long_run(const std::string& name, const std::vector<std::string>& sets = {}) {
  const std::string dir = scratch_dir("training_" + name);
  std::vector<std::string> args{DSHOST_BINARY,
                                "run",
                                kQuickstart,
                                "--set",
                                "run.output_dir=\"" + dir + "\"",
                                "--set",
                                "train.epochs=50",
                                "--set",
                                "train.log_every=1"};
  for (const auto& s : sets) args.insert(args.end(), {"--set", s});
  return start_job(args, dir, "step 5/");
}

// dshost's arguments for the quickstart with tests/plugins/failing_model failing as `fail_in`
// says, 10 steps.
std::vector<std::string> failing_model_args(const std::string& dir, const std::string& fail_in,
                                            const std::vector<std::string>& sets) {
  std::vector<std::string> args{"run",   kQuickstart,
                                "--set", "run.output_dir=\"" + dir + "\"",
                                "--set", "plugins.paths=\"" DSHOST_TEST_PLUGIN_DIR "\"",
                                "--set", "model.plugin=failing_model",
                                "--set", "model.fail_in=\"" + fail_in + "\"",
                                "--set", "train.max_steps=10",
                                "--set", "train.eval=false"};
  for (const auto& s : sets) args.insert(args.end(), {"--set", s});
  return args;
}

Ran run_failing_model(const std::string& dir, const std::string& fail_in,
                      const std::vector<std::string>& sets) {
  return dshost(failing_model_args(dir, fail_in, sets));
}

// The summary's steady rate (and the MFU figured from it) leaves out the first report window,
// slowed here by half a second (tests/plugins/failing_model's slow_forwards); the whole run's
// rate stays beside it.
TEST(ProgressOutput, TheSteadyRateLeavesOutASlowFirstWindow) {
  const std::string dir = scratch_dir("training_steady");
  const Ran r = run_failing_model(dir, "never", {"model.slow_forwards=5", "train.log_every=5"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto summary = nlohmann::json::parse(read_file(dir + "/quickstart/summary.json"));
  EXPECT_EQ(summary["steady_samples"], 5 * 64) << "the second window: steps 6 to 10 of 64";
  EXPECT_GE(summary["train_time_s"].get<double>() - summary["steady_time_s"].get<double>(), 0.5);
  const double steady = summary["steady_samples_per_second"].get<double>();
  EXPECT_GT(steady, summary["samples_per_second"].get<double>());
  EXPECT_EQ(summary["flops_rate"], "steady");
  EXPECT_NE(r.err.find(cat(" samples/s (steady ", std::lround(steady), "), ")), std::string::npos)
      << r.err;
}

// The worker processes of the job in `dir` (their command line names the run dir).
std::vector<int> workers_of(const Job& job) {
  return pids_matching("worker " + kQuickstart + " --set run.output_dir=\"" + job.dir);
}

// Sends `signal` to rank 1 of the job's two ranks.
void signal_rank1(const Job& job, int signal) {
  const auto workers = workers_of(job);
  ASSERT_EQ(workers.size(), 2u) << read_file(job.dir + "/log");
  const int rank1 = pid_of_rank(workers, 1);
  ASSERT_GT(rank1, 0);
  kill(rank1, signal);
}

DSHOST_SUITE_LABEL(FailFast, slow);
TEST(FailFast, KillingOneRankEndsTheJobNamingTheRank) {
  const Job job = start_long_run("kill_rank");
  ASSERT_NO_FATAL_FAILURE(signal_rank1(job, SIGKILL));
  double seconds = 0;
  const int code = wait_for(job, 20, &seconds);
  EXPECT_EQ(code, 128 + SIGKILL);
  EXPECT_LT(seconds, 10.0);
  const std::string log = read_file(job.dir + "/log");
  EXPECT_NE(log.find("dshost: error: rank 1 on host "), std::string::npos) << log;
  EXPECT_NE(log.find("was killed by signal 9"), std::string::npos) << log;
  EXPECT_TRUE(workers_of(job).empty()) << "a rank outlived the job";
}

// The last line of a failed job: the launcher's verdict.
std::string last_line(const std::string& text) {
  const size_t end = text.find_last_not_of('\n');
  if (end == std::string::npos) return "";
  const size_t newline = text.rfind('\n', end);
  const size_t begin = newline == std::string::npos ? 0 : newline + 1;
  return text.substr(begin, end + 1 - begin);
}

// The rank whose plugin call threw is named, never the rank that lost its peer mid-collective,
// in every one of 20 runs.
TEST(FailFast, ARankThatThrowsIsNamedNotTheRankLeftWaiting) {
  const std::string dir = scratch_dir("training_rank1_throws");
  int named = 0;
  for (int attempt = 0; attempt < 20; ++attempt) {
    const Ran r =
        run_failing_model(dir, "rank1_forward", {"run.name=\"a" + std::to_string(attempt) + "\""});
    EXPECT_EQ(r.exit_code, 2) << r.err;  // failing_model's error: DSHOST_INVALID_ARGUMENT
    const std::string verdict = last_line(r.err);
    named += verdict.rfind("dshost: error: rank 1 on host ", 0) == 0;
    EXPECT_EQ(verdict.rfind("dshost: error: rank 1 on host ", 0), 0u) << r.err;
  }
  EXPECT_EQ(named, 20);
}

// A stopped rank (SIGSTOP) is named, with its host, by the rank whose collective waited for
// it, and the job ends within comm.timeout_s + 2 s of the stop.
TEST(FailFast, AStoppedRankIsNamedWithinTheTimeout) {
  const Job job = start_long_run("stopped_rank", {"comm.timeout_s=4"});
  ASSERT_NO_FATAL_FAILURE(signal_rank1(job, SIGSTOP));
  double seconds = 0;
  const int code = wait_for(job, 60, &seconds);
  const std::string log = read_file(job.dir + "/log");
  EXPECT_EQ(code, kStoppedByAnotherRank) << log;
  EXPECT_LT(seconds, 4.0 + 2.0) << log;
  EXPECT_EQ(last_line(log).rfind("dshost: error: rank 1 on host " + hostname() +
                                     " does not answer (stopped, hung or ended); ",
                                 0),
            0u)
      << log;
  EXPECT_NE(last_line(log).find("(reported by rank 0 on host "), std::string::npos) << log;
  EXPECT_TRUE(workers_of(job).empty()) << "a rank outlived the job";
}

// A rank's error is printed before its teardown, which may wait (here the model's destruction
// waits for a file): the message is there while the job still runs, and printed once.
TEST(FailFast, ARanksErrorIsPrintedBeforeItsTeardown) {
  const std::string dir = scratch_dir("training_error_before_teardown"),
                    release = dir + "/release_the_teardown",
                    error = "model forward_backward failed";
  std::vector<std::string> argv = failing_model_args(
      dir, "forward", {"model.teardown_waits_for=\"" + release + "\"", "launcher.nprocs=1"});
  argv.insert(argv.begin(), DSHOST_BINARY);
  const Job job = start_job(argv, dir, error);
  const std::string printed = read_file(dir + "/log");
  int status = 0;
  EXPECT_EQ(waitpid(job.pid, &status, WNOHANG), 0) << "the job ended before its teardown could";
  write_file(release, "");
  double seconds = 0;
  EXPECT_EQ(wait_for(job, 150, &seconds), 1);
  EXPECT_NE(printed.find("dshost: error: "), std::string::npos) << printed;
  const std::string log = read_file(dir + "/log");
  EXPECT_EQ(log.find(error), log.rfind(error)) << log;
}

// Collectives of different sizes on two ranks: one message that says so, with the rank's
// last collective, instead of gloo's abort.
TEST(FailFast, CollectivesThatDoNotMatchAcrossRanksAreExplained) {
  const std::string dir = scratch_dir("training_mismatched_collective");
  const Ran r = run_failing_model(dir, "mismatched_collective", {"comm.timeout_s=10"});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(
      r.err.find("the ranks' collectives do not match: they were issued with different sizes or "
                 "in a different order on different ranks (this rank's last: all_reduce of "),
      std::string::npos)
      << r.err;
  for (const char* crash : {"terminate called", "Aborted", "core dumped"})
    EXPECT_EQ(r.err.find(crash), std::string::npos) << r.err;
}

// A rendezvous port another program listens on: rank 0 says which port on which host is
// taken and what to set, in one message without LibTorch's backtrace.
TEST(FailFast, ARendezvousPortInUseIsNamedWithWhatToDo) {
  const Listener listener;
  ASSERT_GT(listener.port, 0);
  const int port = listener.port;
  const std::string dir = scratch_dir("training_port_in_use");
  const Ran r = dshost({"run", kQuickstart, "--set", "run.output_dir=\"" + dir + "\"", "--set",
                        "launcher.nprocs=1", "--set", cat("launcher.master_port=", port)});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find(cat("rank 0 on ", hostname(), ": rendezvous at 127.0.0.1:", port,
                           " failed: port ", port, " is in use on ", hostname(),
                           ": set launcher.master_port (MASTER_PORT) to a free port")),
            std::string::npos)
      << r.err;
  for (const char* trace : {"Exception raised from", "frame #"})
    EXPECT_EQ(r.err.find(trace), std::string::npos) << r.err;
}

TEST(FailFast, CtrlCStopsEveryRank) {
  const Job job = start_long_run("ctrl_c");
  ASSERT_EQ(workers_of(job).size(), 2u) << read_file(job.dir + "/log");
  kill(job.pid, SIGINT);
  double seconds = 0;
  const int code = wait_for(job, 20, &seconds);
  EXPECT_EQ(code, 128 + SIGINT);
  EXPECT_LT(seconds, 10.0);
  EXPECT_NE(read_file(job.dir + "/log").find("interrupted by Interrupt: stopped every rank"),
            std::string::npos);
  EXPECT_TRUE(workers_of(job).empty()) << "a rank outlived Ctrl-C";
}

// train.profile_steps: steps 4 and 5 of 8, on each rank, as ranges holding that step's
// forward (the convolutions) and backward; a window past the end says so and writes nothing.
TEST(Profiler, TracesTheChosenStepsWithTheirOperatorsOnEveryRank) {
  const std::string dir = scratch_dir("training_profile");
  const auto run_with = [&](const std::string& after) {
    return dshost({"run", kQuickstart, "--set", "run.output_dir=\"" + dir + "\"", "--set",
                   "train.max_steps=8", "--set", "train.eval=false", "--set",
                   "train.profile_steps=2", "--set", "train.profile_after=" + after});
  };
  const Ran r = run_with("3");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const std::string rank : {"0", "1"}) {
    const auto trace = nlohmann::json::parse(
        read_file(dir + "/quickstart/profile/rank" + rank + ".pt.trace.json"));
    std::vector<std::pair<double, double>> steps;  // [start, end) in us
    std::vector<std::string> names;
    for (const auto& e : trace.at("traceEvents")) {
      const std::string name = e.at("name");
      if (name.rfind("ProfilerStep#", 0) == 0) {
        names.push_back(name);
        steps.emplace_back(e.at("ts").get<double>(),
                           e.at("ts").get<double>() + e.at("dur").get<double>());
      }
    }
    EXPECT_EQ(names, (std::vector<std::string>{"ProfilerStep#4", "ProfilerStep#5"}));
    ASSERT_EQ(steps.size(), 2u);
    int forward = 0, backward = 0;
    for (const auto& e : trace.at("traceEvents")) {
      const std::string name = e.at("name");
      const double ts = e.at("ts");
      const bool inside = std::any_of(steps.begin(), steps.end(),
                                      [&](auto s) { return ts >= s.first && ts < s.second; });
      forward += inside && name == "aten::convolution";
      backward += inside && name == "aten::convolution_backward";
    }
    EXPECT_EQ(forward, 2 * 2) << "basic_cnn has 2 convolutions";
    EXPECT_EQ(backward, 2 * 2);
    // Allocations are recorded: conv1's output, [32, 32, 28, 28] floats, once a step.
    int conv1_outputs = 0;
    for (const auto& e : trace.at("traceEvents"))
      conv1_outputs +=
          e.at("name") == "[memory]" && e.at("args").at("Bytes") == 32 * 32 * 28 * 28 * 4;
    EXPECT_GE(conv1_outputs, 2) << "no allocation of conv1's output in two steps";
  }
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir + "/quickstart/profile"),
                          std::filesystem::directory_iterator{}),
            2)
      << "two traces, no partial files";

  const Ran late = run_with("8");
  ASSERT_EQ(late.exit_code, 0) << late.err;
  EXPECT_NE(
      late.err.find("train.profile_after = 8 skips past the last of 8 steps: nothing is profiled"),
      std::string::npos)
      << late.err;
}

// The README's first command: the quickstart reaches 0.90 test accuracy, and so it does
// when only strategy.plugin changes.
class Quickstart : public testing::TestWithParam<std::string> {};

DSHOST_SUITE_LABEL(Quickstart, slow);
TEST_P(Quickstart, ReachesNinetyPercentTestAccuracy) {
  const std::string dir = scratch_dir("training_quickstart_" + GetParam());
  const Ran r = dshost({"run", kQuickstart, "--set", "run.output_dir=\"" + dir + "\"", "--set",
                        "strategy.plugin=" + GetParam()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto summary = nlohmann::json::parse(read_file(dir + "/quickstart/summary.json"));
  EXPECT_GE(summary.at("test_accuracy").get<double>(), 0.90) << summary.dump(2);
  EXPECT_EQ(summary.at("strategy").get<std::string>(), GetParam());
  EXPECT_EQ(summary.at("world_size").get<int>(), 2);
  EXPECT_GT(summary.at("samples_per_second").get<double>(), 0);
  EXPECT_GT(summary.at("memory_per_rank_bytes").at("optim_device").get<int64_t>(), 0);
  EXPECT_NE(r.err.find("[rank 0] "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("summary: test accuracy"), std::string::npos) << r.err;
}

INSTANTIATE_TEST_SUITE_P(Strategies, Quickstart, testing::Values("ddp", "zero2", "zero3-offload"),
                         [](const auto& info) {
                           std::string name = info.param;
                           name.erase(std::remove(name.begin(), name.end(), '-'), name.end());
                           return name;
                         });

}  // namespace
}  // namespace dshost::test
