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
  std::string prefix;             // wrapper_prefix's, taken off the file's names
};

// The prefix a wrapper put before the names of the model it held, where a file's names carry
// one: DistributedDataParallel's "module.", torch.compile's "_orig_mod.", Hugging Face's
// GPT2LMHeadModel's "transformer.", Lightning's "model.". Of the prefixes (up to a '.') that
// leave one of the model's names, the one that leaves the most, where that is more than the
// file's names match as they are; else "". PyTorch's consume_prefix_in_state_dict_if_present
// and Hugging Face's from_pretrained take such prefixes off likewise.
std::string wrapper_prefix(const std::vector<std::string>& file_names,
                           const std::map<std::string, at::Tensor>& model);

// The file's names are read without their wrapper_prefix, where they have one (names
// without it, such as GPT2LMHeadModel's lm_head.weight, stay as they are). Strict: a model
// tensor the file lacks or a file tensor the model lacks is an error listing them (UserError, exit
// 2, naming `where`, the key's origin). A tensor whose shape differs (a new classifier for another
// number of classes) or whose name matches one of `skip` (comma-separated globs, each of which must
// match something) keeps its initialisation. A tensor that is not floating point where the model's
// is, or the reverse, is an error. `model`: the model's tensors (views of its parameters and
// buffers) by exported name.
InitResult init_model_from(const std::string& path, const std::string& skip,
                           const std::string& where,
                           const std::map<std::string, at::Tensor>& model);

// A model's parameters and buffers by the names it exports, as it exports them (a view of the
// transpose where it exports one transposed).
std::map<std::string, at::Tensor> named_tensors(const ModelHandle& model);

}  // namespace dshost
