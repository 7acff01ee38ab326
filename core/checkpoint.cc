#include <dshost/torch.hpp>  // first: ATen's DLPack for everything below

#include "core/checkpoint.h"

#include "core/crc32c.h"
#include "core/error.h"
#include "core/safetensors.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <numeric>

namespace fs = std::filesystem;

namespace dshost {
namespace {

std::string rank_file(int rank) {
  std::ostringstream name;
  name << "rank-" << std::setw(5) << std::setfill('0') << rank << ".safetensors";
  return name.str();
}

// The name of a parameter's state: the parameter's own name for its values, else
// NAME.KEY; a strategy-wide tensor (unit -1) is named by its key.
std::string state_name(const std::vector<std::vector<TensorLayout>>& params,
                       const dshost_state_slice& s) {
  if (s.unit < 0) return s.key;
  if (s.unit >= static_cast<int32_t>(params.size()) || s.index < 0 ||
      s.index >= static_cast<int32_t>(params[s.unit].size()))
    throw UserError(cat("no parameter ", s.index, " in unit ", s.unit), 1);
  const std::string& name = params[s.unit][s.index].name;
  return std::string(s.key) == "value" ? name : name + "." + s.key;
}

// Layout orders are equal where it matters: dimensions of size 1 may sit anywhere.
bool same_order(const std::vector<int64_t>& shape, const std::vector<int64_t>& a,
                const std::vector<int64_t>& b) {
  std::vector<int64_t> x, y;
  for (int64_t d : a)
    if (shape[d] > 1) x.push_back(d);
  for (int64_t d : b)
    if (shape[d] > 1) y.push_back(d);
  return x == y;
}

std::vector<int64_t> identity_order(size_t dims) {
  std::vector<int64_t> order(dims);
  std::iota(order.begin(), order.end(), 0);
  return order;
}

// `flat` (a tensor's elements in memory order `order`) as the logical tensor.
at::Tensor unflatten(const at::Tensor& flat, const std::vector<int64_t>& shape,
                     const std::vector<int64_t>& order) {
  std::vector<int64_t> stored(order.size()), inverse(order.size());
  for (size_t i = 0; i < order.size(); ++i) {
    stored[i] = shape[order[i]];
    inverse[order[i]] = static_cast<int64_t>(i);
  }
  return flat.reshape(stored).permute(inverse);
}

std::string shape_text(const std::vector<int64_t>& shape) { return cat(at::IntArrayRef(shape)); }

int64_t numel_of(const std::vector<int64_t>& shape) {
  return std::accumulate(shape.begin(), shape.end(), int64_t{1}, std::multiplies<>());
}

// The CRC-32C of the index's canonical text without its own checksum (keys sorted, as
// nlohmann::json keeps them), so the index can carry it.
uint32_t index_checksum(nlohmann::json index) {
  index.erase("index_crc32c");
  const std::string text = index.dump();
  return crc32c(text.data(), text.size());
}

// The index of a version-2 checkpoint must match its checksum before anything in it is
// used; version 1 (before the checksum) has none.
void verify_index(const nlohmann::json& index, const std::string& path) {
  if (index.value("version", 0) < 2) return;
  if (!index.contains("index_crc32c") || !index["index_crc32c"].is_number_unsigned() ||
      index["index_crc32c"].get<uint32_t>() != index_checksum(index))
    throw UserError(
        cat(path,
            " is damaged: its content differs from its checksum (index_crc32c), so "
            "no tensor in it can be trusted; resume from another checkpoint (an older step-*)"));
}

// The newest step-N directory under `dir` that holds an index (a published checkpoint).
std::string newest_complete_checkpoint(const std::string& dir) {
  std::string newest;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    const bool step_dir = name.size() == 13 && name.rfind("step-", 0) == 0 &&
                          std::all_of(name.begin() + 5, name.end(), ::isdigit);
    if (step_dir && fs::exists(e.path() / "index.json") &&
        name > fs::path(newest).filename().string())
      newest = e.path().string();
  }
  return newest;
}

}  // namespace

