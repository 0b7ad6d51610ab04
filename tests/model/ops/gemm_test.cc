// Gemm / GemmBatched / GemmBatchedSum against closed forms and a naive triple loop in double.
#include "csrc/model/ops/gemm.h"

#include <cmath>
#include <limits>
#include <tuple>
#include <vector>

#include <gtest/gtest.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "tests/model/ops/ops_test_util.h"

namespace loom::ops {
namespace {

using test::AsDoubles;
using test::kCpu;
using test::Random;

// C[g] = alpha · op(A[g]) op(B[g]) + beta · C0[g], in double, from row-major storage.
std::vector<double> NaiveGemm(const std::vector<double>& a, const std::vector<double>& b,
                              const std::vector<double>& c0, bool ta, bool tb, int64_t m, int64_t n,
                              int64_t k, int64_t batch, int64_t sa, int64_t sb, double alpha,
                              double beta) {
  std::vector<double> c(static_cast<size_t>(batch * m * n));
  for (int64_t g = 0; g < batch; ++g) {
    for (int64_t i = 0; i < m; ++i) {
      for (int64_t j = 0; j < n; ++j) {
        double s = 0.0;
        for (int64_t p = 0; p < k; ++p) {
          const double av = ta ? a[g * sa + p * m + i] : a[g * sa + i * k + p];
          const double bv = tb ? b[g * sb + j * k + p] : b[g * sb + p * n + j];
          s += av * bv;
        }
        const int64_t at = (g * m + i) * n + j;
        c[at] = alpha * s + (beta == 0.0 ? 0.0 : beta * c0[at]);
      }
    }
  }
  return c;
}

TEST(GemmTest, ClosedFormTwoByTwo) {
  const Tensor a = Tensor::FromVector<double>({1, 2, 3, 4}, Shape{2, 2});
  const Tensor b = Tensor::FromVector<double>({5, 6, 7, 8}, Shape{2, 2});
  Tensor c = Tensor::FromVector<double>({1, 1, 1, 1}, Shape{2, 2});
  GemmArgs args;
  args.alpha = 2.0;
  args.beta = 3.0;
  Gemm(kCpu, args, a, b, c);  // 2·[[19, 22], [43, 50]] + 3
  EXPECT_EQ(c.ToVector<double>(), (std::vector<double>{41, 47, 89, 103}));
}

class GemmTransposeTest : public ::testing::TestWithParam<std::tuple<bool, bool>> {};

TEST_P(GemmTransposeTest, MatchesNaiveWithFoldedLeadingDims) {
  const auto [ta, tb] = GetParam();
  const int64_t m = 15, n = 9, k = 13;  // odd sizes on purpose
  // A is stored (M, K) or (K, M), with its rows folded from (3, 5) / (13) dims.
  const Tensor a =
      ta ? Random(Shape{k, m}, DType::kF64, 1) : Random(Shape{3, 5, k}, DType::kF64, 1);
  const Tensor b = tb ? Random(Shape{n, k}, DType::kF64, 2) : Random(Shape{k, n}, DType::kF64, 2);
  Tensor c = Random(Shape{m, n}, DType::kF64, 3);
  const std::vector<double> c0 = c.ToVector<double>();
  GemmArgs args;
  args.trans_a = ta;
  args.trans_b = tb;
  args.alpha = -0.75;
  args.beta = 0.5;
  Gemm(kCpu, args, a, b, c);
  const std::vector<double> want =
      NaiveGemm(AsDoubles(a), AsDoubles(b), c0, ta, tb, m, n, k, 1, 0, 0, args.alpha, args.beta);
  EXPECT_LE(test::MaxAbsDiff(c.ToVector<double>(), want), 1e-13);
}

INSTANTIATE_TEST_SUITE_P(AllTransposes, GemmTransposeTest,
                         ::testing::Combine(::testing::Bool(), ::testing::Bool()));

TEST(GemmTest, BetaZeroIgnoresNanInC) {
  const Tensor a = Random(Shape{4, 3}, DType::kF32, 4);
  const Tensor b = Random(Shape{3, 5}, DType::kF32, 5);
  Tensor c = test::FromDoubles(std::vector<double>(20, std::nan("")), Shape{4, 5}, DType::kF32);
  Gemm(kCpu, GemmArgs{}, a, b, c);
  for (double v : AsDoubles(c)) EXPECT_FALSE(std::isnan(v));
}

TEST(GemmTest, EmptyInnerDimensionScalesC) {
  const Tensor a = Tensor::Empty(Shape{2, 0}, DType::kF64);
  const Tensor b = Tensor::Empty(Shape{0, 3}, DType::kF64);
  Tensor c = Tensor::FromVector<double>({1, 2, 3, 4, 5, 6}, Shape{2, 3});
  GemmArgs args;
  args.beta = 2.0;
  Gemm(kCpu, args, a, b, c);
  EXPECT_EQ(c.ToVector<double>(), (std::vector<double>{2, 4, 6, 8, 10, 12}));
}

TEST(GemmTest, F32AgreesWithF64) {
  const int64_t m = 37, n = 29, k = 64;
  const Tensor a32 = Random(Shape{m, k}, DType::kF32, 6), b32 = Random(Shape{n, k}, DType::kF32, 7);
  const Tensor a64 = test::Cast(a32, DType::kF64), b64 = test::Cast(b32, DType::kF64);
  Tensor c32 = Tensor::Empty(Shape{m, n}, DType::kF32),
         c64 = Tensor::Empty(Shape{m, n}, DType::kF64);
  GemmArgs args;
  args.trans_b = true;
  Gemm(kCpu, args, a32, b32, c32);
  Gemm(kCpu, args, a64, b64, c64);
  // k = 64 products of |values| < 1: fp32 accumulation error ~ k · 2^-24 relative to the sum.
  LOOM_EXPECT_REL_NEAR(c32, c64, 1e-5);
}

struct BatchCase {
  bool ta, tb, broadcast_a, broadcast_b;
};

class GemmBatchedTest : public ::testing::TestWithParam<BatchCase> {};

TEST_P(GemmBatchedTest, MatchesNaivePerBatch) {
  const BatchCase p = GetParam();
  const int64_t g = 6, m = 7, n = 5, k = 4;
  const Shape sa = p.ta ? Shape{k, m} : Shape{m, k};
  const Shape sb = p.tb ? Shape{n, k} : Shape{k, n};
  const Tensor a = p.broadcast_a ? Random(sa, DType::kF64, 8)
                                 : Random(Shape{2, 3, sa[0], sa[1]}, DType::kF64, 8);
  const Tensor b =
      p.broadcast_b ? Random(sb, DType::kF64, 9) : Random(Shape{g, sb[0], sb[1]}, DType::kF64, 9);
  Tensor c = Random(Shape{2, 3, m, n}, DType::kF64, 10);
  const std::vector<double> c0 = c.ToVector<double>();
  GemmArgs args;
  args.trans_a = p.ta;
  args.trans_b = p.tb;
  args.alpha = 1.5;
  args.beta = -1.0;
  GemmBatched(kCpu, args, a, b, c);
  const std::vector<double> want =
      NaiveGemm(AsDoubles(a), AsDoubles(b), c0, p.ta, p.tb, m, n, k, g, p.broadcast_a ? 0 : m * k,
                p.broadcast_b ? 0 : n * k, args.alpha, args.beta);
  EXPECT_LE(test::MaxAbsDiff(c.ToVector<double>(), want), 1e-13);
}

INSTANTIATE_TEST_SUITE_P(
    Layouts, GemmBatchedTest,
    ::testing::Values(BatchCase{false, false, false, false}, BatchCase{true, false, false, false},
                      BatchCase{false, true, false, false}, BatchCase{true, true, false, false},
                      // broadcast B with plain A folds into one product of G·M rows
                      BatchCase{false, false, false, true}, BatchCase{false, true, false, true},
                      BatchCase{true, false, false, true}, BatchCase{false, false, true, false},
                      BatchCase{true, true, true, false}));

TEST(GemmBatchedSumTest, SumsTheBatchAndAccumulates) {
  // grad_W (M, N) += Σ_g grad_Y[g] (M, E) · X[g]ᵀ (E, N): a token-axis weight gradient.
  const int64_t g = 100, m = 4, n = 6, e = 8;  // g > 64 so several chunks are used
  const Tensor gy = Random(Shape{g, m, e}, DType::kF64, 11);
  const Tensor x = Random(Shape{g, n, e}, DType::kF64, 12);
  Tensor c = Random(Shape{m, n}, DType::kF64, 13);
  const std::vector<double> c0 = c.ToVector<double>();
  GemmArgs args;
  args.trans_b = true;
  args.alpha = 0.5;
  args.beta = 1.0;
  GemmBatchedSum(kCpu, args, gy, x, c);
  const std::vector<double> per =
      NaiveGemm(AsDoubles(gy), AsDoubles(x), {}, false, true, m, n, e, g, m * e, n * e, 1.0, 0.0);
  std::vector<double> want = c0;
  for (int64_t b = 0; b < g; ++b) {
    for (int64_t i = 0; i < m * n; ++i) want[i] += 0.5 * per[b * m * n + i];
  }
  EXPECT_LE(test::MaxAbsDiff(c.ToVector<double>(), want), 1e-12);

  // beta = 0 overwrites, and a broadcast operand is allowed.
  const Tensor w = Random(Shape{e, n}, DType::kF64, 14);
  args = GemmArgs{};
  GemmBatchedSum(kCpu, args, gy, w, c);
  const std::vector<double> per2 =
      NaiveGemm(AsDoubles(gy), AsDoubles(w), {}, false, false, m, n, e, g, m * e, 0, 1.0, 0.0);
  std::vector<double> want2(static_cast<size_t>(m * n), 0.0);
  for (int64_t b = 0; b < g; ++b) {
    for (int64_t i = 0; i < m * n; ++i) want2[i] += per2[b * m * n + i];
  }
  EXPECT_LE(test::MaxAbsDiff(c.ToVector<double>(), want2), 1e-12);
}

// Restores the process-wide CPU f32 kernel choice on scope exit (a test that switches it must
// not leak its choice into later tests, even when it fails or skips).
class ScopedCpuSgemmKernel {
 public:
  ScopedCpuSgemmKernel()
      : saved_(internal::CpuSgemmUsesLoomKernel() ? internal::CpuSgemmKernel::kLoom
                                                  : internal::CpuSgemmKernel::kBlas) {}
  ~ScopedCpuSgemmKernel() { internal::SetCpuSgemmKernel(saved_); }
  ScopedCpuSgemmKernel(const ScopedCpuSgemmKernel&) = delete;
  ScopedCpuSgemmKernel& operator=(const ScopedCpuSgemmKernel&) = delete;

