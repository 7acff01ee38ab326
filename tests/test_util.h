// Helpers for tests that run the dshost binary or write scratch files.
#pragma once

#include <string>
#include <vector>

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

// A fresh scratch folder under the build tree, removed first if present.
std::string scratch_dir(const std::string& name);
std::string write_file(const std::string& path, const std::string& text);
std::string read_file(const std::string& path);

// Loss of each step from a run's metrics.jsonl.
std::vector<double> losses(const std::string& run_dir);

std::string quickstart_manifest();
// Trains configs/quickstart.toml with `sets` (--set values) into a fresh run directory
// named after `name`; expects success and returns the losses. *summary_json receives the
// run's summary.json when given.
std::vector<double> train_quickstart(const std::string& name, std::vector<std::string> sets,
                                     std::string* summary_json = nullptr);
double max_abs_difference(const std::vector<double>& a, const std::vector<double>& b);

// Number of lines in `text`, ignoring a trailing newline.
int line_count(const std::string& text);

// PIDs of processes whose command line contains `needle`.
std::vector<int> pids_matching(const std::string& needle);

}  // namespace dshost::test
