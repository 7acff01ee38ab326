#include "core/run_checkpoint.h"

#include "core/comm.h"
#include "core/error.h"
#include "core/log.h"
#include "core/plugin_handles.h"
#include "core/safetensors.h"  // remove_tree

#include <ATen/CPUGeneratorImpl.h>
#if DSHOST_CUDA
#include <ATen/cuda/CUDAGeneratorImpl.h>
#endif

#include <chrono>
#include <filesystem>
#include <iomanip>

namespace fs = std::filesystem;

namespace dshost {

RunCheckpoints::RunCheckpoints(const Job& job, int rank, int world_size, const at::Device& device,
                               Comm& comm, const ModelHandle& model, const StrategyHandle& strategy,
                               const std::vector<std::vector<TensorLayout>>& params,
                               const std::vector<ModelBuffer>& frozen, const StepPlan& plan)
    : job_(job),
      rank_(rank),
      world_size_(world_size),
      device_(device),
      comm_(comm),
      model_(model),
      strategy_(strategy),
      params_(params),
      frozen_(frozen),
      plan_(plan) {}

Position RunCheckpoints::resume(bool training) {
  const auto& ck = job_.config.checkpoint;
  if (ck.resume == "never") {
    const std::string existing = latest_checkpoint(ck.dir);
    if (ck.enabled() && !existing.empty())
      throw UserError(
          cat(job_.manifest.origin("checkpoint", "resume"),
              ": error: checkpoint.resume = \"never\" but ", ck.dir,
              " already holds checkpoints (the newest ", existing,
              "), which this run's saves would replace; resume from them "
              "(checkpoint.resume = \"auto\"), or choose another run.name or checkpoint.dir"));
    return {};
  }
  std::string note;
  const std::string path =
      ck.resume == "auto" ? latest_checkpoint(ck.dir, &note) : checkpoint_at(ck.resume, &note);
  if (path.empty()) return {};
  if (!note.empty()) log::warn(note);
  try {
    const CheckpointReader reader(path, params_);
    reader.check_model(model_.name());
    strategy_.load(reader.io());
    load_host_tensors(reader);
    return position_from(reader.index(), path, training);
  } catch (const UserError& e) {  // a damaged checkpoint, or one of another model: bad input
    throw UserError(
        cat(job_.manifest.origin("checkpoint", "resume"), ": error: cannot resume: ", e.what()), 2);
  }
}

// The model's buffers, the frozen parameters (from any checkpoint: one saved without
// model.freeze holds their values too) and the random number generators.
void RunCheckpoints::load_host_tensors(const CheckpointReader& reader) const {
  at::NoGradGuard no_grad;
  const std::vector<ModelBuffer> buffers = model_.buffers();
  for (const auto* tensors : {&buffers, &frozen_})
    for (const ModelBuffer& b : *tensors) reader.whole_into(b.name, b.value);
  for (const auto& [name, state] : rng_states(rank_, device_)) {
    if (!reader.has(name)) {  // a rank the saving run did not have
      log::info(cat(name, " is not in the checkpoint (saved by ", reader.index()["world_size"],
                    " ranks): this rank's random numbers restart from the seed"));
      continue;
    }
    set_rng_state(name, reader.whole(name), device_);
  }
}

Position RunCheckpoints::position_from(const nlohmann::json& index, const std::string& path,
                                       bool training) const {
  const int64_t saved_batch = index.value("global_batch", plan_.global_batch);
  const Position saved{index.value("step", int64_t{0}), index.value("epoch", int64_t{0}),
                       index.value("step_in_epoch", int64_t{0})};
  if (training && saved_batch != plan_.global_batch)
    log::warn(cat("the checkpoint was trained with a global batch of ", saved_batch,
                  " samples and this run's is ", plan_.global_batch,
                  ": the epoch goes on from the nearest step"));
  const Position p = resumed_position(saved, saved_batch, plan_);
  log::info(cat("resumed from ", path, ": step ", p.step, ", epoch ", p.epoch + 1, " (saved by ",
                index.value("strategy", "?"), " on ", index.value("world_size", 0), " rank(s))"));
  return p;
}

void RunCheckpoints::save(const Position& at) {
  const auto start = std::chrono::steady_clock::now();
  const std::string& dir = job_.config.checkpoint.dir;
  const std::string staging = (fs::path(dir) / (step_dir_name(at.step) + ".tmp")).string();
  if (rank_ == 0) {
    std::error_code ec;
    remove_tree(staging);  // a save killed earlier
    fs::create_directories(staging, ec);
    if (ec)
      throw UserError(cat("cannot create ", staging, ": ", ec.message(), "; check checkpoint.dir"),
                      1);
  }
  comm_.sum({0.0});  // the staging directory exists, empty, before anyone writes
  std::string failure;
  try {
    write_rank_file(rank_checkpoint_file(staging, rank_));
  } catch (const UserError& e) {
    failure = cat("rank ", rank_, " on ", hostname(), ": checkpoint not saved: ", e.what());
  }
  const double failures = comm_.sum({failure.empty() ? 0.0 : 1.0})[0];
  if (!failure.empty()) throw UserError(failure, 1);
  if (failures > 0)
    throw UserError("checkpoint not saved: another rank could not write its part", 1);
  if (rank_ != 0) return;
  const nlohmann::json about{{"step", at.step},
                             {"epoch", at.epoch},
                             {"step_in_epoch", at.step_in_epoch},
                             {"global_batch", plan_.global_batch},
                             {"model", model_.name()},
                             {"strategy", strategy_.name()},
                             {"world_size", world_size_},
                             {"optimizer", job_.config.optimizer.name},
                             {"seed", job_.config.run.seed}};
  publish_checkpoint(dir, staging, at.step, build_index(staging, world_size_, about),
                     job_.config.checkpoint.keep);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  log::info(cat("checkpoint saved: ", (fs::path(dir) / step_dir_name(at.step)).string(), " (",
                std::fixed, std::setprecision(2), seconds, " s)"));
}

void RunCheckpoints::write_rank_file(const std::string& path) const {
  CheckpointWriter writer(params_);
  strategy_.save(writer.io());
  if (rank_ == 0) {
    const std::vector<ModelBuffer> buffers = model_.buffers();
    for (const auto* tensors : {&buffers, &frozen_})
      for (const ModelBuffer& b : *tensors)
        writer.add_whole(b.name, b.value, b.export_name, b.export_transposed);
  }
  for (const auto& [name, state] : rng_states(rank_, device_)) writer.add_whole(name, state);
  writer.write(path);
}

std::vector<std::pair<std::string, at::Tensor>> rng_states(int rank, const at::Device& device) {
  std::vector<std::pair<std::string, at::Tensor>> out{
      {cat("rng.cpu.rank", rank), at::detail::getDefaultCPUGenerator().get_state()}};
#if DSHOST_CUDA
  if (device.is_cuda())
    out.emplace_back(cat("rng.cuda.rank", rank),
                     at::cuda::detail::getDefaultCUDAGenerator(device.index()).get_state());
#endif
  (void)device;
  return out;
}

void set_rng_state(const std::string& name, const at::Tensor& state, const at::Device& device) {
#if DSHOST_CUDA
  if (name.rfind("rng.cuda.", 0) == 0) {
    at::Generator cuda = at::cuda::detail::getDefaultCUDAGenerator(device.index());
    cuda.set_state(state);
    return;
  }
#endif
  (void)name;
  (void)device;
  at::Generator cpu = at::detail::getDefaultCPUGenerator();
  cpu.set_state(state);
}

}  // namespace dshost
