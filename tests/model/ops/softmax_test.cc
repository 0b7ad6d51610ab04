// Softmax: closed forms, masks (additive, key, fully masked rows), stability, f32 vs f64.
#include "csrc/model/ops/softmax.h"

#include <cmath>
#include <limits>
#include <vector>

#include <gtest/gtest.h>

#include "tests/model/ops/ops_test_util.h"

namespace loom::ops {
namespace {

using test::kCpu;
using test::Random;

std::vector<double> Softmax(const SoftmaxArgs& args, const Tensor& x, const Tensor& add,
                            const Tensor& keep) {
  Tensor y = Tensor::Empty(x.spec());
  SoftmaxForward(kCpu, args, x, add.defined() ? add.cview() : ConstTensorView(),
                 keep.defined() ? keep.cview() : ConstTensorView(), y);
  return test::AsDoubles(y);
}

TEST(SoftmaxTest, ClosedForm) {
  // exp of [0, ln 2, ln 3] is [1, 2, 3].
  const Tensor x = Tensor::FromVector<double>({0, std::log(2.0), std::log(3.0)}, Shape{1, 3});
  const std::vector<double> y = Softmax(SoftmaxArgs{}, x, Tensor(), Tensor());
  EXPECT_NEAR(y[0], 1.0 / 6, 1e-16);
  EXPECT_NEAR(y[1], 2.0 / 6, 1e-16);
  EXPECT_NEAR(y[2], 3.0 / 6, 1e-16);
  // scale 2 squares the weights: [1, 4, 9] / 14.
  const std::vector<double> y2 = Softmax(SoftmaxArgs{2.0f}, x, Tensor(), Tensor());
  EXPECT_NEAR(y2[1], 4.0 / 14, 1e-15);
}

TEST(SoftmaxTest, HugeLogitsDoNotOverflow) {
  const Tensor x =
      Tensor::FromVector<float>({1000.0f, 1000.0f + std::log(3.0f), -1000.0f}, Shape{1, 3});
  const std::vector<double> y = Softmax(SoftmaxArgs{}, x, Tensor(), Tensor());
  // The stored logits differ by d = fl(1000 + ln 3) − 1000 (exact in f32), not by ln 3.
  const double d = static_cast<double>(x.ToVector<float>()[1]) - 1000.0;
  EXPECT_NEAR(y[0], 1 / (1 + std::exp(d)), 1e-7);
  EXPECT_NEAR(y[1], std::exp(d) / (1 + std::exp(d)), 1e-7);
  EXPECT_EQ(y[2], 0.0);
}

TEST(SoftmaxTest, MasksBroadcastAndFullyMaskedRowsAreZero) {
  // x (B=2, H=2, Tq=3, Tk=4); additive mask (Tq, Tk) shared by b, h; key mask (B, Tk).
  const int64_t b = 2, h = 2, tq = 3, tk = 4;
  const Tensor x = Random(Shape{b, h, tq, tk}, DType::kF64, 1, -2, 2);
  const Tensor add = Random(Shape{tq, tk}, DType::kF64, 2, -1, 1);
  const Tensor keep = test::FromDoubles({1, 0, 1, 1,   // batch 0: key 1 padded
                                         0, 0, 0, 0},  // batch 1: no valid key
                                        Shape{b, tk}, DType::kU8);
  const SoftmaxArgs args{0.5f};
  const std::vector<double> y = Softmax(args, x, add, keep);
  const std::vector<double> xv = test::AsDoubles(x), av = test::AsDoubles(add);
  const std::vector<double> kv = test::AsDoubles(keep);
  for (int64_t r = 0; r < b * h * tq; ++r) {
    const int64_t bb = r / (h * tq), q = r % tq;
    double z[4], m = -INFINITY, s = 0;
    for (int64_t j = 0; j < tk; ++j) {
      z[j] = kv[bb * tk + j] ? 0.5 * xv[r * tk + j] + av[q * tk + j] : -INFINITY;
      m = std::max(m, z[j]);
    }
    for (int64_t j = 0; j < tk; ++j) s += std::isinf(z[j]) ? 0 : std::exp(z[j] - m);
    for (int64_t j = 0; j < tk; ++j) {
      const double want = std::isinf(m) || std::isinf(z[j]) ? 0.0 : std::exp(z[j] - m) / s;
      EXPECT_NEAR(y[r * tk + j], want, 1e-15) << "row " << r << " key " << j;
    }
  }
  for (int64_t i = b * h * tq / 2 * tk; i < b * h * tq * tk; ++i) EXPECT_EQ(y[i], 0.0);
}

TEST(SoftmaxTest, MinusInfinityAdditiveMaskActsLikeAKeyMask) {
  const Tensor x = Random(Shape{4, 5}, DType::kF32, 3);
  const float inf = std::numeric_limits<float>::infinity();
  const Tensor add = Tensor::FromVector<float>({0, -inf, 0, 0, -inf}, Shape{1, 5});
  const Tensor keep = test::FromDoubles({1, 0, 1, 1, 0}, Shape{1, 5}, DType::kU8);
  EXPECT_EQ(Softmax(SoftmaxArgs{}, x, add, Tensor()), Softmax(SoftmaxArgs{}, x, Tensor(), keep));
  const Tensor all_inf = Tensor::FromVector<float>({-inf, -inf, -inf, -inf, -inf}, Shape{1, 5});
  for (double v : Softmax(SoftmaxArgs{}, x, all_inf, Tensor())) EXPECT_EQ(v, 0.0);
}

TEST(SoftmaxTest, BackwardClosedFormAndConventions) {
  // With grad_y = y's own row constant c, grad_x = scale·y·(c − c·Σy) = 0.
  const Tensor x = Random(Shape{3, 6}, DType::kF64, 4);
  Tensor y = Tensor::Empty(x.spec());
  SoftmaxForward(kCpu, SoftmaxArgs{}, x, ConstTensorView(), ConstTensorView(), y);
  const Tensor c = Tensor::FromVector<double>(std::vector<double>(18, 2.5), Shape{3, 6});
  Tensor gx = Random(Shape{3, 6}, DType::kF64, 5);
  SoftmaxBackward(kCpu, SoftmaxArgs{}, c, y, gx);
  for (double v : gx.ToVector<double>()) EXPECT_NEAR(v, 0.0, 1e-15);
}

TEST(SoftmaxTest, F32AgreesWithF64) {
  const Tensor x = Random(Shape{64, 100}, DType::kF32, 6, -6, 6);
  const Tensor gy = Random(Shape{64, 100}, DType::kF32, 7);
  const Tensor keep = test::Cast(Random(Shape{8, 100}, DType::kF64, 8, 0.0, 1.99), DType::kU8);
  Tensor out[2][2];
  for (int k = 0; k < 2; ++k) {
    const DType dt = k == 0 ? DType::kF32 : DType::kF64;
    const Tensor xk = test::Cast(x, dt), gk = test::Cast(gy, dt);
    Tensor y = Tensor::Empty(xk.spec()), gx = Tensor::Empty(xk.spec());
    SoftmaxForward(kCpu, SoftmaxArgs{0.125f}, xk, ConstTensorView(), keep, y);
    SoftmaxBackward(kCpu, SoftmaxArgs{0.125f}, gk, y, gx);
    out[k][0] = y;
    out[k][1] = gx;
  }
  LOOM_EXPECT_REL_NEAR(out[0][0], out[1][0], 1e-6);
  LOOM_EXPECT_REL_NEAR(out[0][1], out[1][1], 1e-6);
}

TEST(SoftmaxTest, ValidationNamesTheMask) {
  const TensorSpec x{Shape{2, 3, 4}, DType::kF32};
  Status s = ValidateSoftmax(SoftmaxArgs{}, x, TensorSpec{Shape{4, 4}, DType::kF32}, TensorSpec{});
  EXPECT_NE(s.message().find("additive_mask f32(4, 4)"), std::string::npos) << s;
  s = ValidateSoftmax(SoftmaxArgs{}, x, TensorSpec{}, TensorSpec{Shape{2, 4}, DType::kF32});
  EXPECT_NE(s.message().find("key_mask f32(2, 4) must be u8"), std::string::npos) << s;
  EXPECT_TRUE(ValidateSoftmax(SoftmaxArgs{}, x, TensorSpec{Shape{3, 4}, DType::kF32},
                              TensorSpec{Shape{2, 4}, DType::kU8})
                  .ok());
}

}  // namespace
}  // namespace loom::ops
