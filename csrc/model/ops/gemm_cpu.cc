// CPU GEMM: OpenBLAS. Batched products either fold into one call (broadcast B, plain A),
// run one multithreaded call per batch (large matrices), or spread small products over
// OpenMP threads, one single-threaded BLAS call each.
#include "csrc/model/ops/gemm.h"

#include <algorithm>

#include <cblas.h>

#include "csrc/model/ops/cpu_util.h"
#include "csrc/model/ops/op_util.h"

namespace loom::ops::internal {
namespace {

// OpenBLAS runs a product on the calling thread when m·n·k is at most this
// (SMP_THRESHOLD_MIN · GEMM_MULTITHREAD_THRESHOLD = 65536 · 4 in interface/gemm.c), so
// products this small may be issued from several OpenMP threads without oversubscribing.
constexpr double kBlasSingleThreadFlops = 65536.0 * 4.0;

void CblasGemm(bool ta, bool tb, blasint m, blasint n, blasint k, float alpha, const float* a,
               blasint lda, const float* b, blasint ldb, float beta, float* c, blasint ldc) {
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n,
              k, alpha, a, lda, b, ldb, beta, c, ldc);
}
void CblasGemm(bool ta, bool tb, blasint m, blasint n, blasint k, double alpha, const double* a,
               blasint lda, const double* b, blasint ldb, double beta, double* c, blasint ldc) {
  cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n,
              k, alpha, a, lda, b, ldb, beta, c, ldc);
}

template <typename T>
void ScaleRows(T* c, int64_t m, int64_t n, int64_t ldc, T beta) {
  for (int64_t i = 0; i < m; ++i) {
    T* row = c + i * ldc;
    if (beta == T(0)) {
      std::fill(row, row + n, T(0));  // beta == 0: C is not read (NaN must not survive)
    } else {
      for (int64_t j = 0; j < n; ++j) row[j] *= beta;
    }
  }
}

template <typename T>
void One(const GemmPlan& p, const T* a, const T* b, T* c) {
  if (p.m == 0 || p.n == 0) return;
  if (p.k == 0) {  // BLAS rejects lda = 0; the product is empty, C = beta · C.
    ScaleRows(c, p.m, p.n, p.ldc, static_cast<T>(p.beta));
    return;
  }
  CblasGemm(p.trans_a, p.trans_b, static_cast<blasint>(p.m), static_cast<blasint>(p.n),
            static_cast<blasint>(p.k), static_cast<T>(p.alpha), a, static_cast<blasint>(p.lda), b,
            static_cast<blasint>(p.ldb), static_cast<T>(p.beta), c, static_cast<blasint>(p.ldc));
}

template <typename T>
void Run(const GemmPlan& p, const T* a, const T* b, T* c) {
  if (p.batch == 1) {
    One(p, a, b, c);
    return;
  }
  // C[g] = A[g] · op(B) with one B and plain, contiguous A: one product of G·M rows.
  if (p.stride_b == 0 && !p.trans_a && p.stride_a == p.m * p.lda && p.stride_c == p.m * p.ldc) {
    GemmPlan folded = p;
    folded.m = p.m * p.batch;
    folded.batch = 1;
    One(folded, a, b, c);
    return;
  }
  const double flops = static_cast<double>(p.m) * static_cast<double>(p.n) * p.k;
  if (flops <= kBlasSingleThreadFlops) {
#pragma omp parallel for schedule(static) if (p.batch > 1 && flops * p.batch > 1e5)
    for (int64_t g = 0; g < p.batch; ++g) {
      One(p, a + g * p.stride_a, b + g * p.stride_b, c + g * p.stride_c);
    }
  } else {
    for (int64_t g = 0; g < p.batch; ++g) {
      One(p, a + g * p.stride_a, b + g * p.stride_b, c + g * p.stride_c);
    }
  }
}

