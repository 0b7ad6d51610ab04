// Gradient checks (f64, CPU) of the DHEN modules and layer (each backbone), the interaction
// arch, the cross arch (both summaries; CLS prefix, recent zero padding on/off, K = 0), the
// sequence arch (PRE_LN / LITERAL, X_sum context / const_xsum) and the block.
#include <cmath>

#include <gtest/gtest.h>

#include "csrc/model/layers/block.h"
#include "csrc/model/layers/cross_arch.h"
#include "csrc/model/layers/dhen.h"
#include "csrc/model/layers/interaction_arch.h"
#include "csrc/model/layers/sequence_arch.h"
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

TEST(DotModuleTest, ForwardIsLinearOfUpperTriangle) {
  model::ParameterStore store(DType::kF64);
  const int64_t b = 2, m = 4, d = 3;
  auto dot =
      DotModule::Create(TensorSpec{Shape{b, m, d}, DType::kF64}, &store, "dot", Device::Cpu());
  ASSERT_TRUE(dot.ok());
  EXPECT_EQ(store.parameters()[0].shape, (Shape{m * d, m * (m - 1) / 2}));
  InitStore(&store);
  Tensor z = RandomF64(Shape{b, m, d}, 1);
  ConstTensorView y = (*dot)->Forward(kCpu, z);
  // u = [G01, G02, G03, G12, G13, G23] of row 1; y[1, 2, 1] = bias[7] + Σ_p W[7, p] u[p].
  const double* zr = z.data<double>() + 1 * m * d;
  auto gram = [&](int i, int j) {
    double s = 0.0;
    for (int e = 0; e < d; ++e) s += zr[i * d + e] * zr[j * d + e];
    return s;
  };
  const double u[6] = {gram(0, 1), gram(0, 2), gram(0, 3), gram(1, 2), gram(1, 3), gram(2, 3)};
  const double* w = store.parameters()[0].value.data<double>();
  double want = store.parameters()[1].value.data<double>()[7];
  for (int p = 0; p < 6; ++p) want += w[7 * 6 + p] * u[p];
  EXPECT_NEAR(y.data<double>()[1 * m * d + 2 * d + 1], want, 1e-14);
}

class DhenGradTest : public ::testing::TestWithParam<MC::InteractionBackbone> {};

TEST_P(DhenGradTest, LayerMatchesFiniteDifferences) {
  model::ParameterStore store(DType::kF64);
  const TensorSpec in{Shape{3, 4, 4}, DType::kF64};
  DhenConfig dc;
  dc.backbone = GetParam();
  dc.dcn = DcnConfig{2, 3};
  auto layer = DhenLayer::Create(dc, in, &store, "dhen.0", Device::Cpu());
  ASSERT_TRUE(layer.ok()) << layer.status();
  std::vector<std::string> want;
  if (GetParam() != MC::INTERACTION_BACKBONE_DCN) want = {"dhen.0.dot.weight", "dhen.0.dot.bias"};
  if (GetParam() != MC::INTERACTION_BACKBONE_DOT) {
    for (const char* n : {"dhen.0.dcn.cross.0.down.weight", "dhen.0.dcn.cross.0.up.weight",
                          "dhen.0.dcn.cross.0.up.bias", "dhen.0.dcn.cross.1.down.weight",
                          "dhen.0.dcn.cross.1.up.weight", "dhen.0.dcn.cross.1.up.bias",
                          "dhen.0.dcn.out.weight", "dhen.0.dcn.out.bias"}) {
      want.push_back(n);
    }
  }
  want.push_back("dhen.0.norm.weight");
  want.push_back("dhen.0.norm.bias");
  EXPECT_EQ(test::Names(store), want);
  InitStore(&store);
  ParamVars pv(&store);
  Tensor z = RandomF64(in.shape, 2), gz = Tensor::Empty(in), y = Tensor::Empty(in);
  auto fwd = [&] {
    pv.PushValues();
    CopyOut((*layer)->Forward(kCpu, z), y);
  };
  auto bwd = [&](const std::vector<Tensor>& g) {
    pv.PushGrads();
    (*layer)->Backward(kCpu, g[0], gz);
    pv.PullGrads();
  };
  const GradCheckResult r = CheckGradients(WithParams({{"z", z, gz}}, pv), {y}, fwd, bwd);
  EXPECT_TRUE(r.ok) << r.ToString();
}