 private:
  internal::CpuSgemmKernel saved_;
};

// f32 GemmBatchedSum under both CPU kernels: its double partial sums live in the calling
// thread's kDoubles scratch while each product (Loom's kernel) packs B in kGemmPack scratch on
// the same thread, so this fails if the two ever share a buffer.
TEST(GemmBatchedSumTest, F32UnderBothKernels) {
  const ScopedCpuSgemmKernel restore;
  const int64_t g = 100, m = 20, n = 40, e = 70;
  const Tensor gy = Random(Shape{g, m, e}, DType::kF32, 31);
  const Tensor x = Random(Shape{g, n, e}, DType::kF32, 32);
  const Tensor c_init = Random(Shape{m, n}, DType::kF32, 33);
  const std::vector<double> per =
      NaiveGemm(AsDoubles(gy), AsDoubles(x), {}, false, true, m, n, e, g, m * e, n * e, 1.0, 0.0);
  std::vector<double> want = AsDoubles(c_init);
  for (int64_t b = 0; b < g; ++b) {
    for (int64_t i = 0; i < m * n; ++i) want[i] += 0.5 * per[b * m * n + i];
  }
  for (const auto kernel : {internal::CpuSgemmKernel::kBlas, internal::CpuSgemmKernel::kLoom}) {
    if (!internal::SetCpuSgemmKernel(kernel)) continue;  // no AVX2/FMA: Loom's kernel absent
    Tensor c = Tensor::FromVector(c_init.ToVector<float>(), c_init.shape());
    GemmArgs args;
    args.trans_b = true;
    args.alpha = 0.5;
    args.beta = 1.0;
    GemmBatchedSum(kCpu, args, gy, x, c);
    // Each element sums g * e = 7000 products of |values| < 1 (fp32 products, double sums).
    EXPECT_LE(test::RelError(AsDoubles(c), want), 1e-5)
        << (kernel == internal::CpuSgemmKernel::kLoom ? "loom" : "blas");
  }
}

// Both CPU f32 kernels (cblas_sgemm and Loom's AVX2/FMA kernel) on every layout, at sizes that
// cross the kernel's blocks (K blocks of 256, A blocks of 96 rows, B blocks of 512 columns)
// and leave partial 6x16 tiles, with alpha, beta and a C row stride wider than N.
class CpuSgemmKernelTest
    : public ::testing::TestWithParam<std::tuple<internal::CpuSgemmKernel, bool, bool>> {
 protected:
  const ScopedCpuSgemmKernel restore_;
};

TEST_P(CpuSgemmKernelTest, MatchesNaiveAcrossBlocks) {
  const auto [kernel, ta, tb] = GetParam();
  if (!internal::SetCpuSgemmKernel(kernel)) GTEST_SKIP() << "this CPU has no AVX2/FMA";
  const int64_t m = 203, n = 530, k = 300, ldc = 533;
  const Tensor a = Random(ta ? Shape{k, m} : Shape{m, k}, DType::kF32, 21);
  const Tensor b = Random(tb ? Shape{n, k} : Shape{k, n}, DType::kF32, 22);
  Tensor c_full = Random(Shape{m, ldc}, DType::kF32, 23);
  const std::vector<double> c_before = AsDoubles(c_full);
  GemmArgs args;
  args.trans_a = ta;
  args.trans_b = tb;
  args.alpha = 0.75;
  args.beta = -0.5;
  // C is the (m, n) window of an (m, ldc) buffer: columns n .. ldc-1 must stay untouched.
  TensorView c_view = c_full.view();
  internal::GemmPlan plan;
  plan.trans_a = ta;
  plan.trans_b = tb;
  plan.m = m;
  plan.n = n;
  plan.k = k;
  plan.lda = ta ? m : k;
  plan.ldb = tb ? k : n;
  plan.ldc = ldc;
  plan.alpha = args.alpha;
  plan.beta = args.beta;
  internal::GemmCpu(plan, a, b, c_view);
  std::vector<double> c0(static_cast<size_t>(m * n));
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) c0[i * n + j] = c_before[i * ldc + j];
  }
  const std::vector<double> want =
      NaiveGemm(AsDoubles(a), AsDoubles(b), c0, ta, tb, m, n, k, 1, 0, 0, 0.75, -0.5);
  const std::vector<double> got_full = AsDoubles(c_full);
  std::vector<double> got(static_cast<size_t>(m * n));
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < ldc; ++j) {
      if (j < n) {
        got[i * n + j] = got_full[i * ldc + j];
      } else {
        ASSERT_EQ(got_full[i * ldc + j], c_before[i * ldc + j]) << "row " << i << " col " << j;
      }
    }
  }
  // k = 300 products of |values| < 1 accumulated in fp32.
  EXPECT_LE(test::RelError(got, want), 1e-5);

  // beta = 0 never reads C (NaN must not survive).
  Tensor c_nan = Tensor::Empty(Shape{m, n}, DType::kF32);
  for (int64_t i = 0; i < m * n; ++i) {
    c_nan.data<float>()[i] = std::numeric_limits<float>::quiet_NaN();
  }
  args.beta = 0.0;
  Gemm(kCpu, args, a, b, c_nan);
  const std::vector<double> want0 =
      NaiveGemm(AsDoubles(a), AsDoubles(b), {}, ta, tb, m, n, k, 1, 0, 0, 0.75, 0.0);
  EXPECT_LE(test::RelError(AsDoubles(c_nan), want0), 1e-5);

  // beta = 1 accumulates: C = 0.75·AB + 0.75·AB.
  args.beta = 1.0;
  Gemm(kCpu, args, a, b, c_nan);
  std::vector<double> want1 = want0;
  for (double& v : want1) v *= 2.0;
  EXPECT_LE(test::RelError(AsDoubles(c_nan), want1), 1e-5);
}