TensorLayout TensorLayout::of(const std::string& name, const at::Tensor& t,
                              const std::string& export_name, bool export_transposed) {
  std::vector<int64_t> order = identity_order(t.dim());
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return t.stride(a) > t.stride(b); });
  return {name, t.sizes().vec(), order, export_name, export_transposed};
}

int64_t TensorLayout::numel() const { return numel_of(shape); }

// ---- writing -------------------------------------------------------------------------

CheckpointWriter::CheckpointWriter(const std::vector<std::vector<TensorLayout>>& params)
    : params_(params) {
  io_.struct_size = sizeof(dshost_state_io);
  io_.context = this;
  io_.write = [](void* context, const dshost_state_slice* where, const DLTensor* data,
                 dshost_error* err) {
    return guarded(
        err,
        [&] {
          auto* self = static_cast<CheckpointWriter*>(context);
          const at::Tensor t = borrow(data);
          TensorLayout layout;
          if (where->unit < 0) {
            layout = TensorLayout{where->key, t.sizes().vec(), identity_order(t.dim())};
          } else {
            layout = self->params_.at(where->unit).at(where->index);
            layout.name = state_name(self->params_, *where);
            if (std::string(where->key) != "value") layout.export_name.clear();  // moments stay out
          }
          self->add(layout, where->offset, t);
        },
        DSHOST_INVALID_ARGUMENT);
  };
  io_.read = nullptr;
}

void CheckpointWriter::add_whole(const std::string& name, const at::Tensor& t,
                                 const std::string& export_name, bool export_transposed) {
  const TensorLayout layout = TensorLayout::of(name, t, export_name, export_transposed);
  add(layout, 0, t.permute(layout.order));
}

void CheckpointWriter::add(const TensorLayout& layout, int64_t offset, const at::Tensor& data) {
  if (offset < 0 || offset + data.numel() > layout.numel())
    throw UserError(cat("slice [", offset, ", ", offset + data.numel(), ") lies outside ",
                        layout.name, " (", layout.numel(), " elements)"),
                    1);
  const std::string key = cat(layout.name, "@", offset);
  slices_.push_back({{"tensor", layout.name},
                     {"key", key},
                     {"offset", offset},
                     {"count", data.numel()},
                     {"shape", layout.shape},
                     {"order", layout.order},
                     {"dtype", safetensors_dtype(data.scalar_type())}});
  if (!layout.export_name.empty()) slices_.back()["export_name"] = layout.export_name;
  if (layout.export_transposed) slices_.back()["export_transposed"] = true;
  tensors_.emplace_back(key, data.detach().reshape({-1}).to(at::kCPU, /*non_blocking=*/false,
                                                            /*copy=*/true));
}

void CheckpointWriter::write(const std::string& path) const {
  std::vector<NamedTensor> tensors;
  for (const auto& [key, t] : tensors_) tensors.push_back({key, t});
  write_safetensors(path, tensors,
                    {{"format", "dshost-checkpoint-slices"}, {"slices", slices_.dump()}});
}

nlohmann::json build_index(const std::string& dir, int world_size, nlohmann::json about) {
  nlohmann::json files = nlohmann::json::object(), tensors = nlohmann::json::object();
  for (int r = 0; r < world_size; ++r) {
    const std::string name = rank_file(r), path = (fs::path(dir) / name).string();
    if (!fs::exists(path))
      throw UserError(cat("rank ", r, "'s checkpoint file ", path, " is not visible from rank 0; ",
                          "checkpoint.dir must be on a file system every node shares"),
                      1);
    const SafetensorsFile file(path);
    files[name] = {{"bytes", file.bytes()}, {"crc32c", file.crc32c()}};
    for (const auto& s : nlohmann::json::parse(file.metadata("slices"))) {
      nlohmann::json& t = tensors[s["tensor"].get<std::string>()];
      if (t.is_null()) {
        t = {{"dtype", s["dtype"]},
             {"shape", s["shape"]},
             {"order", s["order"]},
             {"slices", nlohmann::json::array()}};
        if (s.contains("export_name")) t["export_name"] = s["export_name"];
        if (s.contains("export_transposed")) t["export_transposed"] = true;
      }
      t["slices"].push_back(
          {{"file", name}, {"key", s["key"]}, {"offset", s["offset"]}, {"count", s["count"]}});
    }
  }
  about["format"] = "dshost-checkpoint";
  about["version"] = 2;
  about["files"] = files;
  about["tensors"] = tensors;
  about["index_crc32c"] = index_checksum(about);
  return about;
}