INSTANTIATE_TEST_SUITE_P(Backbones, DhenGradTest,
                         ::testing::Values(MC::INTERACTION_BACKBONE_DHEN,
                                           MC::INTERACTION_BACKBONE_DOT,
                                           MC::INTERACTION_BACKBONE_DCN));

TEST(InteractionArchGradTest, TwoDhenLayers) {
  model::ParameterStore store(DType::kF64);
  const TensorSpec in{Shape{2, 5, 4}, DType::kF64};
  InteractionArchConfig ic;
  ic.out_tokens = 3;
  ic.dhen_layers = 2;
  ic.dhen.dcn = DcnConfig{1, 2};
  ic.mlp_hidden = 6;
  auto arch = InteractionArch::Create(ic, in, &store, "layers.0.interaction", Device::Cpu());
  ASSERT_TRUE(arch.ok()) << arch.status();
  EXPECT_NE(store.Find("layers.0.interaction.dhen.1.norm.bias"), nullptr);
  EXPECT_EQ(store.Find("layers.0.interaction.token_mix.weight")->shape, (Shape{3, 5}));
  EXPECT_EQ(store.Find("layers.0.interaction.mlp.fc1.weight")->shape, (Shape{6, 4}));
  EXPECT_EQ(store.parameters().back().name, "layers.0.interaction.mlp.fc2.bias");
  InitStore(&store);
  ParamVars pv(&store);
  Tensor z = RandomF64(in.shape, 3), gz = Tensor::Empty(in),
         y = Tensor::Empty(Shape{2, 3, 4}, DType::kF64);
  auto fwd = [&] {
    pv.PushValues();
    CopyOut((*arch)->Forward(kCpu, z), y);
  };
  auto bwd = [&](const std::vector<Tensor>& g) {
    pv.PushGrads();
    (*arch)->Backward(kCpu, g[0], gz);
    pv.PullGrads();
  };
  const GradCheckResult r = CheckGradients(WithParams({{"z", z, gz}}, pv), {y}, fwd, bwd);
  EXPECT_TRUE(r.ok) << r.ToString();
}

struct CrossCase {
  int64_t cls_in_s;
  int64_t recent;
  bool zero_padding;
};

class CrossArchGradTest : public ::testing::TestWithParam<CrossCase> {};