// C = alpha · Σ_g op(A[g]) op(B[g]) + beta · C. The batch is cut into chunks fixed by G (and
// bounded so their partial products fit kMaxPartialBytes); each chunk sums its products with
// BLAS (beta = 1 after its first) into its own partial, and the partials are added in chunk
// order in double. Chunks run in parallel when each product is small enough for OpenBLAS to
// stay on the calling thread.
constexpr int64_t kMaxPartialBytes = int64_t{32} << 20;

template <typename T>
void RunSum(const GemmPlan& p, const T* a, const T* b, T* c) {
  const int64_t mn = p.m * p.n;
  if (mn == 0) return;
  const int64_t by_memory = std::max<int64_t>(1, kMaxPartialBytes / (mn * sizeof(T)));
  const int64_t chunks = std::min(cpu::NumRowChunks(p.batch), by_memory);
  // Partials (T) and the final double sums share one scratch block.
  const int64_t part_doubles = (chunks * mn * static_cast<int64_t>(sizeof(T)) + 7) / 8;
  double* scratch = cpu::ScratchDoubles(static_cast<size_t>(part_doubles + mn));
  T* part = reinterpret_cast<T*>(scratch);
  double* sum = scratch + part_doubles;
  GemmPlan q = p;
  q.batch = 1;
  q.alpha = 1.0;
  q.ldc = p.n;
  const double flops = static_cast<double>(p.m) * static_cast<double>(p.n) * p.k;
#pragma omp parallel for schedule(static) if (chunks > 1 && flops <= kBlasSingleThreadFlops)
  for (int64_t ch = 0; ch < chunks; ++ch) {
    T* out = part + ch * mn;
    const int64_t g0 = cpu::ChunkBegin(p.batch, chunks, ch);
    const int64_t g1 = cpu::ChunkBegin(p.batch, chunks, ch + 1);
    GemmPlan local = q;
    local.beta = 0.0;
    if (g0 == g1) std::fill(out, out + mn, T(0));
    for (int64_t g = g0; g < g1; ++g) {
      One(local, a + g * p.stride_a, b + g * p.stride_b, out);
      local.beta = 1.0;
    }
  }
  std::fill(sum, sum + mn, 0.0);
  for (int64_t ch = 0; ch < chunks; ++ch) {
    const T* in = part + ch * mn;
#pragma omp simd
    for (int64_t i = 0; i < mn; ++i) sum[i] += static_cast<double>(in[i]);
  }
  for (int64_t i = 0; i < p.m; ++i) {
    T* row = c + i * p.ldc;
    for (int64_t j = 0; j < p.n; ++j) {
      const double v = p.alpha * sum[i * p.n + j];
      row[j] = static_cast<T>(p.beta == 0.0 ? v : static_cast<double>(row[j]) + v);
    }
  }
}

}  // namespace

void GemmBatchedSumCpu(const GemmPlan& plan, ConstTensorView a, ConstTensorView b, TensorView c) {
  CHECK(c.dtype() == a.dtype()) << "GemmBatchedSum: the CPU backend needs c in the dtype of a";
  LOOM_OPS_CPU_SWITCH("GemmBatchedSum", a.dtype(), T,
                      RunSum<T>(plan, a.data<T>(), b.data<T>(), c.data<T>()));
}

void GemmCpu(const GemmPlan& plan, ConstTensorView a, ConstTensorView b, TensorView c) {
  constexpr int64_t kMaxBlasInt = (int64_t{1} << 31) - 1;
  CHECK(plan.m <= kMaxBlasInt && plan.n <= kMaxBlasInt && plan.k <= kMaxBlasInt &&
        plan.m * plan.batch <= kMaxBlasInt)
      << "Gemm: dimensions exceed the BLAS integer range";
  CHECK(c.dtype() == a.dtype()) << "Gemm: the CPU backend needs c in the dtype of a";
  LOOM_OPS_CPU_SWITCH("Gemm", a.dtype(), T, Run<T>(plan, a.data<T>(), b.data<T>(), c.data<T>()));
}

}  // namespace loom::ops::internal