// ---- reading -------------------------------------------------------------------------

CheckpointReader::CheckpointReader(std::string dir,
                                   const std::vector<std::vector<TensorLayout>>& params)
    : dir_(std::move(dir)), params_(params) {
  const std::string path = (fs::path(dir_) / "index.json").string();
  std::ifstream in(path);
  if (!in)
    throw UserError(cat("cannot read ", path, ": ", std::strerror(errno),
                        "; name a checkpoint directory (one with index.json) or its parent "
                        "with a `latest` file"));
  try {
    index_ = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw UserError(cat(path, ": not a checkpoint index: ", e.what()));
  }
  if (index_.value("format", "") != "dshost-checkpoint" || !index_.contains("tensors"))
    throw UserError(cat(path, ": not a dshost checkpoint index"));
  verify_index(index_, path);
  io_.struct_size = sizeof(dshost_state_io);
  io_.context = this;
  io_.write = nullptr;
  io_.read = [](void* context, const dshost_state_slice* where, DLTensor* data, dshost_error* err) {
    return guarded(
        err,
        [&] {
          auto* self = static_cast<CheckpointReader*>(context);
          at::Tensor out = borrow(data);
          const std::string name = state_name(self->params_, *where);
          if (where->unit < 0) {
            const at::Tensor t = self->whole(name);
            if (t.numel() != out.numel())
              throw UserError(cat("tensor ", name, " has ", t.numel(), " elements in checkpoint ",
                                  self->dir_, " but ", out.numel(), " are asked for"));
            out.copy_(t.reshape(out.sizes()));
            return;
          }
          const TensorLayout& p = self->params_.at(where->unit).at(where->index);
          self->fill(name, p.order, where->offset, out);
        },
        DSHOST_INVALID_ARGUMENT);
  };
}

CheckpointReader::~CheckpointReader() = default;

const nlohmann::json& CheckpointReader::entry(const std::string& name) const {
  if (has(name)) return index_["tensors"][name];
  std::string hint;
  const std::string param = name.substr(0, name.rfind('.'));
  if (name.find(".exp_avg") != std::string::npos || name.find(".momentum") != std::string::npos)
    hint = has(param) && !has(param + ".exp_avg") && !has(param + ".momentum")
               ? cat(" (", param,
                     " was frozen by model.freeze when it was saved, so it has no optimizer "
                     "state; resume with the same model.freeze, or start a new run from its "
                     "weights: `dshost export` them and give the file to model.init_from)")
               : cat(" (it was saved with optimizer ", index_.value("optimizer", "?"),
                     "; resume with the same optimizer.name)");
  throw UserError(cat("checkpoint ", dir_, " has no tensor ", name, hint));
}

void CheckpointReader::check_model(const std::string& model_name) const {
  const std::string saved = index_.value("model", "");
  if (saved != model_name)
    throw UserError(
        cat("checkpoint ", dir_, " was saved from model '", saved, "' but this run trains '",
            model_name,
            "'; resume from a checkpoint of this model or set checkpoint.resume = \"never\""));
  for (const auto& unit : params_)
    for (const TensorLayout& p : unit) {
      const std::vector<int64_t> saved_shape = entry(p.name)["shape"].get<std::vector<int64_t>>();
      if (saved_shape != p.shape)
        throw UserError(
            cat("tensor ", p.name, " has shape ", shape_text(saved_shape), " in checkpoint ", dir_,
                " but ", shape_text(p.shape),
                " in the model; the model's options differ from the run that saved it"));
    }
}