INSTANTIATE_TEST_SUITE_P(BothKernels, CpuSgemmKernelTest,
                         ::testing::Combine(::testing::Values(internal::CpuSgemmKernel::kBlas,
                                                              internal::CpuSgemmKernel::kLoom),
                                            ::testing::Bool(), ::testing::Bool()));

#ifdef _OPENMP
// Loom's kernel gives the same bits however a product is split over threads.
TEST(CpuSgemmThreadsTest, LoomKernelIsIndependentOfThreadCount) {
  const ScopedCpuSgemmKernel restore;
  if (!internal::SetCpuSgemmKernel(internal::CpuSgemmKernel::kLoom)) {
    GTEST_SKIP() << "this CPU has no AVX2/FMA";
  }
  const Tensor a = Random(Shape{611, 96}, DType::kF32, 31);
  const Tensor b = Random(Shape{96, 40}, DType::kF32, 32);
  Tensor c1 = Tensor::Empty(Shape{611, 40}, DType::kF32);
  Tensor c3 = Tensor::Empty(Shape{611, 40}, DType::kF32);
  const int threads = omp_get_max_threads();
  omp_set_num_threads(1);
  Gemm(kCpu, GemmArgs{}, a, b, c1);
  omp_set_num_threads(3);
  Gemm(kCpu, GemmArgs{}, a, b, c3);
  omp_set_num_threads(threads);
  EXPECT_EQ(c1.ToVector<float>(), c3.ToVector<float>());
}
#endif

