// Gradient check (double, CPU) of RoPE in both layouts.
#include <gtest/gtest.h>

#include "csrc/model/ops/rope.h"
#include "tests/model/ops/ops_test_util.h"
#include "tests/testing/gradcheck.h"

namespace loom::ops {
namespace {

using loom::testing::CheckGradients;
using loom::testing::GradCheckResult;

TEST(RopeGradTest, BackwardMatchesFiniteDifferences) {
  for (const Shape& shape : {Shape{2, 5, 3, 8}, Shape{6, 5, 8}}) {
    Tensor x = test::Random(shape, DType::kF64, 1);
    Tensor y = Tensor::Empty(x.spec()), gx = Tensor::Empty(x.spec());
    const RopeArgs args{500.0, 7};
    auto forward = [&] { RopeForward(test::kCpu, args, x, y); };
    auto backward = [&](const std::vector<Tensor>& g) { RopeBackward(test::kCpu, args, g[0], gx); };
    const GradCheckResult r = CheckGradients({{"x", x, gx}}, {y}, forward, backward);
    EXPECT_TRUE(r.ok) << shape.ToString() << ": " << r.ToString();
  }
}

}  // namespace
}  // namespace loom::ops
