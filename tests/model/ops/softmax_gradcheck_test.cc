// Gradient check (double, CPU) of Softmax with scale, additive and key masks.
#include <gtest/gtest.h>

#include "csrc/model/ops/softmax.h"
#include "tests/model/ops/ops_test_util.h"
#include "tests/testing/gradcheck.h"

namespace loom::ops {
namespace {

using loom::testing::CheckGradients;
using loom::testing::GradCheckResult;

TEST(SoftmaxGradTest, BackwardMatchesFiniteDifferences) {
  const int64_t b = 2, h = 3, tq = 4, tk = 7;
  Tensor x = test::Random(Shape{b, h, tq, tk}, DType::kF64, 1, -3, 3);
  const Tensor add = test::Random(Shape{tq, tk}, DType::kF64, 2);
  const Tensor keep = test::FromDoubles({1, 1, 0, 1, 1, 1, 0,   //
                                         0, 0, 0, 0, 0, 0, 0},  // batch 1 fully masked
                                        Shape{b, tk}, DType::kU8);
  Tensor y = Tensor::Empty(x.spec()), gx = Tensor::Empty(x.spec());
  const SoftmaxArgs args{0.37f};
  auto forward = [&] { SoftmaxForward(test::kCpu, args, x, add, keep, y); };
  auto backward = [&](const std::vector<Tensor>& g) {
    SoftmaxBackward(test::kCpu, args, g[0], y, gx);
  };
  const GradCheckResult r = CheckGradients({{"x", x, gx}}, {y}, forward, backward);
  EXPECT_TRUE(r.ok) << r.ToString();
}

}  // namespace
}  // namespace loom::ops
