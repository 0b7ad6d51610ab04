// Element-wise arithmetic: closed forms, aliasing, Mul backward.
#include "csrc/model/ops/elementwise.h"

#include <cmath>
#include <vector>

#include <gtest/gtest.h>

#include "tests/model/ops/ops_test_util.h"

namespace loom::ops {
namespace {

using test::kCpu;

TEST(ElementwiseTest, ClosedForms) {
  const Tensor a = Tensor::FromVector<double>({1, 2, 3}, Shape{3});
  const Tensor b = Tensor::FromVector<double>({10, 20, 30}, Shape{3});
  Tensor out = Tensor::Empty(a.spec());
  Add(kCpu, a, b, out);
  EXPECT_EQ(out.ToVector<double>(), (std::vector<double>{11, 22, 33}));
  Axpby(kCpu, 2.0, a, -0.5, b, out);
  EXPECT_EQ(out.ToVector<double>(), (std::vector<double>{-3, -6, -9}));
  Mul(kCpu, a, b, out);
  EXPECT_EQ(out.ToVector<double>(), (std::vector<double>{10, 40, 90}));
  Scale(kCpu, -3.0, a, out);
  EXPECT_EQ(out.ToVector<double>(), (std::vector<double>{-3, -6, -9}));
  Axpy(kCpu, 0.5, b, out);  // out += 0.5 b
  EXPECT_EQ(out.ToVector<double>(), (std::vector<double>{2, 4, 6}));
}

TEST(ElementwiseTest, ScaleIgnoresNanInOutputAndInPlaceWorks) {
  const Tensor a = test::Random(Shape{100000}, DType::kF32, 1);
  Tensor out = test::FromDoubles(std::vector<double>(100000, std::nan("")), a.shape(), DType::kF32);
  Scale(kCpu, 2.0, a, out);
  for (double v : test::AsDoubles(out)) ASSERT_FALSE(std::isnan(v));
  Tensor x = a.To(Device::Cpu());
  Add(kCpu, x, x, x);  // x = 2a
  EXPECT_EQ(x.ToVector<float>(), out.ToVector<float>());
}

TEST(ElementwiseTest, MulBackwardAndSkippedGradients) {
  const Tensor a = test::Random(Shape{4, 5}, DType::kF64, 2);
  const Tensor b = test::Random(Shape{4, 5}, DType::kF64, 3);
  const Tensor g = test::Random(Shape{4, 5}, DType::kF64, 4);
  Tensor ga = Tensor::Empty(a.spec()), gb = Tensor::Empty(a.spec());
  MulBackward(kCpu, g, a, b, ga, gb);
  const std::vector<double> av = a.ToVector<double>(), bv = b.ToVector<double>(),
                            gv = g.ToVector<double>();
  for (int i = 0; i < 20; ++i) {
    EXPECT_EQ(ga.ToVector<double>()[i], gv[i] * bv[i]);
    EXPECT_EQ(gb.ToVector<double>()[i], gv[i] * av[i]);
  }
  Tensor only_b = Tensor::Empty(a.spec());
  MulBackward(kCpu, g, a, b, TensorView(), only_b);
  EXPECT_EQ(only_b.ToVector<double>(), gb.ToVector<double>());
}

TEST(ElementwiseTest, ValidationRejectsMismatch) {
  EXPECT_FALSE(
      ValidateElementwise(TensorSpec{Shape{3}, DType::kF32}, TensorSpec{Shape{4}, DType::kF32})
          .ok());
  EXPECT_FALSE(
      ValidateElementwise(TensorSpec{Shape{3}, DType::kF32}, TensorSpec{Shape{3}, DType::kF64})
          .ok());
  EXPECT_FALSE(
      ValidateElementwise(TensorSpec{Shape{3}, DType::kU8}, TensorSpec{Shape{3}, DType::kU8}).ok());
}

}  // namespace
}  // namespace loom::ops
