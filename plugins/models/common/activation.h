// The activations the image models put after a batch norm. Plain C++: the CUDA kernels'
// files include it too.
#pragma once

namespace dshost_models {

enum class Act { none, relu, relu6, silu };

}  // namespace dshost_models
