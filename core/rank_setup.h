// One rank's pieces for training, made in the order they depend on each other: the device and
// its stream, collectives, the model and strategy plugins (the model's parameters handed to the
// strategy), the dataset checked against the model, the step plan, the batch buffers and the
// input pipeline, a CUDA graph where a micro-batch can be captured, and the run's checkpoints.
// The worker's loop (core/train.cc) uses them; they are destroyed in the opposite order.
#pragma once

#include <dshost/torch.hpp>  // first: ATen's DLPack

#include "core/checkpoint.h"
#include "core/comm.h"
#include "core/freeze.h"
#include "core/job.h"
#include "core/schedule.h"
#include "core/services.h"

#include <memory>
#include <vector>

namespace dshost {

class CallStatus;
class DatasetPlugin;
class InputPipeline;
class MicroBatchGraph;
class ModelHandle;
class RunCheckpoints;
class StrategyHandle;

// The rank's compute device: its node's GPU for train.device = "cuda" (shared round-robin where
// the node's ranks outnumber its GPUs: two ranks on one GPU, for tests), else the CPU.
at::Device rank_device(const TrainConfig& train, const Rendezvous& rv);
// What the plugins' services tell them of their rank.
RankInfo rank_info(const Rendezvous& rv, const at::Device& device, const Config& cfg);

struct RankSetup {
  RankSetup(const Job& job, const Rendezvous& rv, const at::Device& device, const RankInfo& info);
  ~RankSetup();
  RankSetup(const RankSetup&) = delete;
  RankSetup& operator=(const RankSetup&) = delete;

  std::unique_ptr<Comm> comm;
  std::unique_ptr<CallStatus> status;
  std::unique_ptr<PluginHost> model_host, strategy_host;  // the plugins' services
  std::unique_ptr<ModelHandle> model;
  std::unique_ptr<DatasetPlugin> data;
  std::unique_ptr<StrategyHandle> strategy;
  std::vector<std::vector<TensorLayout>> model_params;     // [model unit][index]
  ParamPlacement placement;                                // model.freeze
  std::vector<std::vector<TensorLayout>> strategy_params;  // [strategy unit][index]
  std::vector<ModelBuffer> frozen;                         // on the device, bound by the host
  StepPlan plan;
  at::Tensor inputs, targets, loss;         // bound to the model; loss: a micro-batch's mean
  std::unique_ptr<InputPipeline> pipeline;  // after the data: its workers read it
  std::unique_ptr<MicroBatchGraph> graph;   // train.cuda_graph, where it can capture
  std::unique_ptr<RunCheckpoints> checkpoints;

 private:
  void init_model(const Job& job, const Rendezvous& rv);
  void hand_parameters(const Job& job, const Rendezvous& rv, const at::Device& device);
  void load_data(const Job& job, const Rendezvous& rv, const RankInfo& info);
  void bind_batch(const Config& cfg, const Rendezvous& rv, const at::Device& device);
  bool can_capture(const at::Device& device) const;
};

}  // namespace dshost
