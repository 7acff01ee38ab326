#include "core/freeze.h"

#include "core/error.h"
#include "core/name_globs.h"

namespace dshost {

ParamPlacement place_params(const std::vector<std::vector<TensorLayout>>& params,
                            const std::string& freeze, const std::string& where) {
  const NameGlobs globs(freeze);
  std::vector<std::string> names;
  for (const auto& unit : params)
    for (const TensorLayout& p : unit) names.push_back(p.export_name);
  for (const std::string& glob : globs.unmatched(names))
    throw UserError(cat(where, ": error: model.freeze: \"", glob,
                        "\" matches none of the model's parameters: ", listed(names),
                        "; `dshost export` writes them by these names"));
  ParamPlacement out;
  for (size_t u = 0; u < params.size(); ++u) {
    std::vector<ParamRef> trained;
    for (size_t i = 0; i < params[u].size(); ++i) {
      const ParamRef ref{static_cast<int32_t>(u), static_cast<int32_t>(i)};
      (globs.match(params[u][i].export_name) ? out.frozen : trained).push_back(ref);
    }
    out.strategy_unit.push_back(trained.empty() ? -1 : static_cast<int32_t>(out.trained.size()));
    if (!trained.empty()) out.trained.push_back(std::move(trained));
  }
  if (out.trained.empty())
    throw UserError(cat(where, ": error: model.freeze = \"", freeze,
                        "\" freezes every parameter of the model, leaving nothing to train; "
                        "narrow the globs (e.g. \"features.*\" keeps the classifier trained)"));
  return out;
}

std::vector<std::vector<TensorLayout>> trained_layouts(
    const std::vector<std::vector<TensorLayout>>& params, const ParamPlacement& placement) {
  std::vector<std::vector<TensorLayout>> out;
  for (const auto& unit : placement.trained) {
    out.emplace_back();
    for (const ParamRef& p : unit) out.back().push_back(params[p.unit][p.index]);
  }
  return out;
}

std::vector<ModelBuffer> bind_frozen(const ModelHandle& model,
                                     const std::vector<std::vector<TensorLayout>>& params,
                                     const std::vector<ParamRef>& frozen,
                                     const at::Device& device) {
  std::vector<ModelBuffer> out;
  for (const ParamRef& p : frozen) {
    const dshost_param_desc desc = model.param(p.unit, p.index);
    const at::Tensor host = from_dlpack(desc.value);
    // empty_like keeps the parameter's memory layout (channels-last), which bind_param checks.
    at::Tensor value = at::empty_like(host, host.options().device(device)).copy_(host);
    model.bind_param(p.unit, p.index, to_dlpack(value), nullptr);
    const TensorLayout& layout = params[p.unit][p.index];
    out.push_back({layout.name, layout.export_name, value, layout.export_transposed});
  }
  return out;
}

}  // namespace dshost
