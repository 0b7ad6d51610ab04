// Gradient checks (f64, CPU) of Gating (GLU and the literal form with each σ, with and
// without the hidden layer) and MaskNet, plus closed-form forward checks.
#include <cmath>

#include <gtest/gtest.h>

#include "csrc/model/layers/gating.h"
#include "csrc/model/layers/masknet.h"
#include "tests/model/layers/layer_test_util.h"

namespace loom::layers {
namespace {

using MC = proto::ModelConfig;
using test::CopyOut;
using test::InitStore;
using test::kCpu;
using test::ParamVars;
using test::RandomF64;
using test::WithParams;
using testing::CheckGradients;
using testing::GradCheckResult;

struct GatingCase {
  MC::GatingForm form;
  MC::GatingActivation act;
  int64_t hidden;
};

class GatingGradTest : public ::testing::TestWithParam<GatingCase> {};

TEST_P(GatingGradTest, MatchesFiniteDifferences) {
  const GatingCase c = GetParam();
  model::ParameterStore store(DType::kF64);
  const TensorSpec in{Shape{3, 4, 6}, DType::kF64};
  GatingConfig gc{6, c.hidden, c.form, c.act};
  auto gate = Gating::Create(gc, in, &store, "cross.0.x_gate", Device::Cpu());
  ASSERT_TRUE(gate.ok()) << gate.status();
  const std::vector<std::string> want =
      c.hidden > 0
          ? std::vector<std::string>{"cross.0.x_gate.fc1.weight", "cross.0.x_gate.fc1.bias",
                                     "cross.0.x_gate.fc2.weight", "cross.0.x_gate.fc2.bias"}
          : std::vector<std::string>{"cross.0.x_gate.fc1.weight", "cross.0.x_gate.fc1.bias"};
  EXPECT_EQ(test::Names(store), want);
  InitStore(&store);
  ParamVars pv(&store);
  Tensor z = RandomF64(in.shape, 1), gz = Tensor::Empty(in), y = Tensor::Empty(in);
  auto fwd = [&] {
    pv.PushValues();
    CopyOut((*gate)->Forward(kCpu, z), y);
  };
  auto bwd = [&](const std::vector<Tensor>& g) {
    pv.PushGrads();
    (*gate)->Backward(kCpu, g[0], gz);
    pv.PullGrads();
  };
  fwd();
  if (c.hidden == 0) {
    // Closed form at one element: g = fc1(Z) for token (b=1, n=2), column 3.
    const double* w = store.parameters()[0].value.data<double>();
    const double* bias = store.parameters()[1].value.data<double>();
    const double* zr = z.data<double>() + (1 * 4 + 2) * 6;
    double g = bias[3];
    for (int i = 0; i < 6; ++i) g += w[3 * 6 + i] * zr[i];
    double want_y;
    if (c.form == MC::GATING_FORM_GLU) {
      want_y = zr[3] / (1.0 + std::exp(-g));
    } else {
      const double p = zr[3] * g;
      want_y = c.act == MC::GATING_ACTIVATION_SIGMOID ? 1.0 / (1.0 + std::exp(-p))
               : c.act == MC::GATING_ACTIVATION_TANH  ? std::tanh(p)
                                                      : p;
    }
    EXPECT_NEAR(y.data<double>()[(1 * 4 + 2) * 6 + 3], want_y, 1e-14);
  }
  const GradCheckResult r = CheckGradients(WithParams({{"z", z, gz}}, pv), {y}, fwd, bwd);
  EXPECT_TRUE(r.ok) << r.ToString();
}

INSTANTIATE_TEST_SUITE_P(
    Forms, GatingGradTest,
    ::testing::Values(GatingCase{MC::GATING_FORM_GLU, MC::GATING_ACTIVATION_SIGMOID, 0},
                      GatingCase{MC::GATING_FORM_GLU, MC::GATING_ACTIVATION_SIGMOID, 5},
                      GatingCase{MC::GATING_FORM_LITERAL, MC::GATING_ACTIVATION_SIGMOID, 0},
                      GatingCase{MC::GATING_FORM_LITERAL, MC::GATING_ACTIVATION_TANH, 0},
                      GatingCase{MC::GATING_FORM_LITERAL, MC::GATING_ACTIVATION_IDENTITY, 0},
                      GatingCase{MC::GATING_FORM_LITERAL, MC::GATING_ACTIVATION_TANH, 3}));

struct MaskNetCase {
  int64_t k;
  ops::Activation act;
  bool sigmoid;
};

class MaskNetGradTest : public ::testing::TestWithParam<MaskNetCase> {};

TEST_P(MaskNetGradTest, MatchesFiniteDifferences) {
  const MaskNetCase c = GetParam();
  model::ParameterStore store(DType::kF64);
  const int64_t b = 3, t = 4, d = 4;
  const TensorSpec in{Shape{b, t, d}, DType::kF64};
  MaskNetConfig mc{d, c.k, 2, c.act, c.sigmoid};
  auto mn = MaskNet::Create(mc, in, &store, "masknet", Device::Cpu());
  ASSERT_TRUE(mn.ok()) << mn.status();
  EXPECT_EQ(test::Names(store),
            (std::vector<std::string>{"masknet.mask1.weight", "masknet.mask1.bias",
                                      "masknet.mask2.weight", "masknet.mask2.bias",
                                      "masknet.lce.weight", "masknet.lce.bias"}));
  EXPECT_EQ(store.parameters()[0].shape, (Shape{c.k * d * 2, c.k * d}));
  InitStore(&store);
  ParamVars pv(&store);
  std::vector<testing::GradCheckVar> inputs;
  std::vector<ConstTensorView> seqs;
  std::vector<TensorView> grads;
  for (int64_t j = 0; j < c.k; ++j) {
    Tensor s = RandomF64(in.shape, 10 + j), g = Tensor::Empty(in);
    inputs.push_back({"seq." + std::to_string(j), s, g});
    seqs.push_back(s);
    grads.push_back(g);
  }
  Tensor y = Tensor::Empty(in);
  auto fwd = [&] {
    pv.PushValues();
    CopyOut((*mn)->Forward(kCpu, seqs), y);
  };
  auto bwd = [&](const std::vector<Tensor>& g) {
    pv.PushGrads();
    (*mn)->Backward(kCpu, g[0], grads);
    pv.PullGrads();
  };
  const GradCheckResult r = CheckGradients(WithParams(inputs, pv), {y}, fwd, bwd);
  EXPECT_TRUE(r.ok) << r.ToString();
}

// Packed positions: the listed rows equal the full computation, gradients are exact and zero
// at the positions not listed.
TEST(MaskNetPackedTest, MatchesFullAndGradients) {
  model::ParameterStore store(DType::kF64);
  const int64_t b = 3, t = 4, d = 4, k = 2;
  const TensorSpec in{Shape{b, t, d}, DType::kF64};
  auto mn = MaskNet::Create(MaskNetConfig{d, k, 2, ops::Activation::kSilu, true}, in, &store,
                            "masknet", Device::Cpu());
  ASSERT_TRUE(mn.ok());
  InitStore(&store);
  ParamVars pv(&store);
  const std::vector<int32_t> listed = {0, 1, 2, 3, 7, 9, 10};
  Tensor rows = Tensor::FromVector(listed, Shape{static_cast<int64_t>(listed.size())});
  std::vector<testing::GradCheckVar> inputs;
  std::vector<ConstTensorView> seqs;
  std::vector<TensorView> grads;
  for (int64_t j = 0; j < k; ++j) {
    Tensor s = RandomF64(in.shape, 20 + j), g = Tensor::Empty(in);
    inputs.push_back({"seq." + std::to_string(j), s, g});
    seqs.push_back(s);
    grads.push_back(g);
  }
  Tensor full = Tensor::Empty(in);
  CopyOut((*mn)->Forward(kCpu, seqs), full);
  Tensor y = Tensor::Empty(Shape{static_cast<int64_t>(listed.size()), d}, DType::kF64);
  CopyOut((*mn)->Forward(kCpu, seqs, rows), y);
  for (size_t i = 0; i < listed.size(); ++i) {
    for (int64_t e = 0; e < d; ++e) {
      EXPECT_NEAR(y.data<double>()[i * d + e], full.data<double>()[listed[i] * d + e], 1e-14);
    }
  }
  auto fwd = [&] {
    pv.PushValues();
    CopyOut((*mn)->Forward(kCpu, seqs, rows), y);
  };
  auto bwd = [&](const std::vector<Tensor>& g) {
    pv.PushGrads();
    (*mn)->Backward(kCpu, g[0], grads);
    pv.PullGrads();
  };
  const GradCheckResult r = CheckGradients(WithParams(inputs, pv), {y}, fwd, bwd);
  EXPECT_TRUE(r.ok) << r.ToString();
  EXPECT_EQ(grads[1].data<double>()[4 * d], 0.0);  // position 4 is not listed
}

INSTANTIATE_TEST_SUITE_P(Variants, MaskNetGradTest,
                         ::testing::Values(MaskNetCase{1, ops::Activation::kRelu, false},
                                           MaskNetCase{3, ops::Activation::kRelu, false},
                                           MaskNetCase{2, ops::Activation::kSilu, true}));

}  // namespace
}  // namespace loom::layers
