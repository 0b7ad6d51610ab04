// RoPE: closed forms, layouts, inverse, norm preservation, position offset, f32 vs f64.
#include "csrc/model/ops/rope.h"

#include <cmath>
#include <vector>

#include <gtest/gtest.h>

#include "tests/model/ops/ops_test_util.h"

namespace loom::ops {
namespace {

using test::kCpu;
using test::Random;

TEST(RopeTest, ClosedFormAngles) {
  // (B·H = 1, T = 3, hd = 4), base 100: pair 0 turns by p rad, pair 1 by p/10 rad.
  const Tensor x = Tensor::FromVector<double>({1, 0, 0, 1, 1, 0, 0, 1, 2, 3, 4, 5}, Shape{1, 3, 4});
  Tensor y = Tensor::Empty(x.spec());
  RopeForward(kCpu, RopeArgs{100.0, 0}, x, y);
  const std::vector<double> v = y.ToVector<double>();
  // position 0: identity
  EXPECT_EQ(std::vector<double>(v.begin(), v.begin() + 4), (std::vector<double>{1, 0, 0, 1}));
  // position 1: (1,0) by 1 rad -> (cos 1, sin 1); (0,1) by 0.1 rad -> (−sin .1, cos .1)
  EXPECT_NEAR(v[4], std::cos(1.0), 1e-15);
  EXPECT_NEAR(v[5], std::sin(1.0), 1e-15);
  EXPECT_NEAR(v[6], -std::sin(0.1), 1e-15);
  EXPECT_NEAR(v[7], std::cos(0.1), 1e-15);
  // position 2: (2,3) by 2 rad
  EXPECT_NEAR(v[8], 2 * std::cos(2.0) - 3 * std::sin(2.0), 1e-14);
  EXPECT_NEAR(v[9], 2 * std::sin(2.0) + 3 * std::cos(2.0), 1e-14);
  EXPECT_NEAR(v[10], 4 * std::cos(0.2) - 5 * std::sin(0.2), 1e-14);
  EXPECT_NEAR(v[11], 4 * std::sin(0.2) + 5 * std::cos(0.2), 1e-14);
}

TEST(RopeTest, HeadsInterleavedLayoutMatchesSplitLayout) {
  // (B, T, H, hd) and the same data transposed to (B·H, T, hd) rotate identically.
  const int64_t b = 3, t = 5, h = 2, hd = 8;
  const Tensor x4 = Random(Shape{b, t, h, hd}, DType::kF64, 1);
  const std::vector<double> xv = x4.ToVector<double>();
  std::vector<double> split(xv.size());
  auto at4 = [&](int64_t i, int64_t j, int64_t k, int64_t e) {
    return ((i * t + j) * h + k) * hd + e;
  };
  auto at3 = [&](int64_t i, int64_t j, int64_t k, int64_t e) {
    return ((i * h + k) * t + j) * hd + e;
  };
  for (int64_t i = 0; i < b; ++i)
    for (int64_t j = 0; j < t; ++j)
      for (int64_t k = 0; k < h; ++k)
        for (int64_t e = 0; e < hd; ++e) split[at3(i, j, k, e)] = xv[at4(i, j, k, e)];
  const Tensor x3 = Tensor::FromVector(split, Shape{b * h, t, hd});
  Tensor y4 = Tensor::Empty(x4.spec()), y3 = Tensor::Empty(x3.spec());
  const RopeArgs args{10000.0, 3};
  RopeForward(kCpu, args, x4, y4);
  RopeForward(kCpu, args, x3, y3);
  const std::vector<double> v4 = y4.ToVector<double>(), v3 = y3.ToVector<double>();
  for (int64_t i = 0; i < b; ++i)
    for (int64_t j = 0; j < t; ++j)
      for (int64_t k = 0; k < h; ++k)
        for (int64_t e = 0; e < hd; ++e) EXPECT_EQ(v4[at4(i, j, k, e)], v3[at3(i, j, k, e)]);
}

TEST(RopeTest, BackwardInvertsForwardAndNormsArePreserved) {
  const Tensor x = Random(Shape{4, 70, 2, 16}, DType::kF64, 2);
  Tensor y = Tensor::Empty(x.spec()), back = Tensor::Empty(x.spec());
  const RopeArgs args{10000.0, 5};
  RopeForward(kCpu, args, x, y);
  RopeBackward(kCpu, args, y, back);
  EXPECT_LE(test::MaxAbsDiff(back.ToVector<double>(), x.ToVector<double>()), 1e-15);
  const std::vector<double> xv = x.ToVector<double>(), yv = y.ToVector<double>();
  for (size_t i = 0; i < xv.size(); i += 2) {
    EXPECT_NEAR(xv[i] * xv[i] + xv[i + 1] * xv[i + 1], yv[i] * yv[i] + yv[i + 1] * yv[i + 1],
                1e-15);
  }
}

TEST(RopeTest, PositionOffsetShiftsPositions) {
  // Tokens 2.. of a sequence rotated from 0 equal a sequence rotated from offset 2.
  const Tensor x = Random(Shape{2, 6, 8}, DType::kF64, 3);
  Tensor full = Tensor::Empty(x.spec());
  RopeForward(kCpu, RopeArgs{}, x, full);
  const std::vector<double> xv = x.ToVector<double>(), fv = full.ToVector<double>();
  std::vector<double> tail_in, tail_want;
  for (int64_t o = 0; o < 2; ++o) {
    for (int64_t j = 2 * 8; j < 6 * 8; ++j) {
      tail_in.push_back(xv[o * 48 + j]);
      tail_want.push_back(fv[o * 48 + j]);
    }
  }
  const Tensor tail = Tensor::FromVector(tail_in, Shape{2, 4, 8});
  Tensor out = Tensor::Empty(tail.spec());
  RopeForward(kCpu, RopeArgs{10000.0, 2}, tail, out);
  EXPECT_EQ(out.ToVector<double>(), tail_want);
}

TEST(RopeTest, F32AgreesWithF64AtLongPositions) {
  // Positions up to ~1100: double angles keep f32 within rounding of the f64 result.
  const Tensor x = Random(Shape{2, 100, 4, 32}, DType::kF32, 4);
  Tensor y32 = Tensor::Empty(x.spec());
  Tensor y64 = Tensor::Empty(Shape{2, 100, 4, 32}, DType::kF64);
  const RopeArgs args{10000.0, 1000};
  RopeForward(kCpu, args, x, y32);
  RopeForward(kCpu, args, test::Cast(x, DType::kF64), y64);
  LOOM_EXPECT_REL_NEAR(y32, y64, 5e-7);
}

TEST(RopeTest, InPlace) {
  const Tensor x = Random(Shape{3, 9, 6}, DType::kF32, 5);
  Tensor y = Tensor::Empty(x.spec()), z = x.To(Device::Cpu());
  RopeForward(kCpu, RopeArgs{}, x, y);
  RopeForward(kCpu, RopeArgs{}, z, z);
  EXPECT_EQ(z.ToVector<float>(), y.ToVector<float>());
}

TEST(RopeTest, ValidationRejectsOddHeadDim) {
  Status s = ValidateRope(RopeArgs{}, TensorSpec{Shape{2, 3, 5}, DType::kF32});
  EXPECT_NE(s.message().find("must be even"), std::string::npos) << s;
  s = ValidateRope(RopeArgs{}, TensorSpec{Shape{2, 3}, DType::kF32});
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(ValidateRope(RopeArgs{}, TensorSpec{Shape{2, 3, 4, 6}, DType::kF32}).ok());
}

}  // namespace
}  // namespace loom::ops
