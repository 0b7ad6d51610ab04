// CPU GEMM: OpenBLAS, with one level of parallelism. Loom's ops parallelize with OpenMP;
// letting OpenBLAS's own pthreads run beside the OpenMP team oversubscribes the cores: after
// every parallel region the OpenMP workers spin-wait for the next one while OpenBLAS's
// threads need the same cores (profiled on the small model_bench config: ~40% of all cycles
// in libgomp's spin loop and sched_yield). So OpenBLAS is set to one thread once, and every
// product is split over the OpenMP team here: a batch over its products, a single product over
// row (or column) blocks of C, each block one single-threaded BLAS call on its own thread.
// Each element of C is still one BLAS dot product over the whole K (K is never split), so
// results depend only on the inputs and the thread count.
//
// f32 products may instead run Loom's own AVX2/FMA kernel (below; docs/performance.md): when
// OpenBLAS's DYNAMIC_ARCH runtime picks a core without AVX2 on a CPU that has it (it reports
// "Prescott" on this project's Xeon VMs, whose CPUID it does not recognize), its SSE3 kernel
// runs at a quarter of what the hardware can do. LOOM_CPU_SGEMM=blas|loom|auto overrides the
// choice (auto: the default).
#include "csrc/model/ops/gemm.h"

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <type_traits>

#include <cblas.h>
#include <glog/logging.h>

#include "csrc/model/ops/cpu_util.h"
#include "csrc/model/ops/op_util.h"

#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define LOOM_HAVE_AVX2_SGEMM 1
#else
#define LOOM_HAVE_AVX2_SGEMM 0
#endif

