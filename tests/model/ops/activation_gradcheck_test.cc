// Gradient checks (double, CPU) of every activation, from the saved input and output.
#include <gtest/gtest.h>

#include "csrc/model/ops/activation.h"
#include "tests/model/ops/ops_test_util.h"
#include "tests/testing/gradcheck.h"

namespace loom::ops {
namespace {

using loom::testing::CheckGradients;
using loom::testing::GradCheckResult;

struct Case {
  Activation act;
  ActivationSaved saved;
};

class ActivationGradTest : public ::testing::TestWithParam<Case> {};

TEST_P(ActivationGradTest, BackwardMatchesFiniteDifferences) {
  const auto [act, saved] = GetParam();
  // |x| >= 0.05 keeps ReLU's kink out of reach of the ±1e-6 steps.
  Tensor x = test::RandomAwayFromZero(Shape{6, 17}, DType::kF64, 1, 0.05, 5.0);
  Tensor y = Tensor::Empty(x.spec()), grad_x = Tensor::Empty(x.spec());
  auto forward = [&] { ActivationForward(test::kCpu, act, x, y); };
  auto backward = [&](const std::vector<Tensor>& g) {
    ActivationBackward(test::kCpu, act, saved, g[0], saved == ActivationSaved::kInput ? x : y,
                       grad_x);
  };
  const GradCheckResult r = CheckGradients({{"x", x, grad_x}}, {y}, forward, backward);
  EXPECT_TRUE(r.ok) << ActivationName(act) << ": " << r.ToString();
}

INSTANTIATE_TEST_SUITE_P(All, ActivationGradTest,
                         ::testing::Values(Case{Activation::kIdentity, ActivationSaved::kInput},
                                           Case{Activation::kIdentity, ActivationSaved::kOutput},
                                           Case{Activation::kRelu, ActivationSaved::kInput},
                                           Case{Activation::kRelu, ActivationSaved::kOutput},
                                           Case{Activation::kSilu, ActivationSaved::kInput},
                                           Case{Activation::kSigmoid, ActivationSaved::kInput},
                                           Case{Activation::kSigmoid, ActivationSaved::kOutput},
                                           Case{Activation::kTanh, ActivationSaved::kInput},
                                           Case{Activation::kTanh, ActivationSaved::kOutput}));

}  // namespace
}  // namespace loom::ops
