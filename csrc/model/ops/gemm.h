// General matrix multiply, row-major:
//   C = alpha · op(A) · op(B) + beta · C,   op(X) = X or Xᵀ (args.trans_a / args.trans_b).
//
// Gemm: every operand is a matrix; a tensor of rank > 2 is viewed as one (rows, cols) matrix
// with all leading dims folded into the rows (so x (B, T, D) is a (B·T, D) matrix):
//   op(A) (M, K)     op(B) (K, N)     C (M, N)
// GemmBatched: G independent products C[g] = alpha · op(A[g]) · op(B[g]) + beta · C[g].
//   C has rank >= 3: (G..., M, N), where G is the product of all leading dims.
//   A and B have rank >= 3 with the same G (one matrix per batch), or rank 2: the same
//   matrix for every batch (a "broadcast" operand, e.g. a token-axis weight).
//
// GemmBatchedSum: the batch reduced into one matrix (the weight gradient of a token-axis
//   linear Y[b] = W X[b] is Σ_b grad_Y[b] X[b]ᵀ):
//   C (M, N) = alpha · Σ_g op(A[g]) · op(B[g]) + beta · C,   beta must be 0 or 1.
//   A and B as for GemmBatched (at least one of rank >= 3 fixes G); C has rank 2 (f32 when A
//   and B are bf16: products are summed in fp32, never rounded to bf16 first). The sum over
//   g runs in a fixed order (CPU: fixed chunks of g, partials added in chunk order in double;
//   CUDA: a strided-batched product into scratch, then SumDim's two-pass reduction).
//
// Dtypes: A and B share one dtype; C has that dtype, or f32 when A and B are bf16.
//   CPU: f32, f64 (OpenBLAS cblas_?gemm, single-threaded, each product split over the OpenMP
//   team; f32 runs Loom's AVX2/FMA kernel instead when OpenBLAS runs a pre-AVX2 core on an
//   AVX2 CPU, or as LOOM_CPU_SGEMM=blas|loom|auto says; docs/performance.md).  CUDA: f32, f64, bf16
//   (cuBLAS, fp32 accumulation for f32 and bf16; TF32 only when args.allow_tf32).
// beta == 0 means C is not read (it may hold NaN). C must not alias A or B.
// Determinism: same inputs, same machine and thread count -> same bits (OpenBLAS and cuBLAS
// never split the K dimension across threads by default; docs/numerics.md).
#ifndef LOOM_MODEL_OPS_GEMM_H_
#define LOOM_MODEL_OPS_GEMM_H_

#include "csrc/core/device.h"
#include "csrc/core/status.h"
#include "csrc/core/tensor.h"

namespace loom::ops {

struct GemmArgs {
  bool trans_a = false;
  bool trans_b = false;
  double alpha = 1.0;
  double beta = 0.0;
  // CUDA f32 only: let cuBLAS use TF32 tensor cores (10-bit mantissa products). Off by default
  // so f32 results meet the fp32 tolerances of docs/numerics.md. Ignored on the CPU.
  bool allow_tf32 = false;
};

// InvalidArgument naming the operand unless dtypes and shapes agree as described above.
Status ValidateGemm(const GemmArgs& args, const TensorSpec& a, const TensorSpec& b,
                    const TensorSpec& c);
Status ValidateGemmBatched(const GemmArgs& args, const TensorSpec& a, const TensorSpec& b,
                           const TensorSpec& c);

void Gemm(const ExecContext& ctx, const GemmArgs& args, ConstTensorView a, ConstTensorView b,
          TensorView c);
void GemmBatched(const ExecContext& ctx, const GemmArgs& args, ConstTensorView a, ConstTensorView b,
                 TensorView c);
Status ValidateGemmBatchedSum(const GemmArgs& args, const TensorSpec& a, const TensorSpec& b,
                              const TensorSpec& c);
void GemmBatchedSum(const ExecContext& ctx, const GemmArgs& args, ConstTensorView a,
                    ConstTensorView b, TensorView c);

namespace internal {

// One (possibly batched) product in BLAS terms, row-major. Strides are in elements; a batch
// stride of 0 broadcasts that operand. Built by gemm.cc from validated views.
struct GemmPlan {
  bool trans_a = false, trans_b = false;
  int64_t m = 0, n = 0, k = 0;
  int64_t lda = 0, ldb = 0, ldc = 0;  // row strides of A, B, C as stored
  int64_t batch = 1;
  int64_t stride_a = 0, stride_b = 0, stride_c = 0;
  double alpha = 1.0, beta = 0.0;
  bool allow_tf32 = false;
};

void GemmCpu(const GemmPlan& plan, ConstTensorView a, ConstTensorView b, TensorView c);
void GemmCuda(const GemmPlan& plan, ConstTensorView a, ConstTensorView b, TensorView c,
              Stream stream);
// plan.stride_c is ignored: C (M, N) receives the sum over the batch.
void GemmBatchedSumCpu(const GemmPlan& plan, ConstTensorView a, ConstTensorView b, TensorView c);
void GemmBatchedSumCuda(const GemmPlan& plan, ConstTensorView a, ConstTensorView b, TensorView c,
                        Stream stream);

// The CPU f32 kernel (tests and benchmarks): kBlas = cblas_sgemm, kLoom = Loom's AVX2/FMA
// kernel. Returns false (and changes nothing) when kLoom is asked for on a CPU without AVX2.
// Not thread-safe against running products; set it between steps.
enum class CpuSgemmKernel { kBlas, kLoom };
bool SetCpuSgemmKernel(CpuSgemmKernel kernel);
bool CpuSgemmUsesLoomKernel();

}  // namespace internal
}  // namespace loom::ops

#endif  // LOOM_MODEL_OPS_GEMM_H_
