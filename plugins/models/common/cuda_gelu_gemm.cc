#include "cuda_gelu_gemm.h"

#include "cublaslt.hpp"

#include <algorithm>

namespace dshost_models {
namespace {

using namespace cublaslt;

static_assert(kGeluGemmWorkspaceBytes == kWorkspaceBytes);

// The epilogue's vector (bias, or its gradient) and its matrix beside D (GELU's input,
// row-major [m, n]: column-major [n, m], as D), both bf16.
void set_epilogue(Status& status, const Product& product, cublasLtEpilogue_t epilogue,
                  const void* vector, const void* aux, int64_t n) {
  if (!status.ok()) return;
  set(status, product.op.value, CUBLASLT_MATMUL_DESC_EPILOGUE, epilogue);
  set(status, product.op.value, CUBLASLT_MATMUL_DESC_BIAS_POINTER, vector);
  set(status, product.op.value, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, CUDA_R_16BF);
  set(status, product.op.value, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, aux);
  set(status, product.op.value, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_DATA_TYPE, CUDA_R_16BF);
  set(status, product.op.value, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, n);
}

ProblemKey key_of(int64_t m, int64_t n, int64_t k, cublasLtEpilogue_t epilogue, const void* a,
                  const void* b, const void* d, const void* aux) {
  return {current_device(),
          m,
          n,
          k,
          static_cast<int>(CUDA_R_16BF),
          static_cast<int>(CUDA_R_16BF),
          static_cast<int>(epilogue),
          std::min(alignment(a), alignment(b)),
          std::min(alignment(d), alignment(aux))};
}

}  // namespace

// Column-major, as cuBLASLt works: pre^T [n, m] = w x^T, w's storage read transposed (TN).
const char* cuda_gelu_linear(const uint16_t* x, const uint16_t* w, const uint16_t* bias, int64_t m,
                             int64_t n, int64_t k, uint16_t* out, uint16_t* pre, void* workspace,
                             void* stream) {
  Status status;
  Product product;
  describe(status, product, CUDA_R_16BF, k, n, CUDA_R_16BF, k, m, n, m);
  if (status.ok()) {
    set(status, product.op.value, CUBLASLT_MATMUL_DESC_TRANSA, CUBLAS_OP_T);
    set(status, product.op.value, CUBLASLT_MATMUL_DESC_TRANSB, CUBLAS_OP_N);
  }
  set_epilogue(status, product, CUBLASLT_EPILOGUE_GELU_AUX_BIAS, bias, pre, n);
  const ProblemKey key = key_of(m, n, k, CUBLASLT_EPILOGUE_GELU_AUX_BIAS, x, w, out, pre);
  if (status.ok()) multiply(status, product, key, w, x, /*beta=*/0.f, out, workspace, stream);
  return status.ok() ? nullptr : status.message();
}

// d_pre^T [n, m] = w^T g^T: w's storage is column-major [n, k], g's [k, m] (NN).
const char* cuda_gelu_linear_backward(const uint16_t* g, const uint16_t* w, const uint16_t* pre,
                                      int64_t m, int64_t n, int64_t k, uint16_t* d_pre,
                                      uint16_t* bias_gradient, void* workspace, void* stream) {
  Status status;
  Product product;
  describe(status, product, CUDA_R_16BF, n, k, CUDA_R_16BF, k, m, n, m);
  if (status.ok()) {
    set(status, product.op.value, CUBLASLT_MATMUL_DESC_TRANSA, CUBLAS_OP_N);
    set(status, product.op.value, CUBLASLT_MATMUL_DESC_TRANSB, CUBLAS_OP_N);
  }
  set_epilogue(status, product, CUBLASLT_EPILOGUE_DGELU_BGRAD, bias_gradient, pre, n);
  const ProblemKey key = key_of(m, n, k, CUBLASLT_EPILOGUE_DGELU_BGRAD, g, w, d_pre, pre);
  if (status.ok()) multiply(status, product, key, w, g, /*beta=*/0.f, d_pre, workspace, stream);
  return status.ok() ? nullptr : status.message();
}

}  // namespace dshost_models
