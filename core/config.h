// The host's own manifest sections as typed structs. Each member's key, default, range and
// help are declared once, in config.cc (see config_keys.h); a key with a fixed set of values
// holds an enum whose names are the values the manifest spells.
#pragma once

#include "core/config_keys.h"
#include "core/manifest.h"

#include <string>

namespace dshost {

enum class Precision { fp32, bf16, fp8 };  // fp8: bf16, and the model's fp8 layers
enum class DeviceKind { cpu, cuda };
enum class Nonfinite { stop, skip, ignore };  // what a NaN or infinite loss or norm does
enum class OptimizerKind { adamw, sgd };
enum class Decay { cosine, linear, constant };
enum class Decode { automatic, cpu, gpu };  // spelled "auto", "cpu", "gpu"

template <>
struct Choices<Precision> {
  static constexpr const char* names = "fp32|bf16|fp8";
};
template <>
struct Choices<DeviceKind> {
  static constexpr const char* names = "cpu|cuda";
};
template <>
struct Choices<Nonfinite> {
  static constexpr const char* names = "stop|skip|ignore";
};
template <>
struct Choices<OptimizerKind> {
  static constexpr const char* names = "adamw|sgd";
};
template <>
struct Choices<Decay> {
  static constexpr const char* names = "cosine|linear|constant";
};
template <>
struct Choices<Decode> {
  static constexpr const char* names = "auto|cpu|gpu";
};

struct RunConfig {
  std::string name;  // run directory = output_dir/name
  std::string output_dir;
  int64_t seed;
  bool log_all_ranks;
  std::string dir() const { return output_dir + "/" + name; }
};

struct TrainConfig {
  int64_t epochs, max_steps;  // max_steps > 0 stops early (optimizer steps)
  int64_t micro_batch_size, grad_accum_steps, eval_batch_size;
  double grad_clip;  // max global gradient norm; 0 = off
  Precision precision;
  DeviceKind device;
  int64_t log_every;      // steps between progress lines
  bool eval;              // evaluate on the test split after each epoch
  int64_t threads;        // intra-op threads per rank; 0 = cores / local ranks
  double peak_tflops;     // per device, for MFU; 0 = the known peak of the GPU, if any
  bool cuda_graph;        // replay micro-batches from a CUDA graph where allowed
  bool cudnn_benchmark;   // cuDNN autotuning (fastest, not bit-reproducible)
  int64_t profile_steps;  // optimizer steps traced by the PyTorch profiler; 0 = off
  int64_t profile_after;  // steps before the traced ones
  Nonfinite nonfinite;
};

struct OptimizerConfig {
  OptimizerKind name;
  double lr, beta1, beta2, eps, weight_decay, momentum;
};

struct SchedulerConfig {
  int64_t warmup_steps;
  Decay decay;
  double min_lr_ratio;
};

// [data]'s host keys; the dataset plugin's own keys sit beside them (see job.cc).
struct DataConfig {
  std::string dataset;           // the dataset plugin
  int64_t channels, image_size;  // images as presented to the model; 0: the dataset's own
  int64_t workers;               // threads per rank that fill samples; 0 = automatic
  int64_t prefetch;              // micro-batches prepared ahead of the step
  Decode decode;
  int64_t max_bad_files;  // samples that may fail before the run stops
};

constexpr const char* kDefaultDataset = "fashion_mnist";

struct CheckpointConfig {
  std::string dir;      // resolved: run directory/checkpoints when the manifest gives none
  int64_t every_steps;  // save every N optimizer steps; 0 = not by steps
  bool at_epoch_end;    // save after every epoch
  int64_t keep;         // newest checkpoints kept; 0 = all
  std::string resume;   // auto | never | a checkpoint directory
  bool enabled() const { return every_steps > 0 || at_epoch_end; }
};

// [model]'s host keys; the model plugin's own sit beside them (see job.cc).
struct ModelConfig {
  std::string init_from;  // a safetensors file of pretrained weights; "" = the model's own init
  std::string init_skip;  // comma-separated globs of tensors init_from leaves alone
  std::string freeze;     // comma-separated globs of parameters kept as they are
};

// [launcher]'s host keys; the launcher plugin's own sit beside them (see job.cc).
struct LauncherConfig {
  int64_t max_restarts;  // times the whole job starts again after a rank fails
};

struct CommConfig {
  double timeout_s;
};

struct PluginsConfig {
  std::string paths;  // ':'-separated
};

struct Config {
  RunConfig run;
  TrainConfig train;
  OptimizerConfig optimizer;
  SchedulerConfig scheduler;
  DataConfig data;
  CommConfig comm;
  CheckpointConfig checkpoint;
  ModelConfig model;
  LauncherConfig launcher;
  PluginsConfig plugins;
};

// Validates the host's sections and refuses unknown top-level sections. [data], [model] and
// [launcher] are read with their plugins (see job.cc), by the keys below.
Config read_config(const Manifest& manifest);

// The host's keys of the sections it shares with a plugin.
const Keys<DataConfig>& data_keys();
const Keys<ModelConfig>& model_keys();
const Keys<LauncherConfig>& launcher_keys();

}  // namespace dshost
