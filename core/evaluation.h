// The test split evaluated by every rank on its share and summed over ranks: the figures
// training reports after each epoch.
#pragma once

#include "core/comm.h"

#include <cstdint>
#include <filesystem>
#include <string>

namespace dshost {

struct RankSetup;

struct Evaluation {
  double loss = 0, accuracy = 0;  // means over the samples (or tokens) counted
  int64_t samples = 0;            // 0: the dataset has no test split
};

// Collective where the test split is not empty: every rank takes part. `batch`: samples per
// forward (train.eval_batch_size).
Evaluation evaluate_test_split(RankSetup& s, const Rendezvous& rv, int64_t batch);

// dshost eval's result for the checkpoint at `checkpoint` (saved at `step`): logged, and
// written to run_dir/eval/step-N.json.
void write_evaluation(const std::filesystem::path& run_dir, const std::string& checkpoint,
                      int64_t step, const Evaluation& e);

}  // namespace dshost