at::Tensor CheckpointReader::whole(const std::string& name) const {
  const nlohmann::json& e = entry(name);
  const auto shape = e["shape"].get<std::vector<int64_t>>();
  const auto order = e["order"].get<std::vector<int64_t>>();
  const at::ScalarType type = from_safetensors_dtype(e["dtype"]);
  at::Tensor flat = at::empty({numel_of(shape)}, type);
  copy_range(e, 0, flat);
  return unflatten(flat, shape, order).contiguous();
}

void CheckpointReader::whole_into(const std::string& name, const at::Tensor& out) const {
  const at::Tensor t = whole(name);
  if (t.sizes() != out.sizes())
    throw UserError(cat("tensor ", name, " has shape ", t.sizes(), " in checkpoint ", dir_, " but ",
                        out.sizes(),
                        " in the model; the model's options differ from the run that saved it"));
  out.copy_(t);
}

// Elements [offset, offset + out.numel()) of tensor `name` in memory order `order`.
void CheckpointReader::fill(const std::string& name, const std::vector<int64_t>& order,
                            int64_t offset, at::Tensor out) const {
  const nlohmann::json& e = entry(name);
  const auto shape = e["shape"].get<std::vector<int64_t>>();
  if (same_order(shape, order, e["order"].get<std::vector<int64_t>>())) {
    at::Tensor staged = out.is_contiguous() && out.is_cpu()
                            ? out
                            : at::empty({out.numel()}, out.options().device(at::kCPU));
    copy_range(e, offset, staged.view({-1}));
    if (!staged.is_same(out)) out.copy_(staged.view(out.sizes()));
    return;
  }
  // Saved in another memory layout (channels-last on one side only): reorder it whole.
  const at::Tensor logical = whole(name);
  const at::Tensor reordered = logical.permute(order).contiguous().view({-1});
  out.copy_(reordered.narrow(0, offset, out.numel()).view(out.sizes()));
}

// Elements [offset, offset + out.numel()) of the stored flat tensor from the slices that
// hold them; a gap is a UserError.
void CheckpointReader::copy_range(const nlohmann::json& e, int64_t offset, at::Tensor out) const {
  const int64_t end = offset + out.numel();
  std::vector<std::pair<int64_t, int64_t>> covered;
  for (const auto& s : e["slices"]) {
    const int64_t begin = s["offset"], count = s["count"];
    const int64_t from = std::max(offset, begin), to = std::min(end, begin + count);
    if (from >= to) continue;
    const at::Tensor data = file(s["file"]).tensor(s["key"]);
    out.narrow(0, from - offset, to - from).copy_(data.narrow(0, from - begin, to - from));
    covered.emplace_back(from, to);
  }
  std::sort(covered.begin(), covered.end());
  int64_t reached = offset;
  for (const auto& [from, to] : covered) {
    if (from > reached) break;
    reached = std::max(reached, to);
  }
  if (reached < end)
    throw UserError(cat("checkpoint ", dir_, " holds no value for elements [", reached, ", ", end,
                        ") of one of its tensors; a rank's file is missing from its index"));
}

const SafetensorsFile& CheckpointReader::file(const std::string& name) const {
  auto& slot = files_[name];
  if (slot) return *slot;
  const std::string path = (fs::path(dir_) / name).string();
  if (!index_["files"].contains(name) || !fs::exists(path))
    throw UserError(
        cat("checkpoint file ", path, " is missing; the checkpoint is incomplete: ",
            "resume from another one (its parent directory's `latest`, or an older step-*)"));
  const nlohmann::json& want = index_["files"][name];
  const auto damaged = [&](const std::string& why) {
    return UserError(
        cat("checkpoint file ", path, " is damaged: ", why, "; resume from another checkpoint"));
  };
  const auto bytes = static_cast<int64_t>(fs::file_size(path));
  if (bytes != want["bytes"].get<int64_t>())
    throw damaged(cat(bytes, " bytes where its index says ", want["bytes"].get<int64_t>()));
  auto opened = std::make_unique<SafetensorsFile>(path);
  if (opened->crc32c() != want["crc32c"].get<uint32_t>())
    throw damaged("its CRC-32C differs from its index's");
  slot = std::move(opened);
  return *slot;
}

