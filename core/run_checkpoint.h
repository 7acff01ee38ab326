// A run's checkpoints (checkpoint.*): where a run resumes from and the position it goes on
// from, and each collective save (see core/checkpoint.h for the files and the protocol). A
// rank's file holds the strategy's slices, rank 0's model buffers and frozen parameters
// (PyTorch's DDP also makes rank 0's the truth) and the rank's random number generators.
#pragma once

#include "core/checkpoint.h"
#include "core/job.h"
#include "core/schedule.h"

#include <ATen/core/Tensor.h>

#include <string>
#include <utility>
#include <vector>

namespace dshost {

class Comm;
class ModelHandle;
class StrategyHandle;
struct ModelBuffer;

class RunCheckpoints {
 public:
  // `params`: the layouts of the parameters the strategy holds, [strategy unit][index];
  // `frozen`: those the host holds (model.freeze). Both kept by reference.
  RunCheckpoints(const Job& job, int rank, int world_size, const at::Device& device, Comm& comm,
                 const ModelHandle& model, const StrategyHandle& strategy,
                 const std::vector<std::vector<TensorLayout>>& params,
                 const std::vector<ModelBuffer>& frozen, const StepPlan& plan);
  // checkpoint.resume's checkpoint loaded into the model and strategy; the position to go on
  // from ({} for a fresh run). Refuses (resume = "never") a run whose saves would replace
  // checkpoints it did not resume from. `training`: false for dshost eval, which takes no
  // step from the position.
  Position resume(bool training = true);
  // Collective: saves the state at `at` (every rank writes its file into the staging
  // directory, rank 0 publishes it).
  void save(const Position& at);

 private:
  void write_rank_file(const std::string& path) const;
  void load_host_tensors(const CheckpointReader& reader) const;
  Position position_from(const nlohmann::json& index, const std::string& path, bool training) const;

  const Job& job_;
  int rank_, world_size_;
  at::Device device_;
  Comm& comm_;
  const ModelHandle& model_;
  const StrategyHandle& strategy_;
  const std::vector<std::vector<TensorLayout>>& params_;
  const std::vector<ModelBuffer>& frozen_;
  const StepPlan& plan_;
};

// This rank's generators' states, named rng.cpu.rankR (and rng.cuda.rankR on a GPU).
std::vector<std::pair<std::string, at::Tensor>> rng_states(int rank, const at::Device& device);
// Restores the generator that `name` (as rng_states names it) belongs to.
void set_rng_state(const std::string& name, const at::Tensor& state, const at::Device& device);

}  // namespace dshost
