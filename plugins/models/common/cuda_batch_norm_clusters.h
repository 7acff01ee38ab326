// The one-launch batch norm (batch_norm_cluster_plan.h's layout, cuda_batch_norm_clusters.cu's
// kernels) behind cuda_batch_norm.h, for the plans cuda_batch_norm_plan gives. Plain C++.
#pragma once

#include "cuda_batch_norm.h"

namespace dshost_models {

// As cuda_batch_norm and cuda_batch_norm_backward, with a plan that fits (lanes > 0) and
// no scratch; `stream` a cudaStream_t.
const char* cluster_batch_norm(const uint16_t* x, const BatchNormParams& p, Act act, uint16_t* y,
                               float* stats, const BatchNormShape& s, const ClusterPlan& plan,
                               void* stream);
const char* cluster_batch_norm_backward(const uint16_t* dy, const uint16_t* x, const float* stats,
                                        Act act, uint16_t* dx, const BatchNormGrads& g,
                                        const BatchNormShape& s, const ClusterPlan& plan,
                                        void* stream);

}  // namespace dshost_models
