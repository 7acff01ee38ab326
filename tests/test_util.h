// Helpers for tests that run the dshost binary or write scratch files.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace dshost {
class DatasetPlugin;
}

namespace dshost::test {

struct Ran {
  int exit_code = -1;  // 128 + signal when killed
  std::string out, err;
  double seconds = 0;
};

// Runs argv (argv[0] a path) to completion, capturing stdout and stderr.
Ran run(const std::vector<std::string>& argv);
// Runs the dshost binary under test with `args`.
Ran dshost(const std::vector<std::string>& args);
// Expects `err` to show no crash: no uncaught exception, abort, core dump or LibTorch trace.
void expect_no_crash(const std::string& err);

// A fresh scratch folder under the build tree, removed first if present.
std::string scratch_dir(const std::string& name);
std::string write_file(const std::string& path, const std::string& text);
std::string read_file(const std::string& path);

// `key` (loss, grad_norm, ...) of each step from a run's metrics.jsonl.
std::vector<double> metric(const std::string& run_dir, const std::string& key);
std::vector<double> losses(const std::string& run_dir);

// Debian's Fashion-MNIST, or the folder DSHOST_TEST_FASHION_MNIST names (the GPU machine's).
std::string fashion_mnist_dir();
// Debian's fortunes, or the folder DSHOST_TEST_FORTUNES names (the GPU machine's).
std::string fortunes_dir();
// The Python with numpy, Pillow and torchvision for fixtures: $DSHOST_TEST_PYTHON, else
// Debian's /usr/bin/python3.
std::string python();
// Bundled dataset plugin `name` opened as a rank opens it (core/dataset.h), with [data]
// overrides `sets` ("data.path=\"...\""), for a model of sample shape `wanted`.
std::unique_ptr<DatasetPlugin> open_dataset(const std::string& name, std::vector<std::string> sets,
                                            const std::vector<int64_t>& wanted = {});
std::string quickstart_manifest();
// `args` followed by `more`.
std::vector<std::string> with(std::vector<std::string> args, const std::vector<std::string>& more);
// Trains configs/quickstart.toml with `sets` (--set values) into a fresh run directory
// named after `name`; expects success and returns the losses. *summary_json receives the
// run's summary.json when given, *log its standard error.
std::vector<double> train_quickstart(const std::string& name, std::vector<std::string> sets,
                                     std::string* summary_json = nullptr,
                                     std::string* log = nullptr);
// Where train_quickstart(name, ...) trained.
std::string quickstart_run_dir(const std::string& name);
double max_abs_difference(const std::vector<double>& a, const std::vector<double>& b);

// Number of lines in `text`, ignoring a trailing newline.
int line_count(const std::string& text);

// A command running in the background, its output (stdout and stderr) in dir/log.
struct Job {
  int pid = -1;
  std::string dir;
};
// Starts argv and waits, at most 60 s, until its log holds `ready` (a progress line).
Job start_job(const std::vector<std::string>& argv, const std::string& dir,
              const std::string& ready);
// Waits for the job to end, at most `limit_s`; returns its exit code (-1 on time-out, after
// which it is killed) and the seconds it took in *seconds.
int wait_for(const Job& job, double limit_s, double* seconds);
// The process in `pids` whose environment holds RANK=rank, or -1.
int pid_of_rank(const std::vector<int>& pids, int rank);

// PIDs of processes whose command line contains `needle`.
std::vector<int> pids_matching(const std::string& needle);
// Those of them that are ranks (RANK is in their environment), not the ssh or srun
// processes whose command line carries a rank's.
std::vector<int> ranks_matching(const std::string& needle);

// A TCP socket listening on every interface at a port the kernel picks, that never accepts:
// a port another program holds, or a stopped process, whose connections the kernel still
// completes. Closed when destroyed.
struct Listener {
  Listener();
  ~Listener();
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;
  int fd = -1, port = 0;
};

}  // namespace dshost::test
