// Whole training runs through the ssh launcher (two hosts: network namespaces with their own
// sshd) and the slurm launcher (a real single-node Slurm cluster): the same losses as a
// local run, and a dead rank or Ctrl-C ending every rank everywhere.
#include "tests/cluster_fixtures.h"
#include "tests/test_labels.h"
#include "tests/test_util.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <signal.h>

#include <filesystem>
#include <regex>

namespace dshost::test {
namespace {

const std::string kSsh = std::string(DSHOST_SOURCE_DIR) + "/configs/multinode-ssh.toml";
const std::string kSlurm = std::string(DSHOST_SOURCE_DIR) + "/configs/slurm.toml";
const std::vector<std::string> kShortRun = {
    "--set", "train.max_steps=20", "--set", "train.eval=false", "--set", "train.log_every=5"};

// The 20 losses of the quickstart's model and data on 2 local ranks: what every launcher
// must reproduce bit for bit (the same ranks compute the same sums in the same order).
const std::vector<double>& local_losses() {
  static const std::vector<double> losses = train_quickstart(
      "launcher_reference", {"launcher.nprocs=2", "train.max_steps=20", "train.eval=false"});
  return losses;
}

std::vector<int> agents() { return pids_matching("dshost agent "); }

// ---- ssh ----------------------------------------------------------------------------------

class SshTraining : public SshHostsTest {
 protected:
  std::vector<std::string> run_args(const std::string& epochs_or_steps) {
    return with({DSHOST_BINARY, "run", kSsh, "--set", "run.output_dir=\"" + dir_ + "\"", "--set",
                 epochs_or_steps, "--set", "train.log_every=1"},
                ssh_sets(std::string(kHostA) + " slots=1\n" + kHostB + " slots=1\n"));
  }
  std::vector<int> workers() {
    return ranks_matching("worker " + kSsh + " --set run.output_dir=\"" + dir_);
  }
};

DSHOST_SUITE_LABEL(SshTraining, slow);
// One thread per rank as on the local run, where 2 ranks share 2 cores (train.threads = 0
// gives each of these 1-rank nodes both cores, and a thread pool sums in another order).
TEST_F(SshTraining, TwoHostsFollowALocalTwoRankRunExactly) {
  const Ran r = run(with(run_args("train.max_steps=20"),
                         {"--set", "train.eval=false", "--set", "train.threads=1"}));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("[rank 0] "), std::string::npos) << r.err;
  ASSERT_EQ(local_losses().size(), 20u);
  EXPECT_EQ(losses(dir_ + "/multinode"), local_losses());
}

TEST_F(SshTraining, KillingARankOnOneHostEndsEveryRankOnEveryHost) {
  const Job job = start_job(run_args("train.epochs=50"), dir_, "step 5/");
  const int victim = pid_of_rank(workers(), 1);
  ASSERT_GT(victim, 0) << read_file(dir_ + "/log");
  kill(victim, SIGKILL);
  double seconds = 0;
  EXPECT_EQ(wait_for(job, 30, &seconds), 128 + SIGKILL);
  EXPECT_LT(seconds, 10.0);
  EXPECT_NE(read_file(dir_ + "/log")
                .find("dshost: error: rank 1 on host 10.231.0.2 was killed by "
                      "signal 9 (Killed); stopped every rank on every node"),
            std::string::npos)
      << read_file(dir_ + "/log");
  EXPECT_TRUE(workers().empty()) << "a rank outlived the job";
  EXPECT_TRUE(agents().empty()) << "an agent outlived the job";
}

TEST_F(SshTraining, CtrlCStopsEveryRankOnEveryHost) {
  const Job job = start_job(run_args("train.epochs=50"), dir_, "step 5/");
  ASSERT_EQ(workers().size(), 2u) << read_file(dir_ + "/log");
  kill(job.pid, SIGINT);
  double seconds = 0;
  EXPECT_EQ(wait_for(job, 30, &seconds), 128 + SIGINT);
  EXPECT_LT(seconds, 10.0);
  EXPECT_NE(read_file(dir_ + "/log").find("interrupted by Interrupt: stopped every rank"),
            std::string::npos);
  EXPECT_TRUE(workers().empty()) << "a rank outlived Ctrl-C";
  EXPECT_TRUE(agents().empty()) << "an agent outlived Ctrl-C";
}

// launcher.min_nodes = 1 with max_restarts = 1: host B's link goes down mid-run (its
// namespace's eth0); rank 0 fails its next collective, the job restarts without B (it does
// not answer ssh), and rank 0 alone finishes from the latest checkpoint at the same global
// batch, accumulating two micro-batches a step: the losses of two local ranks, to float
// rounding (one rank sums the two micro-batches in another order).
TEST_F(SshTraining, AHostThatStopsAnsweringIsLeftOutAndTheJobFinishesAtTheSameGlobalBatch) {
  const Job job =
      start_job(with(run_args("train.max_steps=20"),
                     {"--set", "launcher.min_nodes=1", "--set", "launcher.max_restarts=1", "--set",
                      "launcher.connect_timeout_s=2", "--set", "launcher.grace_period_s=1", "--set",
                      "comm.timeout_s=5", "--set", "checkpoint.every_steps=5", "--set",
                      "train.eval=false", "--set", "train.threads=1"}),
                dir_, "step 12/");
  ASSERT_EQ(run({"/sbin/ip", "-n", "dshost-b", "link", "set", "eth0", "down"}).exit_code, 0);
  double seconds = 0;
  const int code = wait_for(job, 180, &seconds);
  const std::string log = read_file(dir_ + "/log");
  ASSERT_EQ(code, 0) << log;
  EXPECT_NE(log.find("dshost: restart 1 of 1 (launcher.max_restarts)"), std::string::npos) << log;
  EXPECT_NE(log.find("launcher.min_nodes = 1: cannot reach host 10.231.0.2 over ssh ("),
            std::string::npos)
      << log;
  EXPECT_NE(log.find("going on with 1 of 2 hosts (1 of 2 ranks) at the same global batch"),
            std::string::npos)
      << log;
  EXPECT_NE(log.find("1 of the job's 2 ranks run (launcher.min_nodes): train.grad_accum_steps 1 "
                     "-> 2 keeps the global batch"),
            std::string::npos)
      << log;
  EXPECT_EQ(log.find("the checkpoint was trained with a global batch"), std::string::npos) << log;
  const auto index =
      nlohmann::json::parse(read_file(dir_ + "/multinode/checkpoints/step-00000020/index.json"));
  EXPECT_EQ(index["world_size"], 1);
  EXPECT_EQ(index["global_batch"], 64);
  EXPECT_LT(max_abs_difference(losses(dir_ + "/multinode"), local_losses()), 1e-4);
}

TEST(SshManifest, HostfileMistakesAreBadInputNamingFileAndLine) {
  const std::string dir = scratch_dir("ssh_manifest");
  const std::string hostfile = write_file(dir + "/hostfile", "node-1 slots=2\nnode-1 slots=2\n");
  const Ran twice = dshost({"run", kSsh, "--set", "launcher.hostfile=\"" + hostfile + "\""});
  EXPECT_EQ(twice.exit_code, 2);
  EXPECT_EQ(twice.err,
            "dshost: error: launcher ssh: " + hostfile + ":2: host node-1 is listed twice\n");
  write_file(hostfile, "node-1 slots=2\n");
  const Ran include = dshost({"run", kSsh, "--set", "launcher.hostfile=\"" + hostfile + "\"",
                              "--set", "launcher.include=\"node-2\""});
  EXPECT_EQ(include.exit_code, 2);
  EXPECT_EQ(include.err,
            "dshost: error: launcher ssh: launcher.include: host node-2 is not in "
            "the hostfile " +
                hostfile + "\n");
}

// ---- slurm --------------------------------------------------------------------------------

class SlurmTraining : public SlurmClusterTest {
 protected:
  std::vector<std::string> run_args(const std::vector<std::string>& more) {
    return with({DSHOST_BINARY, "run", kSlurm, "--set", "run.output_dir=\"" + dir_ + "\"", "--set",
                 "launcher.output=\"" + dir_ + "/dshost-%j.log\""},
                more);
  }
  std::vector<int> workers() {
    return ranks_matching("worker " + kSlurm + " --set run.output_dir=\"" + dir_);
  }
};

DSHOST_SUITE_LABEL(SlurmTraining, slow);
TEST_F(SlurmTraining, AnSbatchJobFollowsALocalTwoRankRunExactly) {
  const Ran r = run(run_args(with({"--wait"}, kShortRun)));
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  std::smatch id;
  ASSERT_TRUE(std::regex_search(r.out, id, std::regex("submitted batch job (\\d+)"))) << r.out;
  const std::string log = read_file(dir_ + "/dshost-" + id[1].str() + ".log");
  EXPECT_NE(log.find("0: "), std::string::npos) << "srun labels each line";
  EXPECT_NE(r.out.find("[rank 0] "), std::string::npos)
      << "and dshost turns them into rank prefixes";
  ASSERT_EQ(local_losses().size(), 20u);
  EXPECT_NE(read_file(dir_ + "/dshost.sbatch").find("#SBATCH --ntasks-per-node=2\n"),
            std::string::npos);
  EXPECT_EQ(losses(dir_ + "/slurm"), local_losses());
}

TEST_F(SlurmTraining, InsideAnSallocAllocationRanksStartWithSrun) {
  const Ran r = run(
      with({"/usr/bin/salloc", "--immediate=60", "--nodes=1", "--ntasks=2"}, run_args(kShortRun)));
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(r.out.find("submitted batch job"), std::string::npos) << "no second job";
  EXPECT_NE(r.err.find("[rank 0] "), std::string::npos) << r.err;
  ASSERT_EQ(local_losses().size(), 20u);
  EXPECT_EQ(losses(dir_ + "/slurm"), local_losses());
}

// The script carries every sbatch option of the manifest; the controller's refusal is
// reported with its reason.
TEST_F(SlurmTraining, ARejectedJobIsAClearError) {
  const Ran r = run(run_args({"--set", "launcher.partition=\"no-such-partition\"", "--set",
                              "launcher.time=\"00:10:00\"", "--set", "launcher.account=\"acct\"",
                              "--set", "launcher.cpus_per_task=1", "--set",
                              "launcher.sbatch_lines=\"--qos=normal\\n--exclusive\""}));
  const std::string script = read_file(dir_ + "/dshost.sbatch");
  for (const char* line : {"--partition=no-such-partition", "--time=00:10:00", "--account=acct",
                           "--cpus-per-task=1", "--qos=normal", "--exclusive"})
    EXPECT_NE(script.find(std::string("\n#SBATCH ") + line + "\n"), std::string::npos)
        << line << script;
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(
      r.err.find("dshost: error: sbatch rejected the job (script " + dir_ +
                 "/dshost.sbatch): "
                 "sbatch: error: Batch job submission failed: Invalid partition name specified"),
      std::string::npos)
      << r.err;
}

// A held job never starts by itself: following it ends with the reason and what to do,
// and the job stays queued for the user to release or cancel.
TEST_F(SlurmTraining, FollowingAHeldJobEndsWithTheReason) {
  const Ran r =
      run(run_args(with({"--wait", "--set", "launcher.sbatch_lines=\"--hold\""}, kShortRun)));
  EXPECT_EQ(r.exit_code, 1);
  std::smatch id;
  ASSERT_TRUE(std::regex_search(r.out, id, std::regex("submitted batch job (\\d+)"))) << r.out;
  EXPECT_NE(r.err.find("dshost: error: job " + id[1].str() +
                       " is held (JobHeldUser) and will not "
                       "start until released; Release it with `scontrol release " +
                       id[1].str() + "` or cancel it with `scancel " + id[1].str() + "`"),
            std::string::npos)
      << r.err;
  EXPECT_EQ(run({"/usr/bin/squeue", "-h", "-j", id[1].str(), "-o", "%T"}).out, "PENDING\n");
}

TEST_F(SlurmTraining, KillingARankEndsTheJobNamingTheRank) {
  const Job job =
      start_job(run_args({"--wait", "--set", "train.epochs=50", "--set", "train.log_every=1"}),
                dir_, "step 5/");
  const int victim = pid_of_rank(workers(), 1);
  ASSERT_GT(victim, 0) << read_file(dir_ + "/log");
  kill(victim, SIGKILL);
  double seconds = 0;
  EXPECT_NE(wait_for(job, 30, &seconds), 0);
  EXPECT_LT(seconds, 10.0);
  EXPECT_NE(read_file(dir_ + "/log").find("dshost: error: rank 1 on host "), std::string::npos)
      << read_file(dir_ + "/log");
  EXPECT_TRUE(workers().empty()) << "a rank outlived the job";
}

TEST_F(SlurmTraining, CtrlCWhileFollowingCancelsTheJob) {
  const Job job =
      start_job(run_args({"--wait", "--set", "train.epochs=50", "--set", "train.log_every=1"}),
                dir_, "step 5/");
  ASSERT_EQ(workers().size(), 2u) << read_file(dir_ + "/log");
  kill(job.pid, SIGINT);
  double seconds = 0;
  EXPECT_NE(wait_for(job, 30, &seconds), 0);
  EXPECT_LT(seconds, 10.0);
  EXPECT_NE(read_file(dir_ + "/log").find("interrupted by Interrupt: cancelled job "),
            std::string::npos)
      << read_file(dir_ + "/log");
  EXPECT_TRUE(workers().empty()) << "a rank outlived Ctrl-C";
}

}  // namespace
}  // namespace dshost::test
