#include "cuda_fp8_gemm.h"

#include "cublaslt.hpp"

#include <algorithm>

namespace dshost_models {
namespace {

static_assert(kFp8GemmWorkspaceBytes == cublaslt::kWorkspaceBytes);

cudaDataType_t cuda_type(Fp8Format format) {
  return format == Fp8Format::e4m3 ? CUDA_R_8F_E4M3 : CUDA_R_8F_E5M2;
}

}  // namespace

// cuBLASLt works in column-major order: row-major d [m, n] is column-major d^T [n, m] =
// b a^T, where b [n, k] read transposed from its k-contiguous storage is cuBLASLt's A and
// a^T, a's own storage as column-major [k, m], its B (the layout its fp8 kernels take: TN).
const char* cuda_fp8_gemm_accumulate(const Fp8Rows& a, const Fp8Rows& b, int64_t m, int64_t n,
                                     int64_t k, uint16_t* d, void* workspace, void* stream) {
  using namespace cublaslt;
  Status status;
  Product product;
  describe(status, product, cuda_type(b.format), k, n, cuda_type(a.format), k, m, n, m);
  if (status.ok()) {
    set(status, product.op.value, CUBLASLT_MATMUL_DESC_TRANSA, CUBLAS_OP_T);
    set(status, product.op.value, CUBLASLT_MATMUL_DESC_TRANSB, CUBLAS_OP_N);
    set(status, product.op.value, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, b.inverse_scale);
    set(status, product.op.value, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, a.inverse_scale);
    set(status, product.op.value, CUBLASLT_MATMUL_DESC_FAST_ACCUM, int8_t{0});
  }
  const ProblemKey key{current_device(),
                       m,
                       n,
                       k,
                       static_cast<int>(CUBLAS_OP_T) * 2 + static_cast<int>(CUBLAS_OP_N),
                       static_cast<int>(cuda_type(a.format)),
                       static_cast<int>(cuda_type(b.format)),
                       static_cast<int>(CUBLASLT_EPILOGUE_DEFAULT),
                       std::min(alignment(a.data), alignment(b.data)),
                       alignment(d)};
  if (status.ok())
    multiply(status, product, key, b.data, a.data, /*beta=*/1.f, d, d, workspace, stream);
  return status.ok() ? nullptr : status.message();
}

}  // namespace dshost_models
