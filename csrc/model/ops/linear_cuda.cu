// CUDA Linear forward.
//
// With a bias, f32/bf16 go through cuBLASLt with the BIAS (or RELU_BIAS) epilogue, so the bias
// and a ReLU cost no extra pass. Row-major y (R, N) = x (R, K) · Wᵀ is, column-major,
// yᵀ (N, R) = op(W_cm) · x_cm with W_cm the (K, N) column-major view of W (transposed) and
// x_cm the (K, R) view of x; the epilogue's bias runs along D's rows (N), as needed.
// cuBLASLt's heuristic result per shape/alignment is cached. When cuBLASLt has no algorithm
// (or for f64), the bias is broadcast into the output and cuBLAS adds the product (beta = 1).
// Other activations run as one element-wise kernel after the product.
#include "csrc/model/ops/linear.h"

#include <cstdint>
#include <map>
#include <mutex>
#include <tuple>

#include "csrc/model/ops/activation.h"
#include "csrc/model/ops/blas_handle.cuh"
#include "csrc/model/ops/cuda_util.cuh"
#include "csrc/model/ops/gemm.h"
#include "csrc/model/ops/op_util.h"

namespace loom::ops::internal {
namespace {

template <typename T>
__global__ void BroadcastRowsKernel(const T* bias, T* out, int64_t total, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    out[i] = bias[i % n];
  }
}

uint32_t Alignment(const void* p) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  uint32_t align = 256;
  while (align > 1 && a % align != 0) align /= 2;
  return align;
}

// Everything cublasLtMatmulAlgoGetHeuristic's answer depends on.
using LtKey = std::tuple<int /*device*/, int /*dtype*/, int64_t /*N*/, int64_t /*R*/, int64_t /*K*/,
                         int /*epilogue*/, uint32_t, uint32_t, uint32_t,
                         uint32_t /*alignments of W, x, D, bias*/>;
struct LtAlgo {
  bool found = false;
  cublasLtMatmulAlgo_t algo;
};

std::mutex& LtMutex() {
  static std::mutex* mu = new std::mutex();
  return *mu;
}
std::map<LtKey, LtAlgo>& LtCache() {
  static auto* cache = new std::map<LtKey, LtAlgo>();
  return *cache;
}

// RAII for the cuBLASLt descriptors of one call.
struct LtDescs {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  cublasLtMatmulPreference_t pref = nullptr;
  ~LtDescs() {
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    if (d) cublasLtMatrixLayoutDestroy(d);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (op) cublasLtMatmulDescDestroy(op);
  }
};