void export_checkpoint(const std::string& dir, const std::string& out, at::ScalarType dtype) {
  const std::vector<std::vector<TensorLayout>> no_params;
  const CheckpointReader reader(dir, no_params);
  std::vector<NamedTensor> weights;
  for (const auto& [name, entry] : reader.index()["tensors"].items()) {
    if (!entry.contains("export_name")) continue;
    at::Tensor t = reader.whole(name);
    if (entry.value("export_transposed", false)) t = t.t().contiguous();
    weights.push_back({entry["export_name"], t.is_floating_point() ? t.to(dtype) : t});
  }
  if (weights.empty())
    throw UserError(cat("checkpoint ", dir, " holds no model weights to export"));
  write_safetensors(out, weights, {{"format", "pt"}});  // "pt": the safetensors library's tag
}

// ---- the directory protocol ----------------------------------------------------------

std::string step_dir_name(int64_t step) {
  std::ostringstream name;
  name << "step-" << std::setw(8) << std::setfill('0') << step;
  return name.str();
}

std::string latest_checkpoint(const std::string& dir, std::string* note) {
  std::ifstream in(fs::path(dir) / "latest");
  std::string name;
  if (in && std::getline(in, name) && !name.empty() && name.find('/') == std::string::npos) {
    const fs::path named = fs::path(dir) / name, replaced = named.string() + ".replaced";
    if (fs::exists(named / "index.json")) return named.string();
    // Killed between publish's two renames: the one `latest` named is still whole, aside.
    if (fs::exists(replaced / "index.json")) return replaced.string();
  }
  // `latest` missing, empty or naming nothing whole: each step directory describes itself.
  const std::string newest = newest_complete_checkpoint(dir);
  if (note != nullptr && !newest.empty())
    *note = cat((fs::path(dir) / "latest").string(), " ",
                !in            ? "is missing"
                : name.empty() ? "is empty"
                               : cat("names '", name, "', which is not a whole checkpoint"),
                ": resuming from the newest complete checkpoint, ", newest);
  return newest;
}

std::string checkpoint_at(const std::string& path, std::string* note) {
  if (fs::exists(fs::path(path) / "index.json") || !fs::exists(fs::path(path) / "latest"))
    return path;
  return latest_checkpoint(path, note);
}

std::string rank_checkpoint_file(const std::string& staging, int rank) {
  return (fs::path(staging) / rank_file(rank)).string();
}

void publish_checkpoint(const std::string& dir, const std::string& staging, int64_t step,
                        const nlohmann::json& index, int64_t keep) {
  write_file_atomically((fs::path(staging) / "index.json").string(), index.dump(1) + "\n");
  sync_directory(staging);
  // A checkpoint of this step from an earlier attempt (resumed from an older one) steps
  // aside rather than going first: `latest` may name it until the new one is in place.
  const fs::path final_dir = fs::path(dir) / step_dir_name(step);
  const fs::path replaced = final_dir.string() + ".replaced";
  std::error_code ec;
  remove_tree(replaced.string());
  if (fs::exists(final_dir)) fs::rename(final_dir, replaced, ec);
  fs::rename(staging, final_dir, ec);
  if (ec)
    throw UserError(cat("cannot rename ", staging, " to ", final_dir.string(), ": ", ec.message()),
                    1);
  sync_directory(dir);
  write_file_atomically((fs::path(dir) / "latest").string(), step_dir_name(step) + "\n");
  sync_directory(dir);
  remove_tree(replaced.string());
  if (keep <= 0) return;
  // The one just published stays, whatever its step (a run resumed from an older checkpoint
  // saves below newer ones), with the keep - 1 newest of the others.
  std::vector<fs::path> others;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (name.rfind("step-", 0) == 0 && name.find('.') == std::string::npos && e.path() != final_dir)
      others.push_back(e.path());
  }
  std::sort(others.begin(), others.end());
  for (size_t i = 0; i + static_cast<size_t>(keep) - 1 < others.size(); ++i)
    remove_tree(others[i].string());
}

}  // namespace dshost
