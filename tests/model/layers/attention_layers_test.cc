// Gradient checks (f64, CPU) of MultiHeadAttention (self-attention with RoPE and padding,
// including a row without any valid key), PMA and PFFN (both forms), and a closed-form check
// of a single-key attention.
#include <cmath>

#include <gtest/gtest.h>

#include "csrc/model/layers/mha.h"
#include "csrc/model/layers/pffn.h"
#include "tests/model/layers/layer_test_util.h"

namespace loom::layers {
namespace {

using MC = proto::ModelConfig;
using test::CopyOut;
using test::InitStore;
using test::kCpu;
using test::PaddedMask;
using test::ParamVars;
using test::RandomF64;
using test::WithParams;
using testing::CheckGradients;
using testing::GradCheckResult;

class MhaGradTest : public ::testing::TestWithParam<bool> {};

TEST_P(MhaGradTest, SelfAttentionWithPadding) {
  const bool rope = GetParam();
  model::ParameterStore store(DType::kF64);
  const int64_t b = 4, t = 5, d = 8;
  const TensorSpec in{Shape{b, t, d}, DType::kF64};
  MhaConfig mc;
  mc.d = d;
  mc.heads = 2;
  mc.rope = rope;
  mc.rope_base = 100.0;
  auto mha = MultiHeadAttention::Create(mc, in, &store, "attn", Device::Cpu());
  ASSERT_TRUE(mha.ok()) << mha.status();
  EXPECT_EQ(
      test::Names(store),
      (std::vector<std::string>{"attn.q.weight", "attn.q.bias", "attn.k.weight", "attn.k.bias",
                                "attn.v.weight", "attn.v.bias", "attn.o.weight", "attn.o.bias"}));
  InitStore(&store);
  ParamVars pv(&store);
  Tensor mask = PaddedMask(t, {5, 0, 1, 3});  // full, empty, one token, partial
  Tensor x = RandomF64(in.shape, 1), gx = Tensor::Empty(in), y = Tensor::Empty(in);
  auto fwd = [&] {
    pv.PushValues();
    CopyOut((*mha)->Forward(kCpu, x, mask), y);
  };
  auto bwd = [&](const std::vector<Tensor>& g) {
    pv.PushGrads();
    (*mha)->Backward(kCpu, g[0], gx);
    pv.PullGrads();
  };
  fwd();
  // Row 1 has no valid key: attention outputs 0, so every position is o.bias.
  const double* ob = store.Find("attn.o.bias")->value.data<double>();
  for (int64_t j = 0; j < t; ++j) {
    for (int64_t e = 0; e < d; ++e) EXPECT_EQ(y.data<double>()[((1 * t) + j) * d + e], ob[e]);
  }
  // Row 2 has one valid key (the last position): every query outputs o(v(x_last)).
  {
    const double* wv = store.Find("attn.v.weight")->value.data<double>();
    const double* bv = store.Find("attn.v.bias")->value.data<double>();
    const double* wo = store.Find("attn.o.weight")->value.data<double>();
    const double* xl = x.data<double>() + ((2 * t) + t - 1) * d;
    std::vector<double> v(d);
    for (int64_t i = 0; i < d; ++i) {
      v[i] = bv[i];
      for (int64_t e = 0; e < d; ++e) v[i] += wv[i * d + e] * xl[e];
    }
    for (int64_t i = 0; i < d; ++i) {
      double want = ob[i];
      for (int64_t e = 0; e < d; ++e) want += wo[i * d + e] * v[e];
      EXPECT_NEAR(y.data<double>()[((2 * t) + 0) * d + i], want, 1e-13);
    }
  }
  const GradCheckResult r = CheckGradients(WithParams({{"x", x, gx}}, pv), {y}, fwd, bwd);
  EXPECT_TRUE(r.ok) << r.ToString();
  // Padded keys contribute nothing: on the empty row the input gradient comes only through
  // the queries, which see no key, so it is exactly zero.
  for (int64_t i = 0; i < t * d; ++i) EXPECT_EQ(gx.data<double>()[1 * t * d + i], 0.0);
}

INSTANTIATE_TEST_SUITE_P(Rope, MhaGradTest, ::testing::Bool());

// Packed rows: the projections run on the listed positions only (every valid key listed).
// Listed outputs equal the unpacked ones, unlisted outputs are 0, and the packed layer is a
// function of x with exact gradients (zero at the unlisted positions).
TEST(MhaPackedTest, MatchesUnpackedAndGradients) {
  model::ParameterStore store(DType::kF64);
  const int64_t b = 4, t = 5, d = 8;
  const TensorSpec in{Shape{b, t, d}, DType::kF64};
  MhaConfig mc;
  mc.d = d;
  mc.heads = 2;
  mc.rope = true;
  auto mha = MultiHeadAttention::Create(mc, in, &store, "attn", Device::Cpu());
  ASSERT_TRUE(mha.ok()) << mha.status();
  InitStore(&store);
  ParamVars pv(&store);
  Tensor mask = PaddedMask(t, {5, 0, 1, 3});
  // The valid positions, plus one padded query (row 3, position 1) that must be exact too.
  std::vector<int32_t> listed;
  for (int64_t i = 0; i < b; ++i) {
    for (int64_t j = 0; j < t; ++j) {
      if (mask.data<uint8_t>()[i * t + j] || (i == 3 && j == 1)) listed.push_back(i * t + j);
    }
  }
  Tensor rows = Tensor::FromVector(listed, Shape{static_cast<int64_t>(listed.size())});
  Tensor x = RandomF64(in.shape, 11), gx = Tensor::Empty(in), y = Tensor::Empty(in);
  Tensor full = Tensor::Empty(in);
  CopyOut((*mha)->Forward(kCpu, x, mask), full);
  CopyOut((*mha)->Forward(kCpu, x, mask, rows), y);
  std::vector<bool> is_listed(b * t, false);
  for (int32_t r : listed) is_listed[r] = true;
  for (int64_t r = 0; r < b * t; ++r) {
    for (int64_t e = 0; e < d; ++e) {
      const double want = is_listed[r] ? full.data<double>()[r * d + e] : 0.0;
      EXPECT_NEAR(y.data<double>()[r * d + e], want, 1e-14) << "row " << r;
    }
  }
  auto fwd = [&] {
    pv.PushValues();
    CopyOut((*mha)->Forward(kCpu, x, mask, rows), y);
  };
  auto bwd = [&](const std::vector<Tensor>& g) {
    pv.PushGrads();
    (*mha)->Backward(kCpu, g[0], gx);
    pv.PullGrads();
  };
  const GradCheckResult r = CheckGradients(WithParams({{"x", x, gx}}, pv), {y}, fwd, bwd);
  EXPECT_TRUE(r.ok) << r.ToString();
  for (int64_t row = 0; row < b * t; ++row) {
    if (is_listed[row]) continue;
    for (int64_t e = 0; e < d; ++e) EXPECT_EQ(gx.data<double>()[row * d + e], 0.0);
  }
}

TEST(PmaGradTest, LearnedQueries) {
  model::ParameterStore store(DType::kF64);
  const int64_t b = 3, t = 6, d = 8;
  const TensorSpec in{Shape{b, t, d}, DType::kF64};
  auto pma = Pma::Create(2, 2, in, &store, "cross.0.pma", Device::Cpu());
  ASSERT_TRUE(pma.ok()) << pma.status();
  EXPECT_EQ(store.parameters()[0].name, "cross.0.pma.query");
  EXPECT_EQ(store.parameters()[0].shape, (Shape{2, d}));
  EXPECT_EQ(store.parameters()[0].init.kind, model::InitRule::Kind::kNormal);
  EXPECT_EQ(store.parameters()[1].name, "cross.0.pma.attn.q.weight");
  InitStore(&store);
  ParamVars pv(&store);
  Tensor mask = PaddedMask(t, {6, 2, 0});
  Tensor x = RandomF64(in.shape, 2), gx = Tensor::Empty(in),
         y = Tensor::Empty(Shape{b, 2, d}, DType::kF64);
  auto fwd = [&] {
    pv.PushValues();
    CopyOut((*pma)->Forward(kCpu, x, mask), y);
  };
  auto bwd = [&](const std::vector<Tensor>& g) {
    pv.PushGrads();
    (*pma)->Backward(kCpu, g[0], gx);
    pv.PullGrads();
  };
  const GradCheckResult r = CheckGradients(WithParams({{"s", x, gx}}, pv), {y}, fwd, bwd);
  EXPECT_TRUE(r.ok) << r.ToString();
}

class PffnGradTest : public ::testing::TestWithParam<MC::PffnForm> {};

TEST_P(PffnGradTest, MatchesFiniteDifferences) {
  model::ParameterStore store(DType::kF64);
  const int64_t b = 3, t = 5, d = 4, n_cls = 3;
  const TensorSpec in{Shape{b, t, d}, DType::kF64};
  PffnConfig pc{d, n_cls, GetParam(), 6};
  auto pffn = Pffn::Create(pc, in, &store, "layers.0.sequence.pffn", Device::Cpu());
  ASSERT_TRUE(pffn.ok()) << pffn.status();
  if (GetParam() == MC::PFFN_FORM_LOW_RANK) {
    EXPECT_EQ(test::Names(store), (std::vector<std::string>{"layers.0.sequence.pffn.weight"}));
    EXPECT_EQ(store.parameters()[0].shape, (Shape{n_cls, d}));
  } else {
    EXPECT_EQ(test::Names(store),
              (std::vector<std::string>{
                  "layers.0.sequence.pffn.fc1.weight", "layers.0.sequence.pffn.fc1.bias",
                  "layers.0.sequence.pffn.fc2.weight", "layers.0.sequence.pffn.fc2.bias"}));
    EXPECT_EQ(store.parameters()[2].shape, (Shape{d * d, 6}));
    EXPECT_DOUBLE_EQ(store.parameters()[2].init.a, 1.0 / std::sqrt(6.0 * d));
  }
  InitStore(&store);
  ParamVars pv(&store);
  Tensor ctxt = RandomF64(Shape{b, n_cls, d}, 3), gctx = Tensor::Empty(ctxt.spec());
  Tensor u = RandomF64(in.shape, 4), gu = Tensor::Empty(in), y = Tensor::Empty(in);
  auto fwd = [&] {
    pv.PushValues();
    CopyOut((*pffn)->Forward(kCpu, ctxt, u), y);
  };
  auto bwd = [&](const std::vector<Tensor>& g) {
    pv.PushGrads();
    (*pffn)->Backward(kCpu, g[0], gctx, gu);
    pv.PullGrads();
  };
  fwd();
  if (GetParam() == MC::PFFN_FORM_LOW_RANK) {
    // P[1, 2, 3] = Σ_c (Σ_e U[1,2,e] Wp[c,e]) ctx[1,c,3].
    const double* wp = store.parameters()[0].value.data<double>();
    double want = 0.0;
    for (int64_t c = 0; c < n_cls; ++c) {
      double cc = 0.0;
      for (int64_t e = 0; e < d; ++e) cc += u.data<double>()[(1 * t + 2) * d + e] * wp[c * d + e];
      want += cc * ctxt.data<double>()[(1 * n_cls + c) * d + 3];
    }
    EXPECT_NEAR(y.data<double>()[(1 * t + 2) * d + 3], want, 1e-14);
  }
  const GradCheckResult r =
      CheckGradients(WithParams({{"ctx", ctxt, gctx}, {"u", u, gu}}, pv), {y}, fwd, bwd);
  EXPECT_TRUE(r.ok) << r.ToString();
}

INSTANTIATE_TEST_SUITE_P(Forms, PffnGradTest,
                         ::testing::Values(MC::PFFN_FORM_LOW_RANK, MC::PFFN_FORM_HYPERNET));

}  // namespace
}  // namespace loom::layers
