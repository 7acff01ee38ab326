// Cross entropy over bf16 logits on a GPU (CUDA builds only), without an fp32 copy of them:
// forward reads each row once (a running maximum and sum of exponentials) and keeps its
// log-sum-exp; backward reads the row again and writes its gradient in bf16. ATen's path
// (a cast to fp32, log_softmax, nll_loss and their backwards) moves several times those
// bytes; gpt2-124m's logits at b8 are [8192, 50304], 0.8 GB in bf16. Plain C++ on this
// side: the kernels' file includes no LibTorch.
#pragma once

#include <cstdint>

namespace dshost_models {

// Logits of rows x classes, row-major and contiguous, starting 16-byte aligned.
struct CrossEntropyShape {
  int64_t rows, classes;
};

// Per row r, in fp32: lse[r] = log(sum_c exp(logits[r][c])) and
// losses[r] = lse[r] - logits[r][targets[r]]. A target outside [0, classes) gives a NaN
// loss, which the trainer's non-finite check then reports. Enqueued on `stream` (a
// cudaStream_t); returns the launch's error text, or null.
const char* cuda_cross_entropy(const uint16_t* logits, const int64_t* targets, float* losses,
                               float* lse, const CrossEntropyShape& s, void* stream);

// dlogits[r][c] = (exp(logits[r][c] - lse[r]) - (c == targets[r])) * scale[0], written
// whole in bf16; scale is a float on the device (the loss's gradient over the rows, so a
// captured CUDA graph reads it when it runs).
const char* cuda_cross_entropy_backward(const uint16_t* logits, const int64_t* targets,
                                        const float* lse, const float* scale, uint16_t* dlogits,
                                        const CrossEntropyShape& s, void* stream);

}  // namespace dshost_models
