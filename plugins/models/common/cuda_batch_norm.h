// Batch norm in training with the activation after it fused in, over channels-last bf16
// activations on a GPU (CUDA builds only). Forward reads x twice (the channels' statistics,
// then the normalized and activated output) and writes y once; backward reads dy and x
// twice and writes dx once, the activation's derivative recomputed from x. Unfused, cuDNN's
// batch norm and ATen's activation write and read the normalized tensor besides, and
// autograd keeps it for the activation's backward. Where the device has thread block clusters
// and a layer's layout fits them (batch_norm_cluster_plan.h: up to 16,384 rows, the small
// image models' 14x14 and 7x7 layers at batch 32), each direction is one launch that reads its
// inputs once. Plain C++ on this side: the kernels' files include no LibTorch.
#pragma once

#include "activation.h"
#include "batch_norm_cluster_plan.h"

#include <cstdint>

namespace dshost_models {

// x as a rows x channels bf16 matrix (rows = batch x height x width), row-major,
// contiguous, starting 16-byte aligned.
struct BatchNormShape {
  int64_t rows, channels;
};

// The layer's parameters (weight and bias, both fp32 or both bf16: params_fp32) and running
// statistics (both fp32 or both bf16: stats_fp32), [channels] each; batches_tracked, an
// int64 counter, or null.
struct BatchNormParams {
  const void* weight;
  const void* bias;
  void* running_mean;
  void* running_var;
  int64_t* batches_tracked;
  bool params_fp32, stats_fp32;
  float momentum, eps;
};

// The shapes the kernels take: channels a multiple of 8, at least 2 rows.
bool cuda_batch_norm_takes(const BatchNormShape& s);

// The one-launch layout both directions take for s on the current device; lanes 0: the three
// passes.
ClusterPlan cuda_batch_norm_plan(const BatchNormShape& s);

// Floats of scratch each call needs for a shape on the current device (none in one launch).
int64_t cuda_batch_norm_scratch(const BatchNormShape& s);

// y = act(weight (x - mean) rstd + bias) with each channel's mean and rstd = 1 /
// sqrt(variance + eps) over the rows (variance biased); the running statistics move
// `momentum` of the way to the mean and the unbiased variance, and batches_tracked counts
// one more (where not null). stats [4, channels] fp32 receives mean, rstd and the scale and
// shift y applies (weight rstd, bias - mean weight rstd), for the backward. Enqueued on
// `stream` (a cudaStream_t); returns the launch's error text, or null.
const char* cuda_batch_norm(const uint16_t* x, const BatchNormParams& p, Act act, uint16_t* y,
                            float* stats, float* scratch, const BatchNormShape& s, void* stream);

// Where backward puts the weight's and bias's gradients, [channels] each, both fp32 or both
// bf16 (fp32): written, or added to what they hold (accumulate).
struct BatchNormGrads {
  void* dweight;
  void* dbias;
  bool fp32, accumulate;
};

// From dy, x and the forward's stats: dx, and the weight's and bias's gradients, the
// channels' sums added in an order fixed by the shape (the same bits every run).
const char* cuda_batch_norm_backward(const uint16_t* dy, const uint16_t* x, const float* stats,
                                     Act act, uint16_t* dx, const BatchNormGrads& g, float* scratch,
                                     const BatchNormShape& s, void* stream);

}  // namespace dshost_models