TEST_P(CrossArchGradTest, BothSummaries) {
  const CrossCase c = GetParam();
  model::ParameterStore store(DType::kF64);
  const int64_t b = 4, nx = 3, d = 4, n_cls = 2, t = 3 + c.cls_in_s;
  const TensorSpec xs{Shape{b, nx, d}, DType::kF64}, ss{Shape{b, t, d}, DType::kF64};
  CrossArchConfig cc;
  cc.n_cls = n_cls;
  cc.gating = GatingConfig{d, 0, MC::GATING_FORM_GLU, MC::GATING_ACTIVATION_SIGMOID};
  cc.cls_in_s = c.cls_in_s;
  cc.n_pma = 2;
  cc.recent = c.recent;
  cc.heads = 2;
  cc.recent_zero_padding = c.zero_padding;
  auto cross = CrossArch::Create(cc, xs, ss, &store, "cross.1", Device::Cpu());
  ASSERT_TRUE(cross.ok()) << cross.status();
  const std::vector<std::string> names = test::Names(store);
  ASSERT_GE(names.size(), 4u);
  EXPECT_EQ(names[0], "cross.1.x_lce.weight");
  EXPECT_EQ(names[1], "cross.1.x_gate.fc1.weight");
  EXPECT_EQ(names[3], "cross.1.pma.query");
  EXPECT_EQ(names.back(), "cross.1.s_gate.fc1.bias");
  InitStore(&store);
  ParamVars pv(&store);
  // Key mask over T' with the CLS prefix valid: rows with 3, 0, 1 and 2 real tokens.
  Tensor km = PaddedMask(t, {3 + c.cls_in_s, c.cls_in_s, 1 + c.cls_in_s, 2 + c.cls_in_s});
  for (int64_t i = 0; i < b; ++i) {
    for (int64_t j = 0; j < c.cls_in_s; ++j) km.data<uint8_t>()[i * t + j] = 1;
  }
  Tensor x = RandomF64(xs.shape, 4), gx = Tensor::Empty(xs);
  Tensor s = RandomF64(ss.shape, 5), gs = Tensor::Empty(ss);
  Tensor ys = Tensor::Empty(Shape{b, n_cls, d}, DType::kF64);
  Tensor yss = Tensor::Empty(Shape{b, (*cross)->n_s(), d}, DType::kF64);
  auto fwd = [&] {
    pv.PushValues();
    CopyOut((*cross)->XSummary(kCpu, x), ys);
    CopyOut((*cross)->SSummary(kCpu, s, km), yss);
  };
  auto bwd = [&](const std::vector<Tensor>& g) {
    pv.PushGrads();
    (*cross)->XSummaryBackward(kCpu, g[0], gx);
    (*cross)->SSummaryBackward(kCpu, g[1], gs);
    pv.PullGrads();
  };
  const GradCheckResult r =
      CheckGradients(WithParams({{"x", x, gx}, {"s", s, gs}}, pv), {ys, yss}, fwd, bwd);
  EXPECT_TRUE(r.ok) << r.ToString();
  if (c.recent > 0 && c.zero_padding && c.cls_in_s == 0) {
    // Row 1 has no real token: its recent slots are zero before the gate, so the gate sees
    // zeros there (GLU: 0 · sigmoid(g) = 0).
    for (int64_t j = 0; j < c.recent; ++j) {
      for (int64_t e = 0; e < d; ++e) {
        EXPECT_EQ(yss.data<double>()[((1 * (*cross)->n_s()) + 2 + j) * d + e], 0.0);
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Variants, CrossArchGradTest,
                         ::testing::Values(CrossCase{0, 2, true}, CrossCase{2, 2, true},
                                           CrossCase{2, 3, false}, CrossCase{0, 0, true},
                                           CrossCase{1, 3, true}));

struct SeqCase {
  MC::SequenceResidual residual;
  MC::PffnForm pffn;
  bool const_xsum;
  bool rope;
};

class SequenceArchGradTest : public ::testing::TestWithParam<SeqCase> {};

TEST_P(SequenceArchGradTest, MatchesFiniteDifferences) {
  const SeqCase c = GetParam();
  model::ParameterStore store(DType::kF64);
  const int64_t b = 3, t = 5, d = 4, n_cls = 2;
  const TensorSpec ss{Shape{b, t, d}, DType::kF64};
  SequenceArchConfig sc;
  sc.pffn = PffnConfig{d, n_cls, c.pffn, 5};
  sc.heads = 2;
  sc.rope = c.rope;
  sc.residual = c.residual;
  sc.const_xsum = c.const_xsum;
  auto arch = SequenceArch::Create(sc, ss, &store, "layers.1.sequence", Device::Cpu());
  ASSERT_TRUE(arch.ok()) << arch.status();
  EXPECT_EQ(store.Find("layers.1.sequence.pffn_norm.weight") != nullptr,
            c.residual == MC::SEQUENCE_RESIDUAL_PRE_LN);
  EXPECT_EQ(store.Find("layers.1.sequence.const_xsum") != nullptr, c.const_xsum);
  InitStore(&store);
  ParamVars pv(&store);
  Tensor km = PaddedMask(t, {5, 0, 2});
  Tensor s = RandomF64(ss.shape, 6), gs = Tensor::Empty(ss), y = Tensor::Empty(ss);
  Tensor ctxt = RandomF64(Shape{b, n_cls, d}, 7), gctx = Tensor::Empty(ctxt.spec());
  std::vector<testing::GradCheckVar> inputs = {{"s", s, gs}};
  if (!c.const_xsum) inputs.push_back({"ctx", ctxt, gctx});
  auto fwd = [&] {
    pv.PushValues();
    CopyOut((*arch)->Forward(kCpu, s, c.const_xsum ? ConstTensorView() : ConstTensorView(ctxt), km),
            y);
  };
  auto bwd = [&](const std::vector<Tensor>& g) {
    pv.PushGrads();
    (*arch)->Backward(kCpu, g[0], gs, c.const_xsum ? TensorView() : gctx.view());
    pv.PullGrads();
  };
  const GradCheckResult r = CheckGradients(WithParams(inputs, pv), {y}, fwd, bwd);
  EXPECT_TRUE(r.ok) << r.ToString();
}

INSTANTIATE_TEST_SUITE_P(
    Variants, SequenceArchGradTest,
    ::testing::Values(SeqCase{MC::SEQUENCE_RESIDUAL_PRE_LN, MC::PFFN_FORM_LOW_RANK, false, true},
                      SeqCase{MC::SEQUENCE_RESIDUAL_LITERAL, MC::PFFN_FORM_HYPERNET, false, true},
                      SeqCase{MC::SEQUENCE_RESIDUAL_PRE_LN, MC::PFFN_FORM_HYPERNET, true, false},
                      SeqCase{MC::SEQUENCE_RESIDUAL_LITERAL, MC::PFFN_FORM_LOW_RANK, true, true}));

TEST(BlockGradTest, BothPaths) {
  model::ParameterStore store(DType::kF64);
  const int64_t b = 3, nx = 3, n_s = 2, d = 4, t = 4, n_cls = 2;
  const TensorSpec xs{Shape{b, nx, d}, DType::kF64}, ss{Shape{b, t, d}, DType::kF64};
  BlockConfig bc;
  bc.interaction.out_tokens = nx;
  bc.interaction.dhen.dcn = DcnConfig{1, 2};
  bc.interaction.mlp_hidden = d;
  bc.feed_ssum = true;
  bc.n_s = n_s;
  bc.sequence.pffn = PffnConfig{d, n_cls, MC::PFFN_FORM_LOW_RANK, 4};
  bc.sequence.heads = 2;
  auto blk = InterFormerBlock::Create(bc, xs, ss, &store, "layers.0", Device::Cpu());
  ASSERT_TRUE(blk.ok()) << blk.status();
  EXPECT_EQ(store.parameters()[0].name, "layers.0.interaction.dhen.0.dot.weight");
  EXPECT_EQ(store.parameters().back().name, "layers.0.sequence.attn_norm.bias");
  InitStore(&store);
  ParamVars pv(&store);
  Tensor km = PaddedMask(t, {4, 1, 0});
  Tensor x = RandomF64(xs.shape, 8), gx = Tensor::Empty(xs);
  Tensor ssum = RandomF64(Shape{b, n_s, d}, 9), gssum = Tensor::Empty(ssum.spec());
  Tensor s = RandomF64(ss.shape, 10), gs = Tensor::Empty(ss);
  Tensor xsum = RandomF64(Shape{b, n_cls, d}, 11), gxsum = Tensor::Empty(xsum.spec());
  Tensor yx = Tensor::Empty(xs), ys = Tensor::Empty(ss);
  auto fwd = [&] {
    pv.PushValues();
    CopyOut((*blk)->ForwardInteraction(kCpu, x, ssum), yx);
    CopyOut((*blk)->ForwardSequence(kCpu, s, xsum, km), ys);
  };
  auto bwd = [&](const std::vector<Tensor>& g) {
    pv.PushGrads();
    (*blk)->BackwardInteraction(kCpu, g[0], gx, gssum);
    (*blk)->BackwardSequence(kCpu, g[1], gs, gxsum);
    pv.PullGrads();
  };
  const GradCheckResult r = CheckGradients(
      WithParams({{"x", x, gx}, {"ssum", ssum, gssum}, {"s", s, gs}, {"xsum", xsum, gxsum}}, pv),
      {yx, ys}, fwd, bwd);
  EXPECT_TRUE(r.ok) << r.ToString();
}

}  // namespace
}  // namespace loom::layers
