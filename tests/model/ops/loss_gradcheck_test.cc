// Gradient checks (double, CPU) of BCE-with-logits and Dropout.
#include <gtest/gtest.h>

#include "csrc/core/philox.h"
#include "csrc/core/rng.h"
#include "csrc/model/ops/bce_loss.h"
#include "csrc/model/ops/dropout.h"
#include "tests/model/ops/ops_test_util.h"
#include "tests/testing/gradcheck.h"

namespace loom::ops {
namespace {

using loom::testing::CheckGradients;
using loom::testing::GradCheckResult;

TEST(BceLossGradTest, BackwardMatchesFiniteDifferences) {
  Tensor z = test::Random(Shape{37, 1}, DType::kF64, 1, -6, 6);
  const Tensor y = test::Random(Shape{37, 1}, DType::kF64, 2, 0, 1);
  const Tensor w = test::Random(Shape{37}, DType::kF64, 3, 0.1, 2);
  for (bool weighted : {false, true}) {
    Tensor loss = Tensor::Empty(Shape{1}, DType::kF64), grad = Tensor::Empty(z.spec());
    const ConstTensorView wv = weighted ? w.cview() : ConstTensorView();
    auto forward = [&] { BceWithLogitsForward(test::kCpu, z, y, wv, loss); };
    auto backward = [&](const std::vector<Tensor>& g) {
      BceWithLogitsBackward(test::kCpu, g[0].ToVector<double>()[0], z, y, wv, grad);
    };
    const GradCheckResult r = CheckGradients({{"logits", z, grad}}, {loss}, forward, backward);
    EXPECT_TRUE(r.ok) << (weighted ? "weighted: " : "") << r.ToString();
  }
}

TEST(DropoutGradTest, BackwardMatchesFiniteDifferences) {
  Tensor x = test::Random(Shape{5, 41}, DType::kF64, 4);
  Tensor y = Tensor::Empty(x.spec()), gx = Tensor::Empty(x.spec());
  DropoutArgs args;
  args.p = 0.3f;
  args.seed = 11;
  args.stream = MakeStream(kRngDropout, 1, 1);
  auto forward = [&] { DropoutForward(test::kCpu, args, x, y); };
  auto backward = [&](const std::vector<Tensor>& g) {
    DropoutBackward(test::kCpu, args, g[0], gx);
  };
  const GradCheckResult r = CheckGradients({{"x", x, gx}}, {y}, forward, backward);
  EXPECT_TRUE(r.ok) << r.ToString();
}

}  // namespace
}  // namespace loom::ops
