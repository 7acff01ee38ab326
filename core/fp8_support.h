// train.precision = "fp8": what it needs, checked where each need can be seen.
#pragma once

#include "core/config.h"
#include "core/manifest.h"

#include <dshost/abi.h>

#include <ATen/core/Tensor.h>

#include <string>

namespace dshost {

// From the manifest alone: train.device = "cuda", a model built for ABI 1.9 or later (one
// that can be told of fp8), and a dshost whose LibTorch has fp8 matrix multiplies.
void check_fp8_job(const Manifest& m, const Config& config, const dshost_plugin_descriptor& model);

// On the rank: a GPU with fp8 tensor cores (compute capability 8.9 or later), and a model
// that has layers to run in fp8.
void check_fp8_rank(const Manifest& m, const Config& config, const at::Device& device,
                    const std::string& model_name, const dshost_model_info& model);

}  // namespace dshost
