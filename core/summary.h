// The run's summary: summary.json and its log lines, the figures runs are compared by (losses,
// accuracy, rate, times, memory, the FLOPs profile and MFU).
#pragma once

#include "core/progress.h"  // Span

#include <dshost/abi.h>

#include <ATen/core/Tensor.h>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace dshost {

struct TensorLayout;

struct UnitFigures {
  std::string unit;  // its parameters' name prefix
  int64_t parameters = 0, forward_flops_per_sample = 0;
  bool trained = true;  // false: model.freeze left it no parameter to train
};

struct RunSummary {
  std::string run, model, strategy, device, precision;
  int world_size = 1;
  int64_t parameters = 0, steps = 0;
  bool evaluated = false;
  double test_accuracy = 0, test_loss = 0, final_train_loss = 0;
  double samples_per_second = 0, train_time_s = 0, wall_time_s = 0;  // the whole run's
  Span steady;  // after the first report window; empty where the run had one window
  std::vector<double> epoch_times_s;
  int64_t skipped_files = 0, skipped_steps = 0;
  int64_t peak_host_memory_bytes = 0, peak_device_memory_bytes = 0;  // the largest rank's
  bool on_gpu = false;
  dshost_memory_report memory{sizeof(dshost_memory_report)};  // one rank's, from the strategy
  int64_t forward_flops_per_sample = 0;  // 0: the model does not say (no FLOPs figures)
  std::vector<UnitFigures> units;
  double peak_tflops = 0;  // of all ranks' devices together; 0: unknown (no MFU)
};

// Each unit's parameter count and forward FLOPs per sample (`flops(unit)`), named by its
// first parameter's name prefix ("features" for "features.0.weight").
std::vector<UnitFigures> unit_figures(const std::vector<std::vector<TensorLayout>>& layouts,
                                      const std::function<int64_t(int32_t)>& flops);

// The rate the run's FLOPs and MFU are figured from: the steady one where there is one.
double rated_samples_per_second(const RunSummary& s);
// Training FLOPs per sample: three forwards (backward costs two: the inputs' gradients and
// the weights'), as MFU is conventionally counted, less what model.freeze spares: a unit with no
// parameter to train takes no weights' gradient, and the units before the first that trains
// (in forward order) no backward at all, autograd stopping there.
int64_t training_flops_per_sample(const RunSummary& s);
// Training FLOPs over all ranks at the rated samples per second.
double achieved_tflops(const RunSummary& s);
// MFU: achieved over peak; nullopt where the model gives no FLOPs or the peak is unknown.
std::optional<double> mfu(const RunSummary& s);
nlohmann::json summary_json(const RunSummary& s);
// The lines logged at the end of a run: FLOPs where the model gives them, then the figures.
std::vector<std::string> summary_lines(const RunSummary& s);

// One device's peak dense TFLOP/s at this precision: `configured` where set, else H100's and
// H200's (989 bf16, 495 tf32, SXM), else 0.
double device_peak_tflops(double configured, const at::Device& device, bool bf16);

}  // namespace dshost
