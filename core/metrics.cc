#include "core/metrics.h"

#include "core/comm.h"
#include "core/crc32c.h"
#include "core/error.h"

#include <nlohmann/json.hpp>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <sstream>
#include <vector>

namespace fs = std::filesystem;

namespace dshost {
namespace {

// ---- protobuf wire format: just what Event and Summary need --------------------------
void varint(std::string& out, uint64_t v) {
  for (; v >= 0x80; v >>= 7) out += static_cast<char>((v & 0x7f) | 0x80);
  out += static_cast<char>(v);
}
void tag(std::string& out, int field, int wire_type) {
  varint(out, static_cast<uint64_t>(field) << 3 | wire_type);
}
template <class T>
void fixed(std::string& out, int field, T value) {  // wire type 1 (double) or 5 (float)
  tag(out, field, sizeof(T) == 8 ? 1 : 5);
  char bytes[sizeof(T)];
  std::memcpy(bytes, &value, sizeof(T));  // little-endian, as x86 and ARM store it
  out.append(bytes, sizeof(T));
}
void bytes_field(std::string& out, int field, const std::string& value) {
  tag(out, field, 2);
  varint(out, value.size());
  out += value;
}
void int_field(std::string& out, int field, uint64_t value) {
  tag(out, field, 0);
  varint(out, value);
}

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// Event{wall_time = 1, step = 2, ...} with the rest of its fields already encoded.
std::string event(int64_t step, const std::string& rest) {
  std::string e;
  fixed(e, 1, now_seconds());
  int_field(e, 2, static_cast<uint64_t>(step));
  return e + rest;
}

uint32_t masked_crc(const std::string& data) {
  const uint32_t crc = crc32c(data.data(), data.size());
  return ((crc >> 15) | (crc << 17)) + 0xa282ead8u;
}

const char* kColumns[] = {"step",
                          "epoch",
                          "loss",
                          "lr",
                          "grad_norm",
                          "samples_per_second",
                          "peak_host_bytes",
                          "peak_device_bytes"};

// Lines of `path` whose step (as `step_of` reads it) is at most `last`, each with "\n".
template <class StepOf>
std::string kept_lines(const fs::path& path, int64_t last, StepOf step_of) {
  std::ifstream in(path);
  std::string kept;
  for (std::string line; std::getline(in, line);)
    if (const int64_t s = step_of(line); s >= 0 && s <= last) kept += line + "\n";
  return kept;
}

std::ofstream open_fresh(const fs::path& path, const std::string& start) {
  std::ofstream out(path, std::ios::trunc);
  out << start;
  if (!out) throw UserError(cat("cannot write ", path.string(), ": ", std::strerror(errno)), 1);
  return out;
}

}  // namespace

EventFile::EventFile(const fs::path& dir) {
  fs::create_directories(dir);
  path_ = dir / cat("events.out.tfevents.", static_cast<int64_t>(now_seconds()), ".", hostname(),
                    ".", getpid());  // as PyTorch's SummaryWriter names them
  out_ = open_fresh(path_, "");
  std::string version;
  bytes_field(version, 3, "brain.Event:2");  // Event.file_version
  record(event(0, version));
}

void EventFile::scalar(const std::string& name, int64_t step, double value) {
  std::string v, summary, rest;
  bytes_field(v, 1, name);                 // Summary.Value.tag
  fixed(v, 2, static_cast<float>(value));  // Summary.Value.simple_value
  bytes_field(summary, 1, v);              // Summary.value
  bytes_field(rest, 5, summary);           // Event.summary
  record(event(step, rest));
}

void EventFile::restart_at(int64_t step) {
  std::string session_log, rest;
  int_field(session_log, 1, 1);       // SessionLog.status = START
  bytes_field(rest, 6, session_log);  // Event.session_log
  record(event(step, rest));
}

// TFRecord: uint64 length, masked CRC of those 8 bytes, the data, masked CRC of the data.
void EventFile::record(const std::string& data) {
  std::string length(8, '\0');
  const uint64_t n = data.size();
  std::memcpy(length.data(), &n, 8);
  const uint32_t length_crc = masked_crc(length), data_crc = masked_crc(data);
  out_.write(length.data(), 8);
  out_.write(reinterpret_cast<const char*>(&length_crc), 4);
  out_.write(data.data(), static_cast<std::streamsize>(data.size()));
  out_.write(reinterpret_cast<const char*>(&data_crc), 4);
}

MetricsLog::MetricsLog(const fs::path& run_dir, int64_t resume_step)
    : events_(run_dir / "tensorboard") {
  std::string jsonl, csv;
  for (const char* c : kColumns) csv += std::string(csv.empty() ? "" : ",") + c;
  csv += "\n";
  if (resume_step > 0) {
    jsonl = kept_lines(run_dir / "metrics.jsonl", resume_step, [](const std::string& line) {
      const auto row = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
      return row.is_object() ? row.value("step", int64_t{-1}) : int64_t{-1};
    });
    csv += kept_lines(run_dir / "metrics.csv", resume_step, [](const std::string& line) {
      return !line.empty() && std::isdigit(static_cast<unsigned char>(line[0])) &&
                     line.find(',') != std::string::npos
                 ? std::stoll(line.substr(0, line.find(',')))
                 : int64_t{-1};
    });
    events_.restart_at(resume_step + 1);
  }
  jsonl_ = open_fresh(run_dir / "metrics.jsonl", jsonl);
  csv_ = open_fresh(run_dir / "metrics.csv", csv);
}

void MetricsLog::step(const StepRow& r) {
  jsonl_ << nlohmann::json{{"step", r.step},
                           {"epoch", r.epoch},
                           {"loss", r.loss},
                           {"lr", r.lr},
                           {"grad_norm", r.grad_norm},
                           {"samples_per_second", r.samples_per_second},
                           {"peak_host_bytes", r.peak_host_bytes},
                           {"peak_device_bytes", r.peak_device_bytes}}
                .dump()
         << "\n";
  std::ostringstream row;
  row.precision(10);
  row << r.step << "," << r.epoch << "," << r.loss << "," << r.lr << "," << r.grad_norm << ","
      << r.samples_per_second << "," << r.peak_host_bytes << "," << r.peak_device_bytes << "\n";
  csv_ << row.str();
  events_.scalar("train/loss", r.step, r.loss);
  events_.scalar("train/lr", r.step, r.lr);
  events_.scalar("train/grad_norm", r.step, r.grad_norm);
  events_.scalar("throughput/samples_per_second", r.step, r.samples_per_second);
  events_.scalar("memory/peak_host_bytes", r.step, static_cast<double>(r.peak_host_bytes));
  events_.scalar("memory/peak_device_bytes", r.step, static_cast<double>(r.peak_device_bytes));
}

void MetricsLog::evaluation(int64_t step, double accuracy, double loss) {
  events_.scalar("test/accuracy", step, accuracy);
  events_.scalar("test/loss", step, loss);
}

void MetricsLog::rates(int64_t step, double samples_per_second, double steady_samples_per_second) {
  events_.scalar("run/samples_per_second", step, samples_per_second);
  if (steady_samples_per_second > 0)
    events_.scalar("run/steady_samples_per_second", step, steady_samples_per_second);
}

void MetricsLog::flush() {
  jsonl_.flush();
  csv_.flush();
  events_.flush();
}

}  // namespace dshost
