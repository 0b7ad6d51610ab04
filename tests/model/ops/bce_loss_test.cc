// BCE with logits: closed forms, stability, weights, f32 vs f64.
#include "csrc/model/ops/bce_loss.h"

#include <cmath>
#include <vector>

#include <gtest/gtest.h>

#include "tests/model/ops/ops_test_util.h"

namespace loom::ops {
namespace {

using test::kCpu;

double Loss(const Tensor& z, const Tensor& y, const Tensor& w) {
  Tensor loss = Tensor::Empty(Shape{1}, z.dtype());
  BceWithLogitsForward(kCpu, z, y, w.defined() ? w.cview() : ConstTensorView(), loss);
  return test::AsDoubles(loss)[0];
}

TEST(BceLossTest, ClosedForm) {
  // z = 0: ℓ = ln 2 for any label; z = ln 3, y = 1: ℓ = ln(4/3); z = ln 3, y = 0: ℓ = ln 4.
  const Tensor z = Tensor::FromVector<double>({0, 0, std::log(3.0), std::log(3.0)}, Shape{4});
  const Tensor y = Tensor::FromVector<double>({1, 0, 1, 0}, Shape{4});
  const double want = (2 * std::log(2.0) + std::log(4.0 / 3) + std::log(4.0)) / 4;
  EXPECT_NEAR(Loss(z, y, Tensor()), want, 4e-16);
  Tensor grad = Tensor::Empty(z.spec());
  BceWithLogitsBackward(kCpu, 1.0, z, y, ConstTensorView(), grad);
  const std::vector<double> g = grad.ToVector<double>();
  EXPECT_NEAR(g[0], (0.5 - 1) / 4, 1e-16);
  EXPECT_NEAR(g[1], 0.5 / 4, 1e-16);
  EXPECT_NEAR(g[2], (0.75 - 1) / 4, 1e-16);
  EXPECT_NEAR(g[3], 0.75 / 4, 1e-16);
}

TEST(BceLossTest, ExtremeLogitsAreStable) {
  for (DType dt : {DType::kF32, DType::kF64}) {
    // Confident and right: ℓ ≈ e^-|z|; confident and wrong: ℓ ≈ |z|.
    const Tensor z = test::FromDoubles({100, -100, 100, -100}, Shape{4, 1}, dt);
    const Tensor y = test::FromDoubles({1, 0, 0, 1}, Shape{4, 1}, dt);
    EXPECT_NEAR(Loss(z, y, Tensor()), (2 * std::exp(-100.0) + 200) / 4, 1e-5);
    Tensor grad = Tensor::Empty(z.spec());
    BceWithLogitsBackward(kCpu, 1.0, z, y, ConstTensorView(), grad);
    const std::vector<double> g = test::AsDoubles(grad);
    EXPECT_NEAR(g[0], 0.0, 1e-30);
    EXPECT_NEAR(g[2], 0.25, 1e-7);
    EXPECT_NEAR(g[3], -0.25, 1e-7);
  }
}

TEST(BceLossTest, WeightsScaleSamplesAndGradScaleScalesGradients) {
  const Tensor z = test::Random(Shape{50}, DType::kF64, 1, -4, 4);
  const Tensor y = test::Random(Shape{50}, DType::kF64, 2, 0, 1);  // soft labels
  const Tensor w = test::Random(Shape{50}, DType::kF64, 3, 0, 2);
  const std::vector<double> zv = z.ToVector<double>(), yv = y.ToVector<double>(),
                            wv = w.ToVector<double>();
  double want = 0;
  for (int i = 0; i < 50; ++i) {
    want += wv[i] * (std::log1p(std::exp(zv[i])) - yv[i] * zv[i]);
  }
  EXPECT_NEAR(Loss(z, y, w), want / 50, 1e-14);
  Tensor grad = Tensor::Empty(z.spec());
  BceWithLogitsBackward(kCpu, 3.0, z, y, w, grad);
  const std::vector<double> g = grad.ToVector<double>();
  for (int i = 0; i < 50; ++i) {
    EXPECT_NEAR(g[i], 3.0 * wv[i] * (1 / (1 + std::exp(-zv[i])) - yv[i]) / 50, 1e-16);
  }
}

TEST(BceLossTest, F32AgreesWithF64) {
  const Tensor z = test::Random(Shape{4096}, DType::kF32, 4, -10, 10);
  const Tensor y = test::Cast(test::Random(Shape{4096}, DType::kF64, 5, 0, 1.99), DType::kF32);
  const double l32 = Loss(z, y, Tensor());
  const double l64 = Loss(test::Cast(z, DType::kF64), test::Cast(y, DType::kF64), Tensor());
  EXPECT_NEAR(l32, l64, 1e-6 * l64);
}

TEST(BceLossTest, ValidationNamesTheArgument) {
  const TensorSpec z{Shape{8}, DType::kF32};
  Status s = ValidateBceWithLogits(z, TensorSpec{Shape{7}, DType::kF32}, TensorSpec{});
  EXPECT_NE(s.message().find("labels f32(7)"), std::string::npos) << s;
  s = ValidateBceWithLogits(z, TensorSpec{Shape{8, 1}, DType::kF32},
                            TensorSpec{Shape{8}, DType::kF64});
  EXPECT_NE(s.message().find("weights f64(8) must be f32"), std::string::npos) << s;
  EXPECT_TRUE(ValidateBceWithLogits(z, TensorSpec{Shape{8, 1}, DType::kF32}, TensorSpec{}).ok());
}

}  // namespace
}  // namespace loom::ops
