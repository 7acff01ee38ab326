// 2 x 2 max pooling with stride 2 over channels-last bf16 maps on a GPU (CUDA builds only),
// keeping for backward which of its window's four elements each output took (one byte),
// where ATen writes and reads an 8-byte index per output and zero-fills the input gradient
// before scattering into it: on vgg16 b32 ATen's pooling took 1.6 ms of a 9.4 ms step on an
// H200 (bench/results/gpu_profiles.md). Plain C++ on this side: the kernels' file includes
// no LibTorch.
#pragma once

#include <cstdint>

namespace dshost_models {

// An input of n x h x w x c (channels last), h and w even, c a multiple of 8; the output is
// n x h/2 x w/2 x c. Element pointers 16-byte aligned.
struct MaxPoolShape {
  int64_t n, h, w, c;
};

// y and which (0-3, row-major in the window) from x: each window's first maximum in
// row-major order, a NaN taking over, as ATen's max_pool2d picks it. Enqueued on `stream`
// (a cudaStream_t); returns the launch's error text, or null.
const char* cuda_max_pool2x2(const uint16_t* x, uint16_t* y, uint8_t* which, const MaxPoolShape& s,
                             void* stream);

// dx, written whole: each output's gradient where `which` says, zero elsewhere.
const char* cuda_max_pool2x2_backward(const uint16_t* dy, const uint8_t* which, uint16_t* dx,
                                      const MaxPoolShape& s, void* stream);

}  // namespace dshost_models
