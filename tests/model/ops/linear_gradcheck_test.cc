// Gradient checks (double, CPU) of Linear + activation, and of the batched GEMM backward
// formulas the layers use (token-axis linear, PFFN's per-sample product, DOT's Z Zᵀ).
#include <gtest/gtest.h>

#include "csrc/model/ops/activation.h"
#include "csrc/model/ops/elementwise.h"
#include "csrc/model/ops/gemm.h"
#include "csrc/model/ops/linear.h"
#include "tests/model/ops/ops_test_util.h"
#include "tests/testing/gradcheck.h"

namespace loom::ops {
namespace {

using loom::testing::CheckGradients;
using loom::testing::GradCheckResult;
using loom::testing::GradCheckVar;
using loom::testing::GradMode;
using test::kCpu;
using test::Random;

struct LinearCase {
  Activation act;
  ActivationSaved saved;
};

class LinearGradTest : public ::testing::TestWithParam<LinearCase> {};

TEST_P(LinearGradTest, BackwardMatchesFiniteDifferences) {
  const auto [act, saved] = GetParam();
  const int64_t b = 3, t = 4, k = 6, n = 5;
  Tensor x = Random(Shape{b, t, k}, DType::kF64, 1);
  Tensor w = Random(Shape{n, k}, DType::kF64, 2);
  Tensor bias = Random(Shape{n}, DType::kF64, 3);
  Tensor y = Tensor::Empty(Shape{b, t, n}, DType::kF64);
  Tensor pre = Tensor::Empty(Shape{b, t, n}, DType::kF64);
  Tensor grad_z = Tensor::Empty(Shape{b, t, n}, DType::kF64);
  Tensor grad_x = Tensor::Empty(x.spec()), grad_w = Tensor::Empty(w.spec()),
         grad_b = Tensor::Empty(bias.spec());
  auto forward = [&] { LinearForward(kCpu, LinearArgs{act}, x, w, bias, y, pre); };
  auto backward = [&](const std::vector<Tensor>& g) {
    ActivationBackward(kCpu, act, saved, g[0], saved == ActivationSaved::kInput ? pre : y, grad_z);
    LinearBackward(kCpu, grad_z, x, w, grad_x, grad_w, grad_b);
  };
  forward();
  if (act == Activation::kRelu) {  // no pre-activation within 1e-3 of the kink
    for (double z : test::AsDoubles(pre)) ASSERT_GT(std::fabs(z), 1e-3) << "pick other seeds";
  }
  const GradCheckResult r = CheckGradients({{"x", x, grad_x},
                                            {"W", w, grad_w, GradMode::kAccumulate},
                                            {"b", bias, grad_b, GradMode::kAccumulate}},
                                           {y}, forward, backward);
  EXPECT_TRUE(r.ok) << r.ToString();
}

INSTANTIATE_TEST_SUITE_P(
    Activations, LinearGradTest,
    ::testing::Values(LinearCase{Activation::kIdentity, ActivationSaved::kOutput},
                      LinearCase{Activation::kRelu, ActivationSaved::kOutput},
                      LinearCase{Activation::kRelu, ActivationSaved::kInput},
                      LinearCase{Activation::kSilu, ActivationSaved::kInput},
                      LinearCase{Activation::kSigmoid, ActivationSaved::kOutput},
                      LinearCase{Activation::kSigmoid, ActivationSaved::kInput},
                      LinearCase{Activation::kTanh, ActivationSaved::kOutput},
                      LinearCase{Activation::kTanh, ActivationSaved::kInput}));

// Token-axis linear Y[b] = W X[b] (W (M, N) shared):
//   grad_X[b] = Wᵀ grad_Y[b]   (GemmBatched, broadcast transposed A)
//   grad_W   += Σ_b grad_Y[b] X[b]ᵀ   (GemmBatchedSum)
TEST(BatchedGemmGradTest, TokenAxisLinear) {
  const int64_t b = 5, m = 3, n = 4, d = 6;
  Tensor w = Random(Shape{m, n}, DType::kF64, 4);
  Tensor x = Random(Shape{b, n, d}, DType::kF64, 5);
  Tensor y = Tensor::Empty(Shape{b, m, d}, DType::kF64);
  Tensor grad_w = Tensor::Empty(w.spec()), grad_x = Tensor::Empty(x.spec());
  auto forward = [&] { GemmBatched(kCpu, GemmArgs{}, w, x, y); };
  auto backward = [&](const std::vector<Tensor>& g) {
    GemmArgs ta;
    ta.trans_a = true;
    GemmBatched(kCpu, ta, w, g[0], grad_x);
    GemmArgs acc;
    acc.trans_b = true;
    acc.beta = 1.0;
    GemmBatchedSum(kCpu, acc, g[0], x, grad_w);
  };
  const GradCheckResult r = CheckGradients(
      {{"W", w, grad_w, GradMode::kAccumulate}, {"X", x, grad_x}}, {y}, forward, backward);
  EXPECT_TRUE(r.ok) << r.ToString();
}

// PFFN low-rank: P[b] = C[b] · X[b] with C (B, T, n) and X (B, n, d):
//   grad_C[b] = grad_P[b] X[b]ᵀ,   grad_X[b] = C[b]ᵀ grad_P[b].
TEST(BatchedGemmGradTest, PerSampleProduct) {
  const int64_t b = 4, t = 5, n = 3, d = 6;
  Tensor c = Random(Shape{b, t, n}, DType::kF64, 6);
  Tensor x = Random(Shape{b, n, d}, DType::kF64, 7);
  Tensor p = Tensor::Empty(Shape{b, t, d}, DType::kF64);
  Tensor grad_c = Tensor::Empty(c.spec()), grad_x = Tensor::Empty(x.spec());
  auto forward = [&] { GemmBatched(kCpu, GemmArgs{}, c, x, p); };
  auto backward = [&](const std::vector<Tensor>& g) {
    GemmArgs tb;
    tb.trans_b = true;
    GemmBatched(kCpu, tb, g[0], x, grad_c);
    GemmArgs ta;
    ta.trans_a = true;
    GemmBatched(kCpu, ta, c, g[0], grad_x);
  };
  const GradCheckResult r =
      CheckGradients({{"C", c, grad_c}, {"X", x, grad_x}}, {p}, forward, backward);
  EXPECT_TRUE(r.ok) << r.ToString();
}

// DOT: G[b] = Z[b] Z[b]ᵀ; grad_Z[b] = grad_G[b] Z[b] + grad_G[b]ᵀ Z[b].
TEST(BatchedGemmGradTest, GramMatrix) {
  const int64_t b = 3, m = 5, d = 4;
  Tensor z = Random(Shape{b, m, d}, DType::kF64, 8);
  Tensor gram = Tensor::Empty(Shape{b, m, m}, DType::kF64);
  Tensor grad_z = Tensor::Empty(z.spec());
  auto forward = [&] {
    GemmArgs tb;
    tb.trans_b = true;
    GemmBatched(kCpu, tb, z, z, gram);
  };
  auto backward = [&](const std::vector<Tensor>& g) {
    GemmBatched(kCpu, GemmArgs{}, g[0], z, grad_z);
    GemmArgs ta;
    ta.trans_a = true;
    ta.beta = 1.0;
    GemmBatched(kCpu, ta, g[0], z, grad_z);
  };
  const GradCheckResult r = CheckGradients({{"Z", z, grad_z}}, {gram}, forward, backward);
  EXPECT_TRUE(r.ok) << r.ToString();
}

}  // namespace
}  // namespace loom::ops