namespace loom::ops::internal {
namespace {

// Products of at most this many multiply-adds run whole on the calling thread (an OpenMP
// fork/join costs a few microseconds, more than splitting them saves).
constexpr double kSplitFlops = 65536.0 * 4.0;
// Smallest block of C rows (columns) one thread receives when a product is split.
constexpr int64_t kMinSplitRows = 16;

// OpenBLAS threads off, once per process (see the file comment). Other BLAS libraries are
// used as they come.
void UseSingleThreadedBlas() {
#ifdef OPENBLAS_VERSION
  static std::once_flag once;
  std::call_once(once, [] { openblas_set_num_threads(1); });
#endif
}

int TeamSize() {
#ifdef _OPENMP
  return omp_in_parallel() ? 1 : omp_get_max_threads();
#else
  return 1;
#endif
}

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

// ---- Loom's f32 kernel (x86-64 AVX2 + FMA) ----
// C = alpha · op(A) · op(B) + beta · C in the packed form of BLIS/GotoBLAS: C is scaled by
// beta once, then for each block of kKc steps of K, op(B) is packed into panels of kNr
// columns and a 6x16 register tile accumulates 6 rows of op(A) (read in place: either layout
// is a broadcast per (row, k), so A is not packed) times a B panel with FMAs, and adds alpha
// times it into C. Every element of C sees the same sequence of operations
// wherever its tile lies, so results do not depend on how a product is split over threads.
// The B panels live in this thread's cpu::ScratchSlot::kGemmPack scratch (allocated on the
// first step; its own slot because GemmBatchedSum holds kDoubles while it runs products).
// Panels are kNr floats = 64 bytes wide, so every panel row starts on a cache line of that
// kScratchAlignment-aligned buffer (the kernel's loads are unaligned loads, so this is for
// speed, not correctness).
constexpr int kMr = 6;
constexpr int kNr = 16;
constexpr int64_t kKc = 256;
constexpr int64_t kMc = 96;   // rows of op(A) per pass over the packed B block
constexpr int64_t kNc = 512;  // multiple of kNr: B block kKc x kNc = 512 KiB

// op(B)[p0 : p0+kc, j0 : j0+nc] -> panels of kNr columns, k-major, zero-padded columns.
void PackB(const GemmPlan& p, const float* b, int64_t p0, int64_t kc, int64_t j0, int64_t nc,
           float* out) {
  for (int64_t jp = 0; jp < nc; jp += kNr) {
    const int cols = static_cast<int>(std::min<int64_t>(kNr, nc - jp));
    float* panel = out + jp * kc;
    if (!p.trans_b) {
      for (int64_t k = 0; k < kc; ++k) {
        const float* src = b + (p0 + k) * p.ldb + j0 + jp;
        float* dst = panel + k * kNr;
        int c = 0;
        for (; c < cols; ++c) dst[c] = src[c];
        for (; c < kNr; ++c) dst[c] = 0.0f;
      }
    } else {
      for (int c = 0; c < kNr; ++c) {
        if (c >= cols) {
          for (int64_t k = 0; k < kc; ++k) panel[k * kNr + c] = 0.0f;
          continue;
        }
        const float* src = b + (j0 + jp + c) * p.ldb + p0;
        for (int64_t k = 0; k < kc; ++k) panel[k * kNr + c] = src[k];
      }
    }
  }
}

#if LOOM_HAVE_AVX2_SGEMM
// C[0:rows, 0:cols] += alpha · Σ_k op(A)[r, k] · (B panel)[k, :] over kc steps, with
// op(A)[r, k] at a[r · row_step + k · k_step] (rows >= `rows` repeat the last real row).
__attribute__((target("avx2,fma"))) void Tile6x16(int64_t kc, const float* a, int64_t row_step,
                                                  int64_t k_step, const float* bp, float alpha,
                                                  float* c, int64_t ldc, int rows, int cols) {
  // Twelve named accumulators (an array of them gets stored to the stack every step by GCC).
  const float* a0 = a;
  const float* a1 = a + std::min(1, rows - 1) * row_step;
  const float* a2 = a + std::min(2, rows - 1) * row_step;
  const float* a3 = a + std::min(3, rows - 1) * row_step;
  const float* a4 = a + std::min(4, rows - 1) * row_step;
  const float* a5 = a + std::min(5, rows - 1) * row_step;
  __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
  __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
  for (int64_t k = 0; k < kc; ++k) {
    const __m256 b0 = _mm256_loadu_ps(bp);
    const __m256 b1 = _mm256_loadu_ps(bp + 8);
    const int64_t at = k * k_step;
    __m256 av = _mm256_broadcast_ss(a0 + at);
    c00 = _mm256_fmadd_ps(av, b0, c00);
    c01 = _mm256_fmadd_ps(av, b1, c01);
    av = _mm256_broadcast_ss(a1 + at);
    c10 = _mm256_fmadd_ps(av, b0, c10);
    c11 = _mm256_fmadd_ps(av, b1, c11);
    av = _mm256_broadcast_ss(a2 + at);
    c20 = _mm256_fmadd_ps(av, b0, c20);
    c21 = _mm256_fmadd_ps(av, b1, c21);
    av = _mm256_broadcast_ss(a3 + at);
    c30 = _mm256_fmadd_ps(av, b0, c30);
    c31 = _mm256_fmadd_ps(av, b1, c31);
    av = _mm256_broadcast_ss(a4 + at);
    c40 = _mm256_fmadd_ps(av, b0, c40);
    c41 = _mm256_fmadd_ps(av, b1, c41);
    av = _mm256_broadcast_ss(a5 + at);
    c50 = _mm256_fmadd_ps(av, b0, c50);
    c51 = _mm256_fmadd_ps(av, b1, c51);
    bp += kNr;
  }
  const __m256 acc[kMr][2] = {{c00, c01}, {c10, c11}, {c20, c21},
                              {c30, c31}, {c40, c41}, {c50, c51}};
  const __m256 va = _mm256_set1_ps(alpha);
  if (rows == kMr && cols == kNr) {
    for (int r = 0; r < kMr; ++r) {
      float* row = c + r * ldc;
      _mm256_storeu_ps(row, _mm256_fmadd_ps(va, acc[r][0], _mm256_loadu_ps(row)));
      _mm256_storeu_ps(row + 8, _mm256_fmadd_ps(va, acc[r][1], _mm256_loadu_ps(row + 8)));
    }
    return;
  }
  alignas(32) float tile[kMr][kNr];
  for (int r = 0; r < kMr; ++r) {
    _mm256_store_ps(tile[r], acc[r][0]);
    _mm256_store_ps(tile[r] + 8, acc[r][1]);
  }
  for (int r = 0; r < rows; ++r) {
    float* row = c + r * ldc;
    for (int j = 0; j < cols; ++j) row[j] = std::fma(alpha, tile[r][j], row[j]);
  }
}

bool CpuHasAvx2Fma() { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"); }
#else
void Tile6x16(int64_t, const float*, int64_t, int64_t, const float*, float, float*, int64_t, int,
              int) {
  LOG(FATAL) << "Gemm: Loom's f32 kernel needs x86-64 AVX2";
}
bool CpuHasAvx2Fma() { return false; }
#endif

void LoomSgemm(const GemmPlan& p, const float* a, const float* b, float* c) {
  if (p.beta != 1.0) ScaleRows(c, p.m, p.n, p.ldc, static_cast<float>(p.beta));
  if (p.k == 0 || p.alpha == 0.0) return;
  const float alpha = static_cast<float>(p.alpha);
  const int64_t kc_max = std::min(kKc, p.k);
  const int64_t nc_max = (std::min(kNc, p.n) + kNr - 1) / kNr * kNr;
  float* packed_b =
      cpu::Scratch<float>(cpu::ScratchSlot::kGemmPack, static_cast<size_t>(kc_max * nc_max));
  // op(A)[i, k] = a[i · row_step + k · k_step]
  const int64_t row_step = p.trans_a ? 1 : p.lda, k_step = p.trans_a ? p.lda : 1;
  for (int64_t j0 = 0; j0 < p.n; j0 += kNc) {
    const int64_t nc = std::min(kNc, p.n - j0);
    for (int64_t p0 = 0; p0 < p.k; p0 += kKc) {
      const int64_t kc = std::min(kKc, p.k - p0);
      PackB(p, b, p0, kc, j0, nc, packed_b);
      for (int64_t i0 = 0; i0 < p.m; i0 += kMc) {
        const int64_t mc = std::min(kMc, p.m - i0);
        for (int64_t jp = 0; jp < nc; jp += kNr) {
          for (int64_t ip = 0; ip < mc; ip += kMr) {
            Tile6x16(kc, a + (i0 + ip) * row_step + p0 * k_step, row_step, k_step,
                     packed_b + jp * kc, alpha, c + (i0 + ip) * p.ldc + j0 + jp, p.ldc,
                     static_cast<int>(std::min<int64_t>(kMr, mc - ip)),
                     static_cast<int>(std::min<int64_t>(kNr, nc - jp)));
          }
        }
      }
    }
  }
}

// Whether OpenBLAS runs an AVX2 (or wider) core; other BLAS libraries count as fast.
bool BlasHasAvx2Core() {
#ifdef OPENBLAS_VERSION
  std::string core = openblas_get_corename();
  for (char& ch : core) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  for (const char* fast : {"haswell", "skylakex", "cooperlake", "sapphirerapids", "zen"}) {
    if (core == fast) return true;
  }
  return false;
#else
  return true;
#endif
}

std::atomic<int> g_sgemm_choice{-1};  // -1 undecided, 0 BLAS, 1 Loom's kernel

bool UseLoomSgemm() {
  int choice = g_sgemm_choice.load(std::memory_order_relaxed);
  if (choice >= 0) return choice == 1;
  static std::once_flag once;
  std::call_once(once, [] {
    const char* env = std::getenv("LOOM_CPU_SGEMM");
    const std::string mode = env ? env : "auto";
    bool loom = false;
    if (mode == "loom") {
      loom = CpuHasAvx2Fma();
      LOG_IF(WARNING, !loom) << "LOOM_CPU_SGEMM=loom: this CPU lacks AVX2/FMA; using BLAS";
    } else if (mode == "blas") {
      loom = false;
    } else {
      LOG_IF(WARNING, mode != "auto")
          << "LOOM_CPU_SGEMM=" << mode << ": expected blas, loom or auto; using auto";
      loom = CpuHasAvx2Fma() && !BlasHasAvx2Core();
    }
    int expected = -1;
    g_sgemm_choice.compare_exchange_strong(expected, loom ? 1 : 0);
  });
  return g_sgemm_choice.load() == 1;
}

// One product on the calling thread.
template <typename T>
void OneSerial(const GemmPlan& p, const T* a, const T* b, T* c) {
  if (p.m == 0 || p.n == 0) return;
  if constexpr (std::is_same_v<T, float>) {
    if (UseLoomSgemm()) {
      LoomSgemm(p, a, b, c);
      return;
    }
  }
  if (p.k == 0) {  // BLAS rejects lda = 0; the product is empty, C = beta · C.
    ScaleRows(c, p.m, p.n, p.ldc, static_cast<T>(p.beta));
    return;
  }
  CblasGemm(p.trans_a, p.trans_b, static_cast<blasint>(p.m), static_cast<blasint>(p.n),
            static_cast<blasint>(p.k), static_cast<T>(p.alpha), a, static_cast<blasint>(p.lda), b,
            static_cast<blasint>(p.ldb), static_cast<T>(p.beta), c, static_cast<blasint>(p.ldc));
}

// One product, split over the OpenMP team into blocks of C rows (or columns, when C has more
// of them) when it is large enough; block boundaries depend only on the shape and team size.
template <typename T>
void One(const GemmPlan& p, const T* a, const T* b, T* c) {
  const double flops = static_cast<double>(p.m) * static_cast<double>(p.n) * p.k;
  const int team = TeamSize();
  const bool by_rows = p.m >= p.n;
  const int64_t extent = by_rows ? p.m : p.n;
  const int parts = static_cast<int>(std::min<int64_t>(team, extent / kMinSplitRows));
  if (flops <= kSplitFlops || parts < 2) {
    OneSerial(p, a, b, c);
    return;
  }
#pragma omp parallel for schedule(static) num_threads(parts)
  for (int part = 0; part < parts; ++part) {
    const int64_t i0 = cpu::ChunkBegin(extent, parts, part);
    const int64_t i1 = cpu::ChunkBegin(extent, parts, part + 1);
    GemmPlan q = p;
    if (by_rows) {  // C rows [i0, i1) = op(A) rows [i0, i1) · op(B)
      q.m = i1 - i0;
      OneSerial(q, a + (p.trans_a ? i0 : i0 * p.lda), b, c + i0 * p.ldc);
    } else {  // C columns [i0, i1) = op(A) · op(B) columns [i0, i1)
      q.n = i1 - i0;
      OneSerial(q, a, b + (p.trans_b ? i0 * p.ldb : i0), c + i0);
    }
  }
}

template <typename T>
void Run(const GemmPlan& p, const T* a, const T* b, T* c) {
  UseSingleThreadedBlas();
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
  // A batch: its products spread over the team, one single-threaded call each; a batch
  // smaller than the team runs its products one after the other, each split.
  const double flops = static_cast<double>(p.m) * static_cast<double>(p.n) * p.k;
  if (p.batch >= TeamSize()) {
#pragma omp parallel for schedule(static) if (flops * p.batch > 1e5)
    for (int64_t g = 0; g < p.batch; ++g) {
      OneSerial(p, a + g * p.stride_a, b + g * p.stride_b, c + g * p.stride_c);
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
// order in double. Several chunks run in parallel, one single-threaded call at a time each; a
// single chunk splits each of its products over the team.
constexpr int64_t kMaxPartialBytes = int64_t{32} << 20;

template <typename T>
void RunSum(const GemmPlan& p, const T* a, const T* b, T* c) {
  UseSingleThreadedBlas();
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
  const bool chunk_parallel = chunks > 1 && flops * p.batch > 1e5;
#pragma omp parallel for schedule(static) if (chunk_parallel)
  for (int64_t ch = 0; ch < chunks; ++ch) {
    T* out = part + ch * mn;
    const int64_t g0 = cpu::ChunkBegin(p.batch, chunks, ch);
    const int64_t g1 = cpu::ChunkBegin(p.batch, chunks, ch + 1);
    GemmPlan local = q;
    local.beta = 0.0;
    if (g0 == g1) std::fill(out, out + mn, T(0));
    for (int64_t g = g0; g < g1; ++g) {
      if (chunk_parallel) {
        OneSerial(local, a + g * p.stride_a, b + g * p.stride_b, out);
      } else {
        One(local, a + g * p.stride_a, b + g * p.stride_b, out);
      }
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

bool SetCpuSgemmKernel(CpuSgemmKernel kernel) {
  if (kernel == CpuSgemmKernel::kLoom && !CpuHasAvx2Fma()) return false;
  UseLoomSgemm();  // settle the default first so it cannot overwrite this choice
  g_sgemm_choice.store(kernel == CpuSgemmKernel::kLoom ? 1 : 0);
  return true;
}

bool CpuSgemmUsesLoomKernel() { return UseLoomSgemm(); }

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
