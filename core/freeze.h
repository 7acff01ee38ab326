// model.freeze: the model's parameters split into those a strategy trains, under the strategy's
// own unit and parameter indices, and those the host keeps fixed on the device (no gradient, no
// optimizer state, no communication), as PyTorch's requires_grad_(False) keeps them.
#pragma once

#include <dshost/torch.hpp>  // first: ATen's DLPack

#include "core/plugin_handles.h"

#include <string>
#include <vector>

namespace dshost {

struct ParamPlacement {
  // The strategy's units in forward order: each model unit that keeps a parameter to train,
  // with those parameters in the model's order.
  std::vector<std::vector<ParamRef>> trained;
  std::vector<int32_t> strategy_unit;  // [model unit]: its index in `trained`; -1: frozen whole
  std::vector<ParamRef> frozen;
};

// `params`: the model's parameters [unit][index]; `freeze`: comma-separated globs over their
// exported names (torchvision's for the image models), "" for none. Each glob must match a
// parameter and one at least must be left to train; else a UserError naming `where`.
ParamPlacement place_params(const std::vector<std::vector<TensorLayout>>& params,
                            const std::string& freeze, const std::string& where);

// The layouts of the parameters the strategy trains, [strategy unit][index], as its checkpoints
// address them; `params`: the model's, [unit][index].
std::vector<std::vector<TensorLayout>> trained_layouts(
    const std::vector<std::vector<TensorLayout>>& params, const ParamPlacement& placement);

// The frozen parameters copied to `device` in the model's own dtype (fp32 under bf16 autocast,
// as PyTorch keeps them) and bound to the model without a gradient. Returned as named views,
// which checkpoints save and load whole under the names a strategy saves values under.
std::vector<ModelBuffer> bind_frozen(const ModelHandle& model,
                                     const std::vector<std::vector<TensorLayout>>& params,
                                     const std::vector<ParamRef>& frozen, const at::Device& device);

}  // namespace dshost
