// Universal checkpoints. Strategies never touch files: the host hands them a writer and a
// reader of named tensor slices (dshost_state_io) and stores, per checkpoint, one
// safetensors file per rank plus index.json, which records for every tensor its global
// shape, memory order and which slice of it each file holds. Slices are logical, so any
// strategy at any world size loads what any other saved.
//
// On disk, under the checkpoint directory:
//   step-00000100/index.json             step, epoch, model, strategy, files with CRC-32C,
//                                        tensors with their slices, its own CRC-32C
//   step-00000100/rank-00000.safetensors rank 0's slices, named NAME@OFFSET
//   latest                               "step-00000100": the newest complete checkpoint
// A save writes into step-N.tmp/, renames it to step-N/ once every file is complete and
// fsynced, and only then moves `latest`; a save killed at any moment leaves the previous
// checkpoint intact and named by `latest`.
#pragma once

#include <dshost/abi.h>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <map>
#include <memory>
#include <string>
#include <vector>

namespace dshost {

class SafetensorsFile;

// A tensor as the model lays it out: its logical shape and its dimensions from outermost
// to innermost in memory (0,1,2,3 for NCHW; 0,2,3,1 for channels-last).
struct TensorLayout {
  std::string name;
  std::vector<int64_t> shape, order;
  std::string export_name;         // the name `dshost export` gives the values; "": not exported
  bool export_transposed = false;  // exported as its transpose (a 2-D parameter)
  static TensorLayout of(const std::string& name, const at::Tensor& t,
                         const std::string& export_name = "", bool export_transposed = false);
  int64_t numel() const;
};

// One rank's part of one checkpoint, gathered in host memory and then written as one file.
class CheckpointWriter {
 public:
  // params[unit][index]: the model's parameters, which strategies address by position.
  explicit CheckpointWriter(const std::vector<std::vector<TensorLayout>>& params);
  const dshost_state_io* io() const { return &io_; }  // for the strategy's save
  // A tensor the host saves whole: a model buffer or frozen parameter (in its own layout), RNG
  // state.
  void add_whole(const std::string& name, const at::Tensor& t, const std::string& export_name = "",
                 bool export_transposed = false);
  // Writes `path` (safetensors; its metadata lists the slices for the index).
  void write(const std::string& path) const;

 private:
  void add(const TensorLayout& layout, int64_t offset, const at::Tensor& data);
  const std::vector<std::vector<TensorLayout>>& params_;
  nlohmann::json slices_ = nlohmann::json::array();
  std::vector<std::pair<std::string, at::Tensor>> tensors_;
  dshost_state_io io_;
};

// The index of a checkpoint whose rank files exist: every file's size and CRC-32C and
// every slice, read from the files' metadata. Rank 0 writes it.
nlohmann::json build_index(const std::string& dir, int world_size, nlohmann::json about);

// A complete checkpoint opened for loading. Files are checked against the index (size and
// CRC-32C) when first read; a missing, truncated or altered file is a UserError naming it.
class CheckpointReader {
 public:
  CheckpointReader(std::string dir, const std::vector<std::vector<TensorLayout>>& params);
  ~CheckpointReader();
  const nlohmann::json& index() const { return index_; }
  const std::string& dir() const { return dir_; }
  const dshost_state_io* io() const { return &io_; }  // for the strategy's load
  bool has(const std::string& name) const { return index_["tensors"].contains(name); }
  // The whole tensor, row-major, in the dtype it was saved in.
  at::Tensor whole(const std::string& name) const;
  // The whole tensor copied into `out`, which must have its shape.
  void whole_into(const std::string& name, const at::Tensor& out) const;
  // Every parameter of the model is in the checkpoint with the same shape, else a
  // UserError naming the first tensor that differs.
  void check_model(const std::string& model_name) const;

 private:
  const nlohmann::json& entry(const std::string& name) const;
  void fill(const std::string& name, const std::vector<int64_t>& order, int64_t offset,
            at::Tensor out) const;
  void copy_range(const nlohmann::json& entry, int64_t offset, at::Tensor out) const;
  const SafetensorsFile& file(const std::string& name) const;

  std::string dir_;
  const std::vector<std::vector<TensorLayout>>& params_;
  nlohmann::json index_;
  mutable std::map<std::string, std::unique_ptr<SafetensorsFile>> files_;
  dshost_state_io io_;
};

// Writes the model's weights of checkpoint `dir` (parameters and buffers, under their
// export names, row-major) to one safetensors file; float tensors in `dtype`.
void export_checkpoint(const std::string& dir, const std::string& out, at::ScalarType dtype);

// ---- the directory protocol ------------------------------------------------------------
std::string step_dir_name(int64_t step);  // "step-00000100"
std::string rank_checkpoint_file(const std::string& staging,
                                 int rank);  // its rank-0000R.safetensors
// The checkpoint `latest` names under `dir`; when `latest` is missing, empty or names no
// whole checkpoint, the newest step-N/ with an index (and *note says so); "" when there is
// none.
std::string latest_checkpoint(const std::string& dir, std::string* note = nullptr);
// The checkpoint a user names with `path`: `path` itself where it holds index.json or no
// `latest`, else the one `latest` names there (see latest_checkpoint).
std::string checkpoint_at(const std::string& path, std::string* note = nullptr);
// Rank 0, once every rank's file is in `staging`: writes the index, renames staging to
// its final name, moves `latest`, and keeps only the newest `keep` checkpoints (0: all).
void publish_checkpoint(const std::string& dir, const std::string& staging, int64_t step,
                        const nlohmann::json& index, int64_t keep);

}  // namespace dshost