TEST(GemmTest, ValidationNamesTheOperand) {
  const TensorSpec a{Shape{4, 3}, DType::kF32}, b{Shape{5, 2}, DType::kF32},
      c{Shape{4, 2}, DType::kF32};
  Status s = ValidateGemm(GemmArgs{}, a, b, c);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("inner dims differ"), std::string::npos) << s;
  s = ValidateGemm(GemmArgs{}, a, TensorSpec{Shape{3, 2}, DType::kF64}, c);
  EXPECT_NE(s.message().find("b f64(3, 2)"), std::string::npos) << s;
  s = ValidateGemm(GemmArgs{}, a, TensorSpec{Shape{3, 2}, DType::kF32},
                   TensorSpec{Shape{4, 3}, DType::kF32});
  EXPECT_NE(s.message().find("c f32(4, 3)"), std::string::npos) << s;
  s = ValidateGemmBatched(GemmArgs{}, TensorSpec{Shape{3, 4, 3}, DType::kF32},
                          TensorSpec{Shape{2, 3, 2}, DType::kF32},
                          TensorSpec{Shape{3, 4, 2}, DType::kF32});
  EXPECT_NE(s.message().find("holds 2 matrices"), std::string::npos) << s;
  s = ValidateGemmBatchedSum(GemmArgs{0, 0, 1.0, 0.5}, TensorSpec{Shape{3, 4, 3}, DType::kF32},
                             TensorSpec{Shape{3, 3, 2}, DType::kF32},
                             TensorSpec{Shape{4, 2}, DType::kF32});
  EXPECT_NE(s.message().find("beta must be 0 or 1"), std::string::npos) << s;
  EXPECT_TRUE(ValidateGemm(GemmArgs{}, a, TensorSpec{Shape{3, 2}, DType::kF32}, c).ok());
  // bf16 operands may produce f32 (CUDA).
  EXPECT_TRUE(ValidateGemm(GemmArgs{}, TensorSpec{Shape{4, 3}, DType::kBF16},
                           TensorSpec{Shape{3, 2}, DType::kBF16}, c)
                  .ok());
}

}  // namespace
}  // namespace loom::ops
