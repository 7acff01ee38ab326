#include <dshost/torch.hpp>  // first: ATen's DLPack

#include "core/summary.h"

#include "core/checkpoint.h"  // TensorLayout

#include <dshost/plugin.hpp>  // cat()

#if DSHOST_CUDA
#include <ATen/cuda/CUDAContext.h>
#endif

#include <iomanip>

namespace dshost {
namespace {

nlohmann::json or_null(bool known, double value) {
  return known ? nlohmann::json(value) : nlohmann::json();
}

nlohmann::json or_null(const std::optional<double>& value) {
  return value ? nlohmann::json(*value) : nlohmann::json();
}

std::string mib(double bytes) {
  return cat(std::fixed, std::setprecision(1), bytes / 1048576.0, " MiB");
}

nlohmann::json flops_profile(const RunSummary& s) {
  nlohmann::json units = nlohmann::json::array();
  const auto total = static_cast<double>(s.forward_flops_per_sample);
  for (const UnitFigures& u : s.units)
    units.push_back(
        {{"unit", u.unit},
         {"parameters", u.parameters},
         {"forward_flops_per_sample", u.forward_flops_per_sample},
         {"trained", u.trained},
         {"share", total > 0 ? static_cast<double>(u.forward_flops_per_sample) / total : 0.0}});
  return units;
}

}  // namespace

std::vector<UnitFigures> unit_figures(const std::vector<std::vector<TensorLayout>>& layouts,
                                      const std::function<int64_t(int32_t)>& flops) {
  std::vector<UnitFigures> units;
  for (size_t u = 0; u < layouts.size(); ++u) {
    const std::string first = layouts[u].empty() ? "" : layouts[u][0].name;
    UnitFigures f{first.substr(0, first.find('.')), 0, flops(static_cast<int32_t>(u))};
    for (const TensorLayout& p : layouts[u]) f.parameters += p.numel();
    units.push_back(f);
  }
  return units;
}

double rated_samples_per_second(const RunSummary& s) {
  return s.steady.samples > 0 ? s.steady.rate() : s.samples_per_second;
}

int64_t training_flops_per_sample(const RunSummary& s) {
  int64_t total = 3 * s.forward_flops_per_sample;
  bool backward = false;  // from the first unit that trains on
  for (const UnitFigures& u : s.units) {
    backward = backward || u.trained;
    total -= u.forward_flops_per_sample * ((u.trained ? 0 : 1) + (backward ? 0 : 1));
  }
  return total;
}

double achieved_tflops(const RunSummary& s) {
  return static_cast<double>(training_flops_per_sample(s)) * rated_samples_per_second(s) / 1e12;
}

std::optional<double> mfu(const RunSummary& s) {
  if (s.forward_flops_per_sample <= 0 || s.peak_tflops <= 0) return std::nullopt;
  return achieved_tflops(s) / s.peak_tflops;
}

nlohmann::json summary_json(const RunSummary& s) {
  const dshost_memory_report& m = s.memory;
  const bool flops = s.forward_flops_per_sample > 0;
  return {
      {"run", s.run},
      {"model", s.model},
      {"strategy", s.strategy},
      {"world_size", s.world_size},
      {"device", s.device},
      {"precision", s.precision},
      {"parameters", s.parameters},
      {"steps", s.steps},
      {"test_accuracy", or_null(s.evaluated, s.test_accuracy)},
      {"test_loss", or_null(s.evaluated, s.test_loss)},
      {"final_train_loss", s.final_train_loss},
      {"samples_per_second", s.samples_per_second},
      {"steady_samples_per_second", or_null(s.steady.samples > 0, s.steady.rate())},
      {"steady_samples", s.steady.samples},
      {"steady_time_s", s.steady.seconds},
      {"skipped_files", s.skipped_files},
      {"skipped_steps", s.skipped_steps},
      {"train_time_s", s.train_time_s},
      {"epoch_times_s", s.epoch_times_s},
      {"wall_time_s", s.wall_time_s},
      {"peak_host_memory_bytes", s.peak_host_memory_bytes},
      {"peak_device_memory_bytes", s.peak_device_memory_bytes},
      {"memory_per_rank_bytes",
       {{"param_device", m.param_device},
        {"param_host", m.param_host},
        {"grad_device", m.grad_device},
        {"grad_host", m.grad_host},
        {"optim_device", m.optim_device},
        {"optim_host", m.optim_host}}},
      {"forward_flops_per_sample", s.forward_flops_per_sample},
      {"training_flops_per_sample", s.forward_flops_per_sample > 0
                                        ? nlohmann::json(training_flops_per_sample(s))
                                        : nlohmann::json()},
      {"flops_profile", flops_profile(s)},
      {"achieved_tflops", or_null(flops, achieved_tflops(s))},
      {"mfu", or_null(mfu(s))},
      {"flops_rate", s.steady.samples > 0 ? "steady" : "whole run"},
  };
}

std::vector<std::string> summary_lines(const RunSummary& s) {
  const dshost_memory_report& m = s.memory;
  const std::string test = s.evaluated ? cat("test accuracy ", std::fixed, std::setprecision(4),
                                             s.test_accuracy, ", test loss ", s.test_loss, ", ")
                                       : std::string("not evaluated (train.eval = false), ");
  std::vector<std::string> lines;
  if (s.forward_flops_per_sample > 0) {
    const double achieved = achieved_tflops(s);
    const std::optional<double> utilisation = mfu(s);
    const int64_t training = training_flops_per_sample(s);
    lines.push_back(cat(
        "FLOPs: ", std::fixed, std::setprecision(3),
        static_cast<double>(s.forward_flops_per_sample) / 1e9, " GFLOP forward per sample",
        training == 3 * s.forward_flops_per_sample
            ? std::string()
            : cat(", ", std::fixed, std::setprecision(3), static_cast<double>(training) / 1e9,
                  " GFLOP training per sample (model.freeze)"),
        "; achieved ", std::setprecision(2), achieved, " TFLOP/s",
        utilisation ? cat(", MFU ", std::fixed, std::setprecision(1), 100 * *utilisation, "%") : "",
        s.steady.samples > 0 ? " at the steady rate" : ""));
  }
  lines.push_back(
      cat("summary: ", test, "train loss ", std::fixed, std::setprecision(4), s.final_train_loss,
          ", ", std::setprecision(0), s.samples_per_second, " samples/s",
          s.steady.samples > 0
              ? cat(" (steady ", std::fixed, std::setprecision(0), s.steady.rate(), ")")
              : std::string(),
          ", wall time ", std::setprecision(1), s.wall_time_s, " s, peak memory ",
          mib(static_cast<double>(s.peak_host_memory_bytes)),
          s.on_gpu ? cat(" host, ", mib(static_cast<double>(s.peak_device_memory_bytes)), " GPU")
                   : std::string(),
          " per rank (parameters ", mib(static_cast<double>(m.param_device + m.param_host)),
          ", gradients ", mib(static_cast<double>(m.grad_device + m.grad_host)), ", optimizer ",
          mib(static_cast<double>(m.optim_device + m.optim_host)), ")"));
  return lines;
}

double device_peak_tflops(double configured, const at::Device& device, bool bf16) {
  if (configured > 0) return configured;
#if DSHOST_CUDA
  if (device.is_cuda()) {
    const std::string name = at::cuda::getDeviceProperties(device.index())->name;
    if (name.find("H100") != std::string::npos || name.find("H200") != std::string::npos)
      return bf16 ? 989.4 : 494.7;
  }
#endif
  (void)device;
  (void)bf16;
  return 0;
}

}  // namespace dshost
