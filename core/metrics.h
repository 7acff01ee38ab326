// Rank 0's record of a run, one row per optimizer step in three forms: metrics.jsonl,
// metrics.csv (the same columns) and a TensorBoard event file in tensorboard/ (scalars
// loss, lr, grad_norm, throughput, memory, and test accuracy / loss after evaluations).
#pragma once

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

namespace dshost {

struct StepRow {
  int64_t step = 0, epoch = 0;  // 1-based
  double loss = 0, lr = 0, grad_norm = 0;
  double samples_per_second = 0;  // over the report interval the step belongs to
  int64_t peak_host_bytes = 0, peak_device_bytes = 0;
};

// TensorBoard's event file: TFRecord framing (length, masked CRC-32C of the length, an
// Event protocol buffer, its masked CRC-32C) around Event{wall_time, step, summary} messages.
// The few Event / Summary fields needed are encoded here directly (protobuf's wire format)
// rather than through libprotobuf, whose symbols LibTorch builds may carry a copy of too.
class EventFile {
 public:
  // Writes DIR/events.out.tfevents.SECONDS.HOST.PID and its file_version event.
  explicit EventFile(const std::filesystem::path& dir);
  const std::filesystem::path& path() const { return path_; }
  void scalar(const std::string& tag, int64_t step, double value);
  // TensorBoard drops events of earlier files at steps after `step` (a resumed run's
  // purge, as PyTorch's SummaryWriter(purge_step=...) writes it).
  void restart_at(int64_t step);
  void flush() { out_.flush(); }

 private:
  void record(const std::string& event);
  std::filesystem::path path_;
  std::ofstream out_;
};

class MetricsLog {
 public:
  // Starts the files afresh, or, resuming after `resume_step` steps, keeps the rows up to it
  // (a killed run may have logged later steps) and appends.
  MetricsLog(const std::filesystem::path& run_dir, int64_t resume_step);
  void step(const StepRow& row);
  void evaluation(int64_t step, double accuracy, double loss);
  // The run's rates at its last step: the whole run's and, where there is one, the steady.
  void rates(int64_t step, double samples_per_second, double steady_samples_per_second);
  void flush();

 private:
  std::ofstream jsonl_, csv_;
  EventFile events_;
};

}  // namespace dshost
