// What dshost's cuBLASLt products share (cuda_fp8_gemm.cc, cuda_gelu_gemm.cc; CUDA builds
// with cuBLASLt only): its objects destroyed with their owners, the calling thread's handle,
// a call's first failure kept for the message, and each problem's kernel asked of the
// heuristic once. Plain C++: no LibTorch.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <tuple>

namespace dshost_models {
namespace cublaslt {

constexpr size_t kWorkspaceBytes = size_t{32} << 20;  // what Hopper's kernels may ask for

// A cuBLASLt object destroyed with its owner.
template <typename T, cublasStatus_t (*destroy)(T)>
struct Owned {
  T value = nullptr;
  Owned() = default;
  Owned(const Owned&) = delete;
  Owned& operator=(const Owned&) = delete;
  ~Owned() {
    if (value != nullptr) destroy(value);
  }
};
using OperationDescription = Owned<cublasLtMatmulDesc_t, cublasLtMatmulDescDestroy>;
using Layout = Owned<cublasLtMatrixLayout_t, cublasLtMatrixLayoutDestroy>;
using Preference = Owned<cublasLtMatmulPreference_t, cublasLtMatmulPreferenceDestroy>;

// The calling thread's handle (a handle is not shared between threads).
struct Handle : Owned<cublasLtHandle_t, cublasLtDestroy> {
  cublasStatus_t status = cublasLtCreate(&value);
};
inline Handle& thread_handle() {
  thread_local Handle handle;
  return handle;
}

// The largest power of two up to 256 that divides the address: what cuBLASLt's heuristic is
// told of each matrix, so that it picks no kernel needing more.
inline uint32_t alignment(const void* p) {
  uint32_t bytes = 256;
  while (reinterpret_cast<uintptr_t>(p) % bytes != 0) bytes /= 2;
  return bytes;
}

// The first failure among a call's cuBLASLt calls, kept for the message.
struct Status {
  cublasStatus_t code = CUBLAS_STATUS_SUCCESS;
  const char* what = "";
  void check(const char* call, cublasStatus_t result) {
    if (code == CUBLAS_STATUS_SUCCESS && result != CUBLAS_STATUS_SUCCESS) {
      code = result;
      what = call;
    }
  }
  bool ok() const { return code == CUBLAS_STATUS_SUCCESS; }
  const char* message() const {
    thread_local std::string text;
    text = std::string("cuBLASLt's ") + what + ": " + cublasLtGetStatusString(code);
    return text.c_str();
  }
};

template <typename T>
void set(Status& status, cublasLtMatmulDesc_t op, cublasLtMatmulDescAttributes_t attribute,
         const T& value) {
  status.check("cublasLtMatmulDescSetAttribute",
               cublasLtMatmulDescSetAttribute(op, attribute, &value, sizeof(value)));
}

template <typename T>
void set(Status& status, cublasLtMatmulPreference_t preference,
         cublasLtMatmulPreferenceAttributes_t attribute, const T& value) {
  status.check("cublasLtMatmulPreferenceSetAttribute",
               cublasLtMatmulPreferenceSetAttribute(preference, attribute, &value, sizeof(value)));
}

// A product's description: cuBLASLt's operation and the layouts of its A, B and D (C is laid out as
// D), made in `status` (column-major, as cuBLASLt sees them: A [rows_a, cols_a] etc.).
struct Product {
  OperationDescription op;
  Layout a, b, d;
};

inline void describe(Status& status, Product& product, cudaDataType_t a_type, uint64_t a_rows,
                     uint64_t a_cols, cudaDataType_t b_type, uint64_t b_rows, uint64_t b_cols,
                     uint64_t d_rows, uint64_t d_cols) {
  status.check("cublasLtMatmulDescCreate",
               cublasLtMatmulDescCreate(&product.op.value, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  status.check("cublasLtMatrixLayoutCreate",
               cublasLtMatrixLayoutCreate(&product.a.value, a_type, a_rows, a_cols, a_rows));
  status.check("cublasLtMatrixLayoutCreate",
               cublasLtMatrixLayoutCreate(&product.b.value, b_type, b_rows, b_cols, b_rows));
  status.check("cublasLtMatrixLayoutCreate",
               cublasLtMatrixLayoutCreate(&product.d.value, CUDA_R_16BF, d_rows, d_cols, d_rows));
}

// What a product's kernel is chosen by: device, m, n, k, A's and B's transpositions (2 op(A) +
// op(B)), A's and B's types, the epilogue, and the alignments of the inputs and of the output.
using ProblemKey =
    std::tuple<int, int64_t, int64_t, int64_t, int, int, int, int, uint32_t, uint32_t>;

// The heuristic's first choice for `product`, asked once per key (the asking costs tens of
// microseconds of host time).
inline void choose_algorithm(Status& status, cublasLtHandle_t handle, const Product& product,
                             const ProblemKey& key, cublasLtMatmulAlgo_t* algorithm) {
  static std::mutex mutex;
  static std::map<ProblemKey, cublasLtMatmulAlgo_t> chosen;
  const std::lock_guard<std::mutex> lock(mutex);
  if (const auto found = chosen.find(key); found != chosen.end()) {
    *algorithm = found->second;
    return;
  }
  Preference preference;
  status.check("cublasLtMatmulPreferenceCreate", cublasLtMatmulPreferenceCreate(&preference.value));
  if (!status.ok()) return;
  set(status, preference.value, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
      uint64_t{kWorkspaceBytes});
  const uint32_t inputs = std::get<8>(key), output = std::get<9>(key);
  set(status, preference.value, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, inputs);
  set(status, preference.value, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, inputs);
  set(status, preference.value, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, output);
  set(status, preference.value, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, output);
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  if (status.ok())
    status.check("cublasLtMatmulAlgoGetHeuristic",
                 cublasLtMatmulAlgoGetHeuristic(handle, product.op.value, product.a.value,
                                                product.b.value, product.d.value, product.d.value,
                                                preference.value, 1, &result, &found));
  if (status.ok() && found == 0)
    status.check("cublasLtMatmulAlgoGetHeuristic (no kernel for the product)",
                 CUBLAS_STATUS_NOT_SUPPORTED);
  if (!status.ok()) return;
  *algorithm = chosen[key] = result.algo;
}

// d = alpha A B + beta c with the kernel chosen for `key`, on `stream`; c is laid out as d
// and may be d.
inline void multiply(Status& status, const Product& product, const ProblemKey& key, const void* a,
                     const void* b, float beta, const void* c, void* d, void* workspace,
                     void* stream) {
  Handle& handle = thread_handle();
  status.check("cublasLtCreate", handle.status);
  cublasLtMatmulAlgo_t algorithm;
  if (status.ok()) choose_algorithm(status, handle.value, product, key, &algorithm);
  const float alpha = 1.f;
  if (status.ok())
    status.check(
        "cublasLtMatmul",
        cublasLtMatmul(handle.value, product.op.value, &alpha, a, product.a.value, b,
                       product.b.value, &beta, c, product.d.value, d, product.d.value, &algorithm,
                       workspace, kWorkspaceBytes, static_cast<cudaStream_t>(stream)));
}

// The current device, for a problem's key (-1 where there is none).
inline int current_device() {
  int device = -1;
  return cudaGetDevice(&device) == cudaSuccess ? device : -1;
}

}  // namespace cublaslt
}  // namespace dshost_models