// out (R, N) = x Wᵀ + bias, then ReLU when `relu`. Returns false (nothing enqueued) when
// cuBLASLt offers no algorithm.
bool TryLtBiasEpilogue(bool relu, ConstTensorView x, ConstTensorView weight, ConstTensorView bias,
                       TensorView out, Stream stream) {
  const cudaDataType_t type = x.dtype() == DType::kF32 ? CUDA_R_32F : CUDA_R_16BF;
  const int64_t rows = MatrixRows(x.shape()), k = MatrixCols(x.shape()), n = weight.dim(0);
  cuda::BlasHandles& h = cuda::GetBlasHandles(stream);
  const cublasLtEpilogue_t epilogue = relu ? CUBLASLT_EPILOGUE_RELU_BIAS : CUBLASLT_EPILOGUE_BIAS;
  const uint32_t align_w = Alignment(weight.raw()), align_x = Alignment(x.raw()),
                 align_d = Alignment(out.raw()), align_bias = Alignment(bias.raw());
  if (align_bias < 16) return false;

  LtDescs descs;
  const cublasOperation_t trans_w = CUBLAS_OP_T, trans_x = CUBLAS_OP_N;
  const void* bias_ptr = bias.raw();
  LOOM_CUBLAS_CHECK(cublasLtMatmulDescCreate(&descs.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  LOOM_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(descs.op, CUBLASLT_MATMUL_DESC_TRANSA, &trans_w,
                                                   sizeof(trans_w)));
  LOOM_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(descs.op, CUBLASLT_MATMUL_DESC_TRANSB, &trans_x,
                                                   sizeof(trans_x)));
  LOOM_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(descs.op, CUBLASLT_MATMUL_DESC_EPILOGUE,
                                                   &epilogue, sizeof(epilogue)));
  LOOM_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(descs.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                                                   &bias_ptr, sizeof(bias_ptr)));
  LOOM_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&descs.a, type, k, n, k));     // W as (K, N)
  LOOM_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&descs.b, type, k, rows, k));  // x as (K, R)
  LOOM_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&descs.d, type, n, rows, n));  // y as (N, R)

  const LtKey key(h.device, static_cast<int>(x.dtype()), n, rows, k, static_cast<int>(epilogue),
                  align_w, align_x, align_d, align_bias);
  LtAlgo entry;
  {
    std::lock_guard<std::mutex> lock(LtMutex());
    auto it = LtCache().find(key);
    if (it != LtCache().end()) {
      entry = it->second;
    } else {
      LOOM_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&descs.pref));
      const uint64_t workspace = h.workspace_bytes;
      LOOM_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
          descs.pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace, sizeof(workspace)));
      LOOM_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
          descs.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &align_w, sizeof(align_w)));
      LOOM_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
          descs.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &align_x, sizeof(align_x)));
      LOOM_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
          descs.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &align_d, sizeof(align_d)));
      LOOM_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
          descs.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &align_d, sizeof(align_d)));
      cublasLtMatmulHeuristicResult_t result;
      int returned = 0;
      const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(
          h.lt, descs.op, descs.a, descs.b, descs.d, descs.d, descs.pref, 1, &result, &returned);
      entry.found = st == CUBLAS_STATUS_SUCCESS && returned > 0;
      if (entry.found) entry.algo = result.algo;
      LtCache()[key] = entry;
    }
  }
  if (!entry.found) return false;
  const float alpha = 1.0f, beta = 0.0f;
  const cublasStatus_t st = cublasLtMatmul(
      h.lt, descs.op, &alpha, weight.raw(), descs.a, x.raw(), descs.b, &beta, out.raw(), descs.d,
      out.raw(), descs.d, &entry.algo, h.workspace, h.workspace_bytes, AsCudaStream(stream));
  if (st != CUBLAS_STATUS_SUCCESS) {
    // An algorithm the heuristic offered but cannot run here: remember, and use the fallback.
    LOG(WARNING) << "cuBLASLt bias epilogue failed (" << cublasGetStatusString(st)
                 << ") for N=" << n << " R=" << rows << " K=" << k
                 << "; using cuBLAS + a bias kernel for this shape";
    std::lock_guard<std::mutex> lock(LtMutex());
    LtCache()[key].found = false;
    return false;
  }
  return true;
}

}  // namespace

void LinearForwardCuda(const LinearArgs& args, ConstTensorView x, ConstTensorView weight,
                       ConstTensorView bias, TensorView y, TensorView pre, Stream stream) {
  const int64_t rows = MatrixRows(x.shape()), k = MatrixCols(x.shape()), n = weight.dim(0);
  if (rows == 0 || n == 0) return;
  TensorView z = pre.empty() ? y : pre;
  const bool fuse_relu = args.activation == Activation::kRelu && pre.empty();
  bool done = false;
  bool relu_done = false;
  if (!bias.empty() && k > 0 && (x.dtype() == DType::kF32 || x.dtype() == DType::kBF16)) {
    done = TryLtBiasEpilogue(fuse_relu, x, weight, bias, z, stream);
    relu_done = done && fuse_relu;
  }
  if (!done) {
    GemmPlan plan;
    plan.trans_b = true;  // x (R, K) · Wᵀ (K, N)
    plan.m = rows;
    plan.n = n;
    plan.k = k;
    plan.lda = k;
    plan.ldb = k;
    plan.ldc = n;
    plan.beta = bias.empty() ? 0.0 : 1.0;
    if (!bias.empty()) {
      const int64_t total = rows * n;
      LOOM_OPS_CUDA_SWITCH("LinearForward", x.dtype(), T, {
        BroadcastRowsKernel<T><<<cuda::GridFor(total), cuda::kBlock, 0, AsCudaStream(stream)>>>(
            bias.data<T>(), z.data<T>(), total, n);
      });
      LOOM_CUDA_CHECK_LAUNCH();
    }
    GemmCuda(plan, x, weight, z, stream);
  }
  if (args.activation != Activation::kIdentity && !relu_done) {
    ActivationForwardCuda(args.activation, z, y, stream);
  } else if (z.raw() != y.raw()) {
    LOOM_CUDA_CHECK(cudaMemcpyAsync(y.raw(), z.raw(), static_cast<size_t>(y.nbytes()),
                                    cudaMemcpyDeviceToDevice, AsCudaStream(stream)));
  }
}

}  // namespace loom::ops::internal
