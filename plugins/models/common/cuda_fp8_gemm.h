// fp8 products added into a bf16 matrix by cuBLASLt (CUDA builds with fp8 and cuBLASLt
// only), for fp8_linear.hpp's weight gradients: ATen's _scaled_mm writes a fresh matrix,
// which autograd then adds into the gradient buffer in a kernel of its own, where cuBLASLt's
// beta adds the products into the buffer itself. Plain C++ on this side: no LibTorch.
#pragma once

#include "cuda_fp8_cast.h"

#include <cstddef>
#include <cstdint>

namespace dshost_models {

// An fp8 matrix [rows, k] in row-major order (k contiguous), with the factor that gives its
// values back (its inverse scale, on the device).
struct Fp8Rows {
  const void* data;
  Fp8Format format;
  const float* inverse_scale;
};

// d [m, n] bf16 (row-major) += a [m, k] b [n, k]^T on `stream`: the products accumulated in
// fp32 (no fast accumulation), d's values added to them before the one rounding to bf16.
// a and b not both e5m2 (cuBLASLt has no kernel for the pair); every pointer 16-byte aligned.
// `workspace` is kFp8GemmWorkspaceBytes of device memory. Null on success, else what failed.
const char* cuda_fp8_gemm_accumulate(const Fp8Rows& a, const Fp8Rows& b, int64_t m, int64_t n,
                                     int64_t k, uint16_t* d, void* workspace, void* stream);

constexpr size_t kFp8GemmWorkspaceBytes = size_t{32} << 20;  // what Hopper's kernels may ask for

}  // namespace dshost_models
