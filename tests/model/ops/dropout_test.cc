// Dropout: the Philox definition element by element, rate, determinism, backward mask.
#include "csrc/model/ops/dropout.h"

#include <cmath>
#include <vector>

#include <gtest/gtest.h>

#include "csrc/core/philox.h"
#include "csrc/core/rng.h"
#include "tests/model/ops/ops_test_util.h"

namespace loom::ops {
namespace {

using test::kCpu;

DropoutArgs Args(float p, uint64_t step) {
  DropoutArgs a;
  a.p = p;
  a.seed = 42;
  a.stream = MakeStream(kRngDropout, /*site=*/3, step);
  return a;
}

TEST(DropoutTest, FollowsThePhiloxDefinitionExactly) {
  const int64_t n = 4099;  // not a multiple of 4: the last Philox block is partial
  const Tensor x = test::Random(Shape{n}, DType::kF32, 1, 0.5, 2.0);
  Tensor y = Tensor::Empty(x.spec());
  const DropoutArgs args = Args(0.3f, 7);
  DropoutForward(kCpu, args, x, y);
  const float scale = static_cast<float>(1.0 / (1.0 - 0.3f));
  const std::vector<float> xv = x.ToVector<float>(), yv = y.ToVector<float>();
  for (int64_t i = 0; i < n; ++i) {
    const bool keep = !(PhiloxUniform(args.seed, args.stream, static_cast<uint64_t>(i)) < 0.3f);
    EXPECT_EQ(yv[i], keep ? xv[i] * scale : 0.0f) << i;
  }
}

TEST(DropoutTest, RateIsPAndMaskIsDeterministic) {
  const int64_t n = 1 << 20;
  for (float p : {0.1f, 0.5f, 0.9f}) {
    Tensor keep = Tensor::Empty(Shape{n}, DType::kU8), again = Tensor::Empty(Shape{n}, DType::kU8);
    DropoutMask(kCpu, Args(p, 1), keep);
    DropoutMask(kCpu, Args(p, 1), again);
    EXPECT_EQ(keep.ToVector<uint8_t>(), again.ToVector<uint8_t>());
    int64_t kept = 0;
    for (uint8_t k : keep.ToVector<uint8_t>()) kept += k;
    const double rate = 1.0 - static_cast<double>(kept) / n;
    const double sigma = std::sqrt(p * (1 - p) / n);
    EXPECT_NEAR(rate, p, 5 * sigma) << "p = " << p;
    // Another step draws another mask.
    Tensor other = Tensor::Empty(Shape{n}, DType::kU8);
    DropoutMask(kCpu, Args(p, 2), other);
    EXPECT_NE(other.ToVector<uint8_t>(), keep.ToVector<uint8_t>());
  }
}

TEST(DropoutTest, MeanIsPreservedAndBackwardUsesTheSameMask) {
  const int64_t n = 1 << 18;
  const Tensor ones = Tensor::FromVector<double>(std::vector<double>(n, 1.0), Shape{n});
  Tensor y = Tensor::Empty(ones.spec()), gx = Tensor::Empty(ones.spec());
  const DropoutArgs args = Args(0.25f, 3);
  DropoutForward(kCpu, args, ones, y);
  DropoutBackward(kCpu, args, ones, gx);
  EXPECT_EQ(y.ToVector<double>(), gx.ToVector<double>());  // linear map, same mask
  double mean = 0;
  for (double v : y.ToVector<double>()) mean += v / n;
  EXPECT_NEAR(mean, 1.0, 5 * std::sqrt(0.25 / 0.75 / n));
}

TEST(DropoutTest, ZeroProbabilityIsIdentityAndInPlaceWorks) {
  const Tensor x = test::Random(Shape{77}, DType::kF32, 2);
  Tensor y = Tensor::Empty(x.spec());
  DropoutForward(kCpu, Args(0.0f, 0), x, y);
  EXPECT_EQ(y.ToVector<float>(), x.ToVector<float>());
  Tensor inplace = x.To(Device::Cpu()), out = Tensor::Empty(x.spec());
  DropoutForward(kCpu, Args(0.5f, 0), x, out);
  DropoutForward(kCpu, Args(0.5f, 0), inplace, inplace);
  EXPECT_EQ(inplace.ToVector<float>(), out.ToVector<float>());
}

TEST(DropoutTest, DoesNotDependOnThreadCountOrDtype) {
  const Tensor x = test::Random(Shape{100000}, DType::kF32, 3);
  Tensor y32 = Tensor::Empty(x.spec()), y64 = Tensor::Empty(Shape{100000}, DType::kF64);
  DropoutForward(kCpu, Args(0.4f, 9), x, y32);
  DropoutForward(kCpu, Args(0.4f, 9), test::Cast(x, DType::kF64), y64);
  const std::vector<double> a = test::AsDoubles(y32), b = test::AsDoubles(y64);
  for (size_t i = 0; i < a.size(); ++i) ASSERT_EQ(a[i] == 0.0, b[i] == 0.0) << i;
}

TEST(DropoutTest, RejectsBadProbability) {
  EXPECT_FALSE(ValidateDropout(Args(1.0f, 0), TensorSpec{Shape{3}, DType::kF32}).ok());
  EXPECT_FALSE(ValidateDropout(Args(-0.1f, 0), TensorSpec{Shape{3}, DType::kF32}).ok());
  EXPECT_TRUE(ValidateDropout(Args(0.99f, 0), TensorSpec{Shape{3}, DType::kF32}).ok());
}

}  // namespace
}  // namespace loom::ops
