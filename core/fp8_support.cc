#include "core/fp8_support.h"

#include "core/error.h"

#if DSHOST_FP8
#include <ATen/cuda/CUDAContext.h>
#endif

namespace dshost {
namespace {

std::string refusal(const Manifest& m, const std::string& why) {
  return cat(m.origin("train", "precision"), ": error: train.precision = \"fp8\" ", why,
             "; set train.precision = \"bf16\"");
}

}  // namespace

void check_fp8_job(const Manifest& m, const Config& config, const dshost_plugin_descriptor& model) {
  if (config.train.precision != Precision::fp8) return;
  if (config.train.device != DeviceKind::cuda)
    throw UserError(refusal(m, "needs train.device = \"cuda\" (fp8 runs on GPU tensor cores)"));
  if (model.abi_major == 1 && model.abi_minor < 9)
    throw UserError(
        refusal(m, cat("needs a model built for dshost ABI 1.9 or later, but model '", model.name,
                       "' is built for ", model.abi_major, ".", model.abi_minor)));
#if !DSHOST_FP8
  throw UserError(refusal(m, "needs a dshost built with CUDA and LibTorch 2.1 or later"));
#endif
}

void check_fp8_rank(const Manifest& m, const Config& config, const at::Device& device,
                    const std::string& model_name, const dshost_model_info& model) {
  if (config.train.precision != Precision::fp8) return;
#if DSHOST_FP8
  const cudaDeviceProp* gpu = at::cuda::getDeviceProperties(device.index());
  if (gpu->major * 10 + gpu->minor < 89)
    throw UserError(refusal(m, cat("needs fp8 tensor cores (compute capability 8.9 or later: Ada, "
                                   "Hopper, Blackwell), but GPU ",
                                   static_cast<int>(device.index()), " is a ", gpu->name, " (",
                                   gpu->major, ".", gpu->minor, ")")));
#else
  (void)device;
#endif
  if (model.fp8_layers == 0)
    throw UserError(
        refusal(m, cat("has nothing to do: model '", model_name, "' has no fp8 layers")));
}

}  // namespace dshost
