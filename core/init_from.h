// model.init_from: the model's parameters and buffers set from a file of pretrained weights
// (safetensors, or a state_dict saved by torch.save, as torchvision caches them as .pth), under the
// names the model exports (torchvision's for the image models that mirror torchvision, its own
// otherwise), before the strategy takes the parameters, so every strategy at every world size
// starts from them.
#pragma once

#include "core/config.h"

#include <ATen/core/Tensor.h>

#include <map>
#include <string>
#include <vector>

namespace dshost {

class ModelHandle;

struct InitResult {
  int64_t loaded = 0;
  std::vector<std::string> kept;  // names that kept their initialisation, and why
};

// Strict: a model tensor the file lacks or a file tensor the model lacks is an error listing
// them (UserError, exit 2, naming `where`, the key's origin). A tensor whose shape differs (a
// new classifier for another number of classes) or whose name matches one of `skip`
// (comma-separated globs, each of which must match something) keeps its initialisation. A
// tensor that is not floating point where the model's is, or the reverse, is an error.
// `model`: the model's tensors (views of its parameters and buffers) by exported name.
InitResult init_model_from(const std::string& path, const std::string& skip,
                           const std::string& where,
                           const std::map<std::string, at::Tensor>& model);

// A model's parameters and buffers by the names it exports, as it exports them (a view of the
// transpose where it exports one transposed).
std::map<std::string, at::Tensor> named_tensors(const ModelHandle& model);

}  // namespace dshost
