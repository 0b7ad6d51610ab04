// The gradient checker itself (tests/testing/gradcheck.h): it must pass right gradients and
// catch wrong values and wrong conventions, naming the element.
#include "tests/testing/gradcheck.h"

#include <cmath>

#include <gtest/gtest.h>

#include "tests/model/ops/ops_test_util.h"

namespace loom::testing {
namespace {

// f(x, w) = (x² ⊙ w, sin x): grad_x = r0 ⊙ 2x ⊙ w + r1 ⊙ cos x; grad_w = r0 ⊙ x².
struct Problem {
  Tensor x = ops::test::Random(Shape{3, 4}, DType::kF64, 1);
  Tensor w = ops::test::Random(Shape{3, 4}, DType::kF64, 2);
  Tensor f0 = Tensor::Empty(Shape{3, 4}, DType::kF64);
  Tensor f1 = Tensor::Empty(Shape{3, 4}, DType::kF64);
  Tensor gx = Tensor::Empty(Shape{3, 4}, DType::kF64);
  Tensor gw = Tensor::Empty(Shape{3, 4}, DType::kF64);

  void Forward() {
    for (int i = 0; i < 12; ++i) {
      const double xv = x.data<double>()[i];
      f0.data<double>()[i] = xv * xv * w.data<double>()[i];
      f1.data<double>()[i] = std::sin(xv);
    }
  }
  // wrong_at: an element whose grad_x is perturbed by 1e-4 relative (−1: none).
  void Backward(const std::vector<Tensor>& g, bool accumulate_x, bool accumulate_w, int wrong_at) {
    for (int i = 0; i < 12; ++i) {
      const double xv = x.data<double>()[i];
      double dx = g[0].data<double>()[i] * 2 * xv * w.data<double>()[i] +
                  g[1].data<double>()[i] * std::cos(xv);
      if (i == wrong_at) dx *= 1.0001;
      const double dw = g[0].data<double>()[i] * xv * xv;
      gx.data<double>()[i] = accumulate_x ? gx.data<double>()[i] + dx : dx;
      gw.data<double>()[i] = accumulate_w ? gw.data<double>()[i] + dw : dw;
    }
  }
};

TEST(GradCheckTest, PassesRightGradientsAndChecksEveryElement) {
  Problem p;
  const GradCheckResult r = CheckGradients(
      {{"x", p.x, p.gx}, {"w", p.w, p.gw, GradMode::kAccumulate}}, {p.f0, p.f1},
      [&] { p.Forward(); }, [&](const std::vector<Tensor>& g) { p.Backward(g, false, true, -1); });
  EXPECT_TRUE(r.ok) << r.ToString();
  EXPECT_EQ(r.checked, 24);
  EXPECT_LT(r.worst_ratio, 0.1) << r.ToString();
}

TEST(GradCheckTest, NamesTheWrongElement) {
  Problem p;
  const GradCheckResult r = CheckGradients(
      {{"x", p.x, p.gx}, {"w", p.w, p.gw, GradMode::kAccumulate}}, {p.f0, p.f1},
      [&] { p.Forward(); }, [&](const std::vector<Tensor>& g) { p.Backward(g, false, true, 6); });
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.worst_var, "x");
  EXPECT_EQ(r.worst_index, 6);
  EXPECT_EQ(r.worst_coords, "(1, 2)");
  EXPECT_NE(r.ToString().find("x[6] (1, 2)"), std::string::npos) << r.ToString();
}

TEST(GradCheckTest, CatchesConventionViolations) {
  Problem p;
  // x accumulates although it should be overwritten; w is overwritten instead of accumulated.
  const GradCheckResult r = CheckGradients(
      {{"x", p.x, p.gx}, {"w", p.w, p.gw, GradMode::kAccumulate}}, {p.f0, p.f1},
      [&] { p.Forward(); }, [&](const std::vector<Tensor>& g) { p.Backward(g, true, false, -1); });
  EXPECT_FALSE(r.ok);
  ASSERT_EQ(r.convention_failures.size(), 2u) << r.ToString();
  EXPECT_NE(r.convention_failures[0].find("x[0] (0, 0) should be overwritten"), std::string::npos);
  EXPECT_NE(r.convention_failures[1].find("should be accumulated"), std::string::npos);
}

TEST(GradCheckTest, LargeVariablesAreSampledAndRestored) {
  Tensor x = ops::test::Random(Shape{5000}, DType::kF64, 3);
  const std::vector<double> x0 = x.ToVector<double>();
  Tensor y = Tensor::Empty(x.spec()), gx = Tensor::Empty(x.spec());
  GradCheckOptions options;
  options.max_checks_per_var = 50;
  const GradCheckResult r = CheckGradients(
      {{"x", x, gx}}, {y},
      [&] {
        for (int i = 0; i < 5000; ++i) y.data<double>()[i] = 3 * x.data<double>()[i];
      },
      [&](const std::vector<Tensor>& g) {
        for (int i = 0; i < 5000; ++i) gx.data<double>()[i] = 3 * g[0].data<double>()[i];
      },
      options);
  EXPECT_TRUE(r.ok) << r.ToString();
  EXPECT_LE(r.checked, 50);
  EXPECT_GE(r.checked, 40);  // duplicates of the random sample are dropped
  EXPECT_EQ(x.ToVector<double>(), x0);
}

}  // namespace
}  // namespace loom::testing
