// Activations: closed-form values, stability at large |x|, and the two backward forms.
#include "csrc/model/ops/activation.h"

#include <cmath>
#include <limits>
#include <vector>

#include <gtest/gtest.h>

#include "tests/model/ops/ops_test_util.h"

namespace loom::ops {
namespace {

using test::kCpu;

std::vector<double> Apply(Activation act, const std::vector<double>& x, DType dtype) {
  const Tensor in = test::FromDoubles(x, Shape{static_cast<int64_t>(x.size())}, dtype);
  Tensor out = Tensor::Empty(in.spec());
  ActivationForward(kCpu, act, in, out);
  return test::AsDoubles(out);
}

TEST(ActivationTest, ClosedFormValues) {
  const std::vector<double> x = {-2.0, -0.5, 0.0, 0.5, 3.0};
  const double e = std::exp(1.0);
  EXPECT_EQ(Apply(Activation::kIdentity, x, DType::kF64), x);
  EXPECT_EQ(Apply(Activation::kRelu, x, DType::kF64), (std::vector<double>{0, 0, 0, 0.5, 3.0}));
  const std::vector<double> sig = Apply(Activation::kSigmoid, {0.0, 1.0, -1.0}, DType::kF64);
  EXPECT_EQ(sig[0], 0.5);
  EXPECT_NEAR(sig[1], e / (1 + e), 1e-16);
  EXPECT_NEAR(sig[2], 1 / (1 + e), 1e-16);
  const std::vector<double> silu = Apply(Activation::kSilu, {1.0, -1.0, 0.0}, DType::kF64);
  EXPECT_NEAR(silu[0], e / (1 + e), 1e-16);
  EXPECT_NEAR(silu[1], -1 / (1 + e), 1e-16);
  EXPECT_EQ(silu[2], 0.0);
  const std::vector<double> th = Apply(Activation::kTanh, {0.5, -2.0}, DType::kF64);
  EXPECT_NEAR(th[0], (e - 1) / (e + 1), 1e-15);  // tanh(1/2) = (e − 1)/(e + 1)
  EXPECT_NEAR(th[1], -(e * e * e * e - 1) / (e * e * e * e + 1), 1e-15);
}

TEST(ActivationTest, LargeInputsStayFinite) {
  const std::vector<double> x = {-1000.0, -90.0, 90.0, 1000.0};
  for (DType dtype : {DType::kF32, DType::kF64}) {
    const std::vector<double> sig = Apply(Activation::kSigmoid, x, dtype);
    EXPECT_EQ(sig[0], 0.0);
    // sigmoid(-90) = 8.2e-40: 0 in f32 (e^90 overflows), accurate in f64.
    if (dtype == DType::kF64) {
      EXPECT_NEAR(sig[1], std::exp(-90.0), 1e-15 * std::exp(-90.0));
    }
    EXPECT_EQ(sig[3], 1.0);
    const std::vector<double> silu = Apply(Activation::kSilu, x, dtype);
    EXPECT_EQ(silu[0], 0.0);
    EXPECT_EQ(silu[3], 1000.0);
    for (Activation act : {Activation::kSilu, Activation::kSigmoid, Activation::kTanh}) {
      for (double v : Apply(act, x, dtype)) EXPECT_TRUE(std::isfinite(v)) << ActivationName(act);
    }
  }
}

TEST(ActivationTest, BackwardFromInputAndOutputAgree) {
  const Tensor x = test::RandomAwayFromZero(Shape{4, 33}, DType::kF64, 1, 0.01, 4.0);
  const Tensor g = test::Random(Shape{4, 33}, DType::kF64, 2);
  for (Activation act :
       {Activation::kIdentity, Activation::kRelu, Activation::kSigmoid, Activation::kTanh}) {
    Tensor y = Tensor::Empty(x.spec()), from_in = Tensor::Empty(x.spec()),
           from_out = Tensor::Empty(x.spec());
    ActivationForward(kCpu, act, x, y);
    ActivationBackward(kCpu, act, ActivationSaved::kInput, g, x, from_in);
    ActivationBackward(kCpu, act, ActivationSaved::kOutput, g, y, from_out);
    EXPECT_LE(test::MaxAbsDiff(test::AsDoubles(from_in), test::AsDoubles(from_out)), 1e-15)
        << ActivationName(act);
  }
}

TEST(ActivationTest, InPlaceMatchesOutOfPlace) {
  const Tensor x = test::Random(Shape{1000}, DType::kF32, 3, -5, 5);
  const Tensor g = test::Random(Shape{1000}, DType::kF32, 4);
  Tensor y = Tensor::Empty(x.spec()), gx = Tensor::Empty(x.spec());
  ActivationForward(kCpu, Activation::kSilu, x, y);
  ActivationBackward(kCpu, Activation::kSilu, ActivationSaved::kInput, g, x, gx);
  Tensor inplace = x.To(Device::Cpu()), ginplace = g.To(Device::Cpu());
  ActivationForward(kCpu, Activation::kSilu, inplace, inplace);
  ActivationBackward(kCpu, Activation::kSilu, ActivationSaved::kInput, ginplace, x, ginplace);
  EXPECT_EQ(inplace.ToVector<float>(), y.ToVector<float>());
  EXPECT_EQ(ginplace.ToVector<float>(), gx.ToVector<float>());
}

TEST(ActivationTest, F32AgreesWithF64) {
  const Tensor x32 = test::Random(Shape{3000}, DType::kF32, 5, -8, 8);
  const Tensor x64 = test::Cast(x32, DType::kF64);
  for (Activation act :
       {Activation::kRelu, Activation::kSilu, Activation::kSigmoid, Activation::kTanh}) {
    Tensor y32 = Tensor::Empty(x32.spec()), y64 = Tensor::Empty(x64.spec());
    ActivationForward(kCpu, act, x32, y32);
    ActivationForward(kCpu, act, x64, y64);
    LOOM_EXPECT_REL_NEAR(y32, y64, 2e-7);
  }
}

TEST(ActivationTest, SiluHasNoOutputBasedBackward) {
  const TensorSpec x{Shape{3}, DType::kF32};
  EXPECT_FALSE(ValidateActivationBackward(Activation::kSilu, ActivationSaved::kOutput, x).ok());
  EXPECT_TRUE(ValidateActivationBackward(Activation::kSilu, ActivationSaved::kInput, x).ok());
  EXPECT_TRUE(ValidateActivationBackward(Activation::kTanh, ActivationSaved::kOutput, x).ok());
  EXPECT_FALSE(ValidateActivation(Activation::kRelu, TensorSpec{Shape{3}, DType::kI32}).ok());
}

}  // namespace
}  // namespace loom::ops
