// A state_dict saved by PyTorch's torch.save (the zip format torchvision and torch.hub cache
// as .pth files: ARCHIVE/data.pkl, a pickle, beside ARCHIVE/data/KEY, each storage's bytes;
// or the legacy stream of PyTorch before 1.6, in which torchvision's older weights were
// published), read without Python. The pickle is run by a small machine that knows the opcodes
// torch.save writes (protocols 2 to 4) and the objects a state_dict holds: an OrderedDict of
// tensors rebuilt by torch._utils._rebuild_tensor_v2 (or _rebuild_parameter) from typed storages.
#pragma once

#include <ATen/core/Tensor.h>

#include <map>
#include <string>

namespace dshost {

// Tensors by name, in CPU memory. Anything else (a whole pickled module, a file torch.save did
// not write, a damaged one) is a UserError naming the file and what was found.
std::map<std::string, at::Tensor> read_torch_state_dict(const std::string& path);

// Whether the file at `path` starts as torch.save's files do (a zip, or the legacy stream).
bool is_torch_save_file(const std::string& path);

}  // namespace dshost
