// Linear forward (fused bias + activation) and backward against plain loops in double.
#include "csrc/model/ops/linear.h"

#include <cmath>
#include <vector>

#include <gtest/gtest.h>

#include "csrc/model/ops/activation.h"
#include "tests/model/ops/ops_test_util.h"

namespace loom::ops {
namespace {

using test::AsDoubles;
using test::kCpu;
using test::Random;

double Act(Activation act, double z) {
  switch (act) {
    case Activation::kIdentity:
      return z;
    case Activation::kRelu:
      return z > 0 ? z : 0;
    case Activation::kSilu:
      return z / (1 + std::exp(-z));
    case Activation::kSigmoid:
      return 1 / (1 + std::exp(-z));
    case Activation::kTanh:
      return std::tanh(z);
  }
  return 0;
}

class LinearForwardTest : public ::testing::TestWithParam<Activation> {};

TEST_P(LinearForwardTest, MatchesNaiveWithAndWithoutBias) {
  const Activation act = GetParam();
  const int64_t b = 3, t = 5, k = 7, n = 6;
  const Tensor x = Random(Shape{b, t, k}, DType::kF64, 1);
  const Tensor w = Random(Shape{n, k}, DType::kF64, 2);
  const Tensor bias = Random(Shape{n}, DType::kF64, 3);
  const std::vector<double> xv = AsDoubles(x), wv = AsDoubles(w), bv = AsDoubles(bias);
  for (bool with_bias : {true, false}) {
    Tensor y = Tensor::Empty(Shape{b, t, n}, DType::kF64);
    Tensor pre = Tensor::Empty(Shape{b, t, n}, DType::kF64);
    LinearForward(kCpu, LinearArgs{act}, x, w, with_bias ? bias.cview() : ConstTensorView(), y,
                  pre);
    const std::vector<double> yv = y.ToVector<double>(), pv = pre.ToVector<double>();
    for (int64_t r = 0; r < b * t; ++r) {
      for (int64_t j = 0; j < n; ++j) {
        double z = with_bias ? bv[j] : 0.0;
        for (int64_t i = 0; i < k; ++i) z += xv[r * k + i] * wv[j * k + i];
        EXPECT_NEAR(pv[r * n + j], z, 1e-14) << "pre row " << r << " col " << j;
        EXPECT_NEAR(yv[r * n + j], Act(act, z), 1e-14) << "y row " << r << " col " << j;
      }
    }
    // Without `pre` the result is the same.
    Tensor y2 = Tensor::Empty(Shape{b, t, n}, DType::kF64);
    LinearForward(kCpu, LinearArgs{act}, x, w, with_bias ? bias.cview() : ConstTensorView(), y2,
                  TensorView());
    EXPECT_EQ(y2.ToVector<double>(), yv);
  }
}

INSTANTIATE_TEST_SUITE_P(Activations, LinearForwardTest,
                         ::testing::Values(Activation::kIdentity, Activation::kRelu,
                                           Activation::kSilu, Activation::kSigmoid,
                                           Activation::kTanh),
                         [](const auto& p) { return std::string(ActivationName(p.param)); });

TEST(LinearBackwardTest, MatchesNaiveAndFollowsConventions) {
  const int64_t r = 9, k = 5, n = 4;
  const Tensor x = Random(Shape{r, k}, DType::kF64, 4);
  const Tensor w = Random(Shape{n, k}, DType::kF64, 5);
  const Tensor gz = Random(Shape{r, n}, DType::kF64, 6);
  Tensor grad_x = Random(Shape{r, k}, DType::kF64, 7);  // junk: must be overwritten
  Tensor grad_w = Random(Shape{n, k}, DType::kF64, 8);  // accumulated onto
  Tensor grad_b = Random(Shape{n}, DType::kF64, 9);     // accumulated onto
  const std::vector<double> w0 = grad_w.ToVector<double>(), b0 = grad_b.ToVector<double>();
  LinearBackward(kCpu, gz, x, w, grad_x, grad_w, grad_b);
  const std::vector<double> xv = AsDoubles(x), wv = AsDoubles(w), gv = AsDoubles(gz);
  const std::vector<double> gx = grad_x.ToVector<double>(), gw = grad_w.ToVector<double>(),
                            gb = grad_b.ToVector<double>();
  for (int64_t i = 0; i < r; ++i) {
    for (int64_t c = 0; c < k; ++c) {
      double s = 0;
      for (int64_t j = 0; j < n; ++j) s += gv[i * n + j] * wv[j * k + c];
      EXPECT_NEAR(gx[i * k + c], s, 1e-14);
    }
  }
  for (int64_t j = 0; j < n; ++j) {
    double sb = 0;
    for (int64_t i = 0; i < r; ++i) sb += gv[i * n + j];
    EXPECT_NEAR(gb[j], b0[j] + sb, 1e-14);
    for (int64_t c = 0; c < k; ++c) {
      double s = 0;
      for (int64_t i = 0; i < r; ++i) s += gv[i * n + j] * xv[i * k + c];
      EXPECT_NEAR(gw[j * k + c], w0[j * k + c] + s, 1e-14);
    }
  }
}

TEST(LinearTest, F32AgreesWithF64) {
  const int64_t r = 64, k = 48, n = 40;
  const Tensor x = Random(Shape{r, k}, DType::kF32, 10), w = Random(Shape{n, k}, DType::kF32, 11),
               b = Random(Shape{n}, DType::kF32, 12);
  Tensor y32 = Tensor::Empty(Shape{r, n}, DType::kF32),
         y64 = Tensor::Empty(Shape{r, n}, DType::kF64);
  LinearForward(kCpu, LinearArgs{Activation::kSilu}, x, w, b, y32, TensorView());
  LinearForward(kCpu, LinearArgs{Activation::kSilu}, test::Cast(x, DType::kF64),
                test::Cast(w, DType::kF64), test::Cast(b, DType::kF64), y64, TensorView());
  LOOM_EXPECT_REL_NEAR(y32, y64, 1e-5);
}

TEST(LinearTest, ValidationNamesTheArgument) {
  const TensorSpec x{Shape{2, 3, 4}, DType::kF32};
  Status s = ValidateLinear(LinearArgs{}, x, TensorSpec{Shape{5, 3}, DType::kF32}, TensorSpec{},
                            TensorSpec{Shape{2, 3, 5}, DType::kF32});
  EXPECT_NE(s.message().find("weight f32(5, 3)"), std::string::npos) << s;
  s = ValidateLinear(LinearArgs{}, x, TensorSpec{Shape{5, 4}, DType::kF32},
                     TensorSpec{Shape{4}, DType::kF32}, TensorSpec{Shape{2, 3, 5}, DType::kF32});
  EXPECT_NE(s.message().find("bias f32(4)"), std::string::npos) << s;
  s = ValidateLinear(LinearArgs{}, x, TensorSpec{Shape{5, 4}, DType::kF32}, TensorSpec{},
                     TensorSpec{Shape{6, 5}, DType::kF32});
  EXPECT_NE(s.message().find("y f32(6, 5) must have shape (2, 3, 5)"), std::string::npos) << s;
  EXPECT_TRUE(ValidateLinear(LinearArgs{}, x, TensorSpec{Shape{5, 4}, DType::kF32},
                             TensorSpec{Shape{5}, DType::kF32},
                             TensorSpec{Shape{2, 3, 5}, DType::kF32})
                  .ok());
}

}  // namespace
}  // namespace loom::ops
