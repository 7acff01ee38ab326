#include "cuda_fp8_gemm.h"

#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <string>
#include <tuple>

namespace dshost_models {
namespace {

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

cudaDataType_t cuda_type(Fp8Format format) {
  return format == Fp8Format::e4m3 ? CUDA_R_8F_E4M3 : CUDA_R_8F_E5M2;
}

// The largest power of two up to 256 that divides the address: what cuBLASLt's heuristic is
// told of each matrix, so that it picks no kernel needing more.
uint32_t alignment(const void* p) {
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

// The product's description: cuBLASLt's operation and the layouts of its A, B and D (C is D).
struct Product {
  OperationDescription op;
  Layout a, b, d;
};

// The heuristic's first choice for `product`, asked once per device, shape, formats and
// alignments (the asking costs tens of microseconds of host time).
using ProblemKey = std::tuple<int, int64_t, int64_t, int64_t, int, int, uint32_t, uint32_t>;

void choose_algorithm(Status& status, cublasLtHandle_t handle, const Product& product,
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
      uint64_t{kFp8GemmWorkspaceBytes});
  const uint32_t inputs = std::get<6>(key), output = std::get<7>(key);
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
    status.check("cublasLtMatmulAlgoGetHeuristic (no fp8 kernel for the product)",
                 CUBLAS_STATUS_NOT_SUPPORTED);
  if (!status.ok()) return;
  *algorithm = chosen[key] = result.algo;
}

}  // namespace

// cuBLASLt works in column-major order: row-major d [m, n] is column-major d^T [n, m] =
// b a^T, where b [n, k] read transposed from its k-contiguous storage is cuBLASLt's A and
// a^T, a's own storage as column-major [k, m], its B (the layout its fp8 kernels take: TN).
const char* cuda_fp8_gemm_accumulate(const Fp8Rows& a, const Fp8Rows& b, int64_t m, int64_t n,
                                     int64_t k, uint16_t* d, void* workspace, void* stream) {
  thread_local Handle handle;
  Status status;
  status.check("cublasLtCreate", handle.status);
  Product product;
  if (status.ok()) {
    status.check("cublasLtMatmulDescCreate",
                 cublasLtMatmulDescCreate(&product.op.value, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    status.check("cublasLtMatrixLayoutCreate",
                 cublasLtMatrixLayoutCreate(&product.a.value, cuda_type(b.format), k, n, k));
    status.check("cublasLtMatrixLayoutCreate",
                 cublasLtMatrixLayoutCreate(&product.b.value, cuda_type(a.format), k, m, k));
    status.check("cublasLtMatrixLayoutCreate",
                 cublasLtMatrixLayoutCreate(&product.d.value, CUDA_R_16BF, n, m, n));
  }
  if (status.ok()) {
    set(status, product.op.value, CUBLASLT_MATMUL_DESC_TRANSA, CUBLAS_OP_T);
    set(status, product.op.value, CUBLASLT_MATMUL_DESC_TRANSB, CUBLAS_OP_N);
    set(status, product.op.value, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, b.inverse_scale);
    set(status, product.op.value, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, a.inverse_scale);
    set(status, product.op.value, CUBLASLT_MATMUL_DESC_FAST_ACCUM, int8_t{0});
  }
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess) return "no CUDA device for cuBLASLt's fp8 product";
  const ProblemKey key{device,
                       m,
                       n,
                       k,
                       static_cast<int>(a.format),
                       static_cast<int>(b.format),
                       std::min(alignment(a.data), alignment(b.data)),
                       alignment(d)};
  cublasLtMatmulAlgo_t algorithm;
  if (status.ok()) choose_algorithm(status, handle.value, product, key, &algorithm);
  const float one = 1.f;  // alpha, and beta: d's values added
  if (status.ok())
    status.check(
        "cublasLtMatmul",
        cublasLtMatmul(handle.value, product.op.value, &one, b.data, product.a.value, a.data,
                       product.b.value, &one, d, product.d.value, d, product.d.value, &algorithm,
                       workspace, kFp8GemmWorkspaceBytes, static_cast<cudaStream_t>(stream)));
  return status.ok() ? nullptr : status.message();
}

}  // namespace dshost_models
