#include <dshost/torch.hpp>  // first: ATen's DLPack

#include "core/init_from.h"

#include "core/error.h"
#include "core/name_globs.h"
#include "core/plugin_handles.h"
#include "core/safetensors.h"
#include "core/torch_pickle.h"

#include <map>
#include <memory>
#include <utility>

namespace dshost {
namespace {

// A weights file's tensors: a safetensors file mapped (kept open while they are read), or
// torch.save's zip read into memory.
struct WeightsFile {
  explicit WeightsFile(const std::string& path) {
    if (is_torch_save_file(path)) {
      tensors = read_torch_state_dict(path);
      return;
    }
    try {
      mapped = std::make_unique<SafetensorsFile>(path);
    } catch (const UserError& e) {
      throw UserError(cat(e.what(),
                          ". model.init_from reads safetensors files and state_dicts "
                          "saved by torch.save (.pth, .pt)"));
    }
    for (const std::string& name : mapped->names()) tensors[name] = mapped->tensor(name);
  }
  std::map<std::string, at::Tensor> tensors;
  std::unique_ptr<SafetensorsFile> mapped;
};

}  // namespace

std::string wrapper_prefix(const std::vector<std::string>& file_names,
                           const std::map<std::string, at::Tensor>& model) {
  int as_they_are = 0;
  std::map<std::string, int> matched;  // by prefix: the model's names it leaves
  for (const std::string& name : file_names) {
    if (model.count(name)) {
      ++as_they_are;
      continue;
    }
    for (size_t dot = name.find('.'); dot != std::string::npos; dot = name.find('.', dot + 1))
      if (model.count(name.substr(dot + 1))) ++matched[name.substr(0, dot + 1)];
  }
  std::string best;
  int most = as_they_are;
  for (const auto& [prefix, count] : matched)
    if (count > most) best = prefix, most = count;
  return best;
}

std::map<std::string, at::Tensor> named_tensors(const ModelHandle& model) {
  std::map<std::string, at::Tensor> tensors;
  for (int32_t u = 0; u < model.info().unit_count; ++u)
    for (int32_t i = 0; i < model.param_count(u); ++i) {
      const dshost_param_desc desc = model.param(u, i);
      const at::Tensor value = from_dlpack(desc.value);
      tensors[export_name(desc)] = desc.export_transposed ? value.t() : value;
    }
  for (const ModelBuffer& b : model.buffers()) tensors[b.export_name] = b.value;
  return tensors;
}

InitResult init_model_from(const std::string& path, const std::string& skip,
                           const std::string& where,
                           const std::map<std::string, at::Tensor>& tensors) {
  const WeightsFile file(path);
  std::vector<std::string> file_names;
  for (const auto& entry : file.tensors) file_names.push_back(entry.first);
  InitResult result;
  result.prefix = wrapper_prefix(file_names, tensors);
  std::map<std::string, at::Tensor> in_file;  // by the model's names
  for (const auto& [name, value] : file.tensors) {
    const bool prefixed = !result.prefix.empty() && name.rfind(result.prefix, 0) == 0;
    in_file[prefixed ? name.substr(result.prefix.size()) : name] = value;
  }
  const NameGlobs skipped(skip);
  std::vector<std::string> names = file_names;  // a glob may name a file's tensor either way
  for (const auto* named : {&std::as_const(in_file), &tensors})
    for (const auto& entry : *named) names.push_back(entry.first);
  for (const std::string& glob : skipped.unmatched(names))
    throw UserError(cat(where, ": error: model.init_skip: \"", glob,
                        "\" matches no tensor of the model or of ", path,
                        "; check the names (`dshost export` writes a model's)"));
  std::vector<std::string> missing, unexpected;
  for (const auto& entry : in_file)
    if (!tensors.count(entry.first) && !skipped.match(entry.first))
      unexpected.push_back(entry.first);
  at::NoGradGuard no_grad;
  for (const auto& [name, target] : tensors) {
    if (skipped.match(name)) {
      result.kept.push_back(name + " (model.init_skip)");
      continue;
    }
    const auto found = in_file.find(name);
    if (found == in_file.end()) {
      missing.push_back(name);
      continue;
    }
    const at::Tensor& value = found->second;
    if (value.is_floating_point() != target.is_floating_point())
      throw UserError(cat(where, ": error: model.init_from: ", path, " holds ", name, " as ",
                          value.scalar_type(), ", the model's is ", target.scalar_type(),
                          "; that file's weights are not this model's"));
    if (value.sizes() != target.sizes()) {
      result.kept.push_back(
          cat(name, " (", value.sizes(), " in the file, ", target.sizes(), " in the model)"));
      continue;
    }
    target.copy_(value);
    ++result.loaded;
  }
  if (!missing.empty() || !unexpected.empty())
    throw UserError(
        cat(where, ": error: model.init_from: ", path, " does not match the model's names",
            result.prefix.empty() ? "" : cat(" (read without the prefix \"", result.prefix, "\")"),
            missing.empty() ? "" : cat("; the model's tensors not in the file: ", listed(missing)),
            unexpected.empty() ? ""
                               : cat("; the file's tensors not in the model: ", listed(unexpected)),
            ". Name those to leave as they are in model.init_skip (comma-separated globs, e.g. "
            "\"classifier.*\"), or check that the file holds this model's weights"));
  return result;
}

}  // namespace dshost
