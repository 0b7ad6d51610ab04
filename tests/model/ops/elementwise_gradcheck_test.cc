// Gradient checks (double, CPU) of Mul, Axpby, SumDim, MaskedMeanTokens and token concat.
#include <gtest/gtest.h>

#include "csrc/model/ops/elementwise.h"
#include "csrc/model/ops/reduce.h"
#include "csrc/model/ops/tokens.h"
#include "tests/model/ops/ops_test_util.h"
#include "tests/testing/gradcheck.h"

namespace loom::ops {
namespace {

using loom::testing::CheckGradients;
using loom::testing::GradCheckResult;
using test::kCpu;

TEST(ElementwiseGradTest, MulAndAxpby) {
  Tensor a = test::Random(Shape{3, 7}, DType::kF64, 1),
         b = test::Random(Shape{3, 7}, DType::kF64, 2);
  Tensor prod = Tensor::Empty(a.spec()), lin = Tensor::Empty(a.spec());
  Tensor ga = Tensor::Empty(a.spec()), gb = Tensor::Empty(a.spec()), tmp = Tensor::Empty(a.spec());
  auto forward = [&] {
    Mul(kCpu, a, b, prod);
    Axpby(kCpu, 2.0, a, -3.0, b, lin);
  };
  auto backward = [&](const std::vector<Tensor>& g) {
    MulBackward(kCpu, g[0], a, b, ga, gb);
    Axpy(kCpu, 2.0, g[1], ga);
    Axpy(kCpu, -3.0, g[1], gb);
    Scale(kCpu, 1.0, gb, tmp);  // exercise Scale; tmp is unused
  };
  const GradCheckResult r =
      CheckGradients({{"a", a, ga}, {"b", b, gb}}, {prod, lin}, forward, backward);
  EXPECT_TRUE(r.ok) << r.ToString();
}

TEST(ReduceGradTest, SumDimAndMaskedMean) {
  Tensor x = test::Random(Shape{4, 6, 5}, DType::kF64, 3);
  const Tensor mask =
      test::FromDoubles({1, 0, 1, 1, 0, 1, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 1},
                        Shape{4, 6}, DType::kU8);
  Tensor s = Tensor::Empty(Shape{4, 5}, DType::kF64), m = Tensor::Empty(Shape{4, 5}, DType::kF64);
  Tensor gx = Tensor::Empty(x.spec()), tmp = Tensor::Empty(x.spec());
  auto forward = [&] {
    SumDim(kCpu, SumDimArgs{1}, x, s);
    MaskedMeanTokens(kCpu, x, mask, m);
  };
  auto backward = [&](const std::vector<Tensor>& g) {
    SumDimBackward(kCpu, SumDimArgs{1}, g[0], gx);
    MaskedMeanTokensBackward(kCpu, g[1], mask, tmp);
    Add(kCpu, gx, tmp, gx);
  };
  const GradCheckResult r = CheckGradients({{"x", x, gx}}, {s, m}, forward, backward);
  EXPECT_TRUE(r.ok) << r.ToString();
}

TEST(TokensGradTest, ConcatBackwardIsSplit) {
  Tensor a = test::Random(Shape{2, 3, 4}, DType::kF64, 4),
         b = test::Random(Shape{2, 2, 4}, DType::kF64, 5);
  Tensor whole = Tensor::Empty(Shape{2, 5, 4}, DType::kF64);
  Tensor ga = Tensor::Empty(a.spec()), gb = Tensor::Empty(b.spec());
  auto forward = [&] { ConcatTokens(kCpu, {a, b}, whole); };
  auto backward = [&](const std::vector<Tensor>& g) { SplitTokens(kCpu, g[0], {ga, gb}); };
  const GradCheckResult r =
      CheckGradients({{"a", a, ga}, {"b", b, gb}}, {whole}, forward, backward);
  EXPECT_TRUE(r.ok) << r.ToString();
}

}  // namespace
}  // namespace loom::ops
