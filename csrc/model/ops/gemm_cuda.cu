// CUDA GEMM: cublasGemmEx / cublasGemmStridedBatchedEx.
//
// Row-major to cuBLAS (column-major): a row-major (r, c) matrix is a column-major (c, r) one,
// so C = op(A) op(B) in row-major is Cᵀ = op(B)ᵀ op(A)ᵀ in column-major: cuBLAS gets B as
// its first operand with B's transpose flag, A second with A's flag, and m = N, n = M.
#include "csrc/model/ops/gemm.h"

#include <climits>

#include "csrc/core/cuda_check.cuh"
#include "csrc/model/ops/blas_handle.cuh"
#include "csrc/model/ops/reduce.h"

namespace loom::ops::internal {
namespace {

cudaDataType_t CudaType(DType t) {
  switch (t) {
    case DType::kF32:
      return CUDA_R_32F;
    case DType::kF64:
      return CUDA_R_64F;
    case DType::kBF16:
      return CUDA_R_16BF;
    default:
      LOG(FATAL) << "Gemm: no cuBLAS type for " << DTypeName(t);
  }
  return CUDA_R_32F;
}

int AsInt(int64_t v, const char* what) {
  CHECK(v >= 0 && v <= INT_MAX) << "Gemm: " << what << " = " << v
                                << " exceeds cuBLAS's 32-bit range";
  return static_cast<int>(v);
}

}  // namespace

void GemmCuda(const GemmPlan& p, ConstTensorView a, ConstTensorView b, TensorView c,
              Stream stream) {
  if (p.m == 0 || p.n == 0 || p.batch == 0) return;
  cuda::BlasHandles& h = cuda::GetBlasHandles(stream);
  const cudaDataType_t ab_type = CudaType(a.dtype());
  const cudaDataType_t c_type = CudaType(c.dtype());
  const bool f64 = a.dtype() == DType::kF64;
  const cublasComputeType_t compute =
      f64 ? CUBLAS_COMPUTE_64F
          : (p.allow_tf32 && a.dtype() == DType::kF32 ? CUBLAS_COMPUTE_32F_FAST_TF32
                                                      : CUBLAS_COMPUTE_32F);
  const float alpha_f = static_cast<float>(p.alpha), beta_f = static_cast<float>(p.beta);
  const double alpha_d = p.alpha, beta_d = p.beta;
  const void* alpha = f64 ? static_cast<const void*>(&alpha_d) : &alpha_f;
  const void* beta = f64 ? static_cast<const void*>(&beta_d) : &beta_f;

  const cublasOperation_t op_b = p.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_a = p.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  const int m = AsInt(p.n, "N"), n = AsInt(p.m, "M"), k = AsInt(p.k, "K");
  // cuBLAS requires leading dimensions >= 1 even for empty operands.
  const int ldb = AsInt(p.ldb > 0 ? p.ldb : 1, "ldb"), lda = AsInt(p.lda > 0 ? p.lda : 1, "lda");
  const int ldc = AsInt(p.ldc, "ldc");
  if (p.batch == 1) {
    LOOM_CUBLAS_CHECK(cublasGemmEx(h.blas, op_b, op_a, m, n, k, alpha, b.raw(), ab_type, ldb,
                                   a.raw(), ab_type, lda, beta, c.raw(), c_type, ldc, compute,
                                   CUBLAS_GEMM_DEFAULT));
  } else {
    LOOM_CUBLAS_CHECK(cublasGemmStridedBatchedEx(
        h.blas, op_b, op_a, m, n, k, alpha, b.raw(), ab_type, ldb, p.stride_b, a.raw(), ab_type,
        lda, p.stride_a, beta, c.raw(), c_type, ldc, p.stride_c, AsInt(p.batch, "batch"), compute,
        CUBLAS_GEMM_DEFAULT));
  }
}

// Products into scratch (slot 1: SumDim's own scratch is slot 0), then a deterministic
// two-pass sum over the batch.
void GemmBatchedSumCuda(const GemmPlan& p, ConstTensorView a, ConstTensorView b, TensorView c,
                        Stream stream) {
  const int64_t mn = p.m * p.n;
  if (mn == 0) return;
  if (p.batch == 0) {  // an empty sum: C = beta · C
    if (p.beta == 0.0) {
      LOOM_CUDA_CHECK(
          cudaMemsetAsync(c.raw(), 0, static_cast<size_t>(c.nbytes()), AsCudaStream(stream)));
    }
    return;
  }
  const size_t esize = static_cast<size_t>(DTypeSize(c.dtype()));
  void* products = cuda::Scratch(stream, esize * static_cast<size_t>(p.batch * mn), /*slot=*/1);
  const TensorSpec spec{Shape{p.batch, p.m, p.n}, c.dtype()};
  TensorView all(products, spec, c.device());
  GemmPlan q = p;
  q.beta = 0.0;
  q.ldc = p.n;
  q.stride_c = mn;
  GemmCuda(q, a, b, all, stream);
  SumDimCuda(1, p.batch, mn, /*accumulate=*/p.beta != 0.0, all, c, stream);
}

}  // namespace loom::ops::internal
