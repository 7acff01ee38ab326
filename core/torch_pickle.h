// A state_dict saved by PyTorch's torch.save (the zip format torchvision and torch.hub cache
// as .pth files: ARCHIVE/data.pkl, a pickle, beside ARCHIVE/data/KEY, each storage's bytes),
// read without Python. The pickle is run by a small machine that knows the opcodes torch.save
// writes (protocols 2 to 4) and the objects a state_dict holds: an OrderedDict of tensors
// rebuilt by torch._utils._rebuild_tensor_v2 (or _rebuild_parameter) from typed storages.
#pragma once

#include <ATen/core/Tensor.h>

#include <map>
#include <string>

namespace dshost {

// Tensors by name, in CPU memory. Anything else (a whole pickled module, a file that is not
// a torch.save zip, a damaged one) is a UserError naming the file and what was found.
std::map<std::string, at::Tensor> read_torch_state_dict(const std::string& path);

// Whether the file at `path` starts as a zip archive does (torch.save's format).
bool is_zip_file(const std::string& path);

}  // namespace dshost
