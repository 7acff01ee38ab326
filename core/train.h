// One rank's training run: rendezvous, model and strategy plugins, the loop, evaluation and
// the run summary.
#pragma once

#include "core/job.h"

namespace dshost {

// Runs this rank (RANK, WORLD_SIZE, ... from the environment) to the end; with `evaluate`,
// evaluates checkpoint.resume's checkpoint instead of training. Where the launcher started
// fewer ranks than it was set up for, train.grad_accum_steps is raised to keep the global
// batch. Returns the process exit code; throws UserError for bad input.
int run_worker(Job job, bool evaluate = false);

}  // namespace dshost
