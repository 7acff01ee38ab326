#include "cuda_gelu_gemm.h"

#include "cublaslt.hpp"

#include <algorithm>

namespace dshost_models {
namespace {

using namespace cublaslt;

static_assert(kGeluGemmWorkspaceBytes == kWorkspaceBytes);

// The epilogue's vector (bias, or its gradient; none where null) and its matrix beside D (GELU's
// input, row-major [m, n]: column-major [n, m], as D; none where null), both bf16.
void set_epilogue(Status& status, const Product& product, cublasLtEpilogue_t epilogue,
                  const void* vector, const void* aux, int64_t n) {
  if (!status.ok()) return;
  set(status, product.op.value, CUBLASLT_MATMUL_DESC_EPILOGUE, epilogue);
  if (vector != nullptr) {
    set(status, product.op.value, CUBLASLT_MATMUL_DESC_BIAS_POINTER, vector);
    set(status, product.op.value, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, CUDA_R_16BF);
  }
  if (aux == nullptr) return;
  set(status, product.op.value, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, aux);
  set(status, product.op.value, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_DATA_TYPE, CUDA_R_16BF);
  set(status, product.op.value, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, n);
}

// d [n, m] = op(A) op(B) (+ c where not null) (column-major, as cuBLASLt works: d is row-major
// [m, n], c too) with `epilogue`, its vector and aux matrix: A bf16 [n, k] as op(A), stored
// transposed where a_op says so, B bf16 [k, m] as op(B), likewise.
const char* bf16_product(cublasOperation_t a_op, cublasOperation_t b_op, const void* a,
                         const void* b, int64_t m, int64_t n, int64_t k,
                         cublasLtEpilogue_t epilogue, const void* vector, const void* aux,
                         const void* c, void* d, void* workspace, void* stream) {
  Status status;
  Product product;
  const bool a_transposed = a_op == CUBLAS_OP_T, b_transposed = b_op == CUBLAS_OP_T;
  describe(status, product, CUDA_R_16BF, a_transposed ? k : n, a_transposed ? n : k, CUDA_R_16BF,
           b_transposed ? m : k, b_transposed ? k : m, n, m);
  if (status.ok()) {
    set(status, product.op.value, CUBLASLT_MATMUL_DESC_TRANSA, a_op);
    set(status, product.op.value, CUBLASLT_MATMUL_DESC_TRANSB, b_op);
  }
  set_epilogue(status, product, epilogue, vector, aux, n);
  const ProblemKey key = {current_device(),
                          m,
                          n,
                          k,
                          static_cast<int>(a_op) * 2 + static_cast<int>(b_op),
                          static_cast<int>(CUDA_R_16BF),
                          static_cast<int>(CUDA_R_16BF),
                          static_cast<int>(epilogue),
                          std::min(alignment(a), alignment(b)),
                          std::min({alignment(d), alignment(aux), alignment(c)})};
  if (status.ok())
    multiply(status, product, key, a, b, /*beta=*/c != nullptr ? 1.f : 0.f, c != nullptr ? c : d, d,
             workspace, stream);
  return status.ok() ? nullptr : status.message();
}

}  // namespace

// pre^T [n, m] = w x^T, w's storage [n, k] read transposed (TN).
const char* cuda_gelu_linear(const uint16_t* x, const uint16_t* w, const uint16_t* bias, int64_t m,
                             int64_t n, int64_t k, uint16_t* out, uint16_t* pre, void* workspace,
                             void* stream) {
  return bf16_product(CUBLAS_OP_T, CUBLAS_OP_N, w, x, m, n, k, CUBLASLT_EPILOGUE_GELU_AUX_BIAS,
                      bias, pre,
                      /*c=*/nullptr, out, workspace, stream);
}

// out^T [n, m] = w x^T + bias + residual^T, as cuda_gelu_linear's product.
const char* cuda_residual_linear(const uint16_t* x, const uint16_t* w, const uint16_t* bias,
                                 const uint16_t* residual, int64_t m, int64_t n, int64_t k,
                                 uint16_t* out, void* workspace, void* stream) {
  return bf16_product(CUBLAS_OP_T, CUBLAS_OP_N, w, x, m, n, k, CUBLASLT_EPILOGUE_BIAS, bias,
                      /*aux=*/nullptr, residual, out, workspace, stream);
}

// d_pre^T [n, m] = w^T g^T: w's storage is column-major [n, k], g's [k, m] (NN).
const char* cuda_gelu_linear_backward(const uint16_t* g, const uint16_t* w, const uint16_t* pre,
                                      int64_t m, int64_t n, int64_t k, uint16_t* d_pre,
                                      uint16_t* bias_gradient, void* workspace, void* stream) {
  return bf16_product(
      CUBLAS_OP_N, CUBLAS_OP_N, w, g, m, n, k,
      bias_gradient != nullptr ? CUBLASLT_EPILOGUE_DGELU_BGRAD : CUBLASLT_EPILOGUE_DGELU,
      bias_gradient, pre, /*c=*/nullptr, d_pre, workspace, stream);
}

// w_grad^T [k, n] (+)= x^T g: x's storage is column-major [k, m] (N), g's [n, m], read
// transposed (T); the product's depth is m, the rows, over which BGRADB sums g for the bias.
const char* cuda_weight_gradient(const uint16_t* g, const uint16_t* x, int64_t m, int64_t n,
                                 int64_t k, bool accumulate, uint16_t* w_grad,
                                 uint16_t* bias_gradient, void* workspace, void* stream) {
  return bf16_product(
      CUBLAS_OP_N, CUBLAS_OP_T, x, g, /*m=*/n, /*n=*/k, /*k=*/m,
      bias_gradient != nullptr ? CUBLASLT_EPILOGUE_BGRADB : CUBLASLT_EPILOGUE_DEFAULT,
      bias_gradient, /*aux=*/nullptr, accumulate ? w_grad : nullptr, w_grad, workspace, stream);
}

}  // namespace dshost_models
