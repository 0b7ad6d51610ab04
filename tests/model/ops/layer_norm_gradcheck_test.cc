// Gradient check (double, CPU) of LayerNorm: x (=), gamma and beta (+=).
#include <gtest/gtest.h>

#include "csrc/model/ops/layer_norm.h"
#include "tests/model/ops/ops_test_util.h"
#include "tests/testing/gradcheck.h"

namespace loom::ops {
namespace {

using loom::testing::CheckGradients;
using loom::testing::GradCheckResult;
using loom::testing::GradMode;

TEST(LayerNormGradTest, BackwardMatchesFiniteDifferences) {
  for (int64_t c : {1, 7, 64, 130}) {  // C = 1: every row is constant, grad_x = 0
    const int64_t r = 70;              // > kMinRowsPerChunk: several chunks
    Tensor x = test::Random(Shape{2, r / 2, c}, DType::kF64, 1, -2, 3);
    Tensor gamma = test::Random(Shape{c}, DType::kF64, 2, 0.5, 1.5);
    Tensor beta = test::Random(Shape{c}, DType::kF64, 3);
    Tensor y = Tensor::Empty(x.spec()), mean = Tensor::Empty(Shape{2, r / 2}, DType::kF64),
           rstd = Tensor::Empty(Shape{2, r / 2}, DType::kF64);
    Tensor gx = Tensor::Empty(x.spec()), gg = Tensor::Empty(gamma.spec()),
           gb = Tensor::Empty(beta.spec());
    const LayerNormArgs args{1e-5f};
    auto forward = [&] { LayerNormForward(test::kCpu, args, x, gamma, beta, y, mean, rstd); };
    auto backward = [&](const std::vector<Tensor>& g) {
      LayerNormBackward(test::kCpu, g[0], x, gamma, mean, rstd, gx, gg, gb);
    };
    const GradCheckResult res = CheckGradients({{"x", x, gx},
                                                {"gamma", gamma, gg, GradMode::kAccumulate},
                                                {"beta", beta, gb, GradMode::kAccumulate}},
                                               {y}, forward, backward);
    EXPECT_TRUE(res.ok) << "C = " << c << ": " << res.ToString();
  }
}

}  // namespace
}  // namespace loom::ops
