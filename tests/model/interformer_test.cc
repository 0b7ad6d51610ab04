// Tests of the dense InterFormer (csrc/model/interformer.h): config validation messages,
// parameter registration (names, order, existence rules of docs/model.md §5), a whole-model
// double-precision gradient check (L = 2, padded sequences of mixed lengths, every input and
// parameter), the loss, determinism, smaller batches, and the masking facts of §6.
#include "csrc/model/interformer.h"

#include <cmath>
#include <cstring>
#include <set>

#include <gtest/gtest.h>

#include "csrc/proto/config_io.h"
#include "tests/model/layers/layer_test_util.h"

namespace loom::model {
namespace {

using MC = proto::ModelConfig;
using layers::test::InitStore;
using layers::test::kCpu;
using layers::test::PaddedMask;
using layers::test::ParamVars;
using layers::test::RandomF64;
using testing::CheckGradients;
using testing::GradCheckOptions;
using testing::GradCheckResult;
using testing::GradCheckVar;

// `text`, then `override` merged onto it (a field set in both takes the override's value).
MC Parse(const std::string& text, const std::string& override = "") {
  MC c;
  LOOM_CHECK_OK(config::ParseTextProto(text, "test", &c));
  if (!override.empty()) LOOM_CHECK_OK(config::ApplyOverrides({override}, &c));
  return c;
}

// Tiny sizes for the gradient checks.
const char kTiny[] =
    "embedding_dim: 4 num_heads: 2 num_dense_features: 2 num_sparse_features: 2 "
    "num_sequences: 2 num_layers: 2 num_cls_tokens: 2 num_pma_tokens: 1 num_recent_tokens: 2 "
    "dcn_rank: 3 head_hidden_dims: [6, 4] pffn_hypernet_hidden_dim: 3 ";

std::string CreateError(const std::string& text, int64_t t = 5) {
  auto m = InterFormer::Create(Parse(text), 4, t, DType::kF32, Device::Cpu());
  return m.ok() ? std::string("OK") : m.status().message();
}

TEST(InterFormerConfigTest, ErrorsNameTheField) {
  EXPECT_NE(CreateError("num_sparse_features: 2 num_heads: 3")
                .find("model.num_heads: must divide embedding_dim 64, got 3"),
            std::string::npos);
  EXPECT_NE(CreateError("num_sparse_features: 0")
                .find("model.num_sparse_features: need at least "
                      "one non-sequence token"),
            std::string::npos);
  EXPECT_NE(CreateError("num_sparse_features: 2 embedding_dim: 12 num_heads: 4")
                .find("model.num_heads: must leave an even head_dim"),
            std::string::npos);
  EXPECT_NE(CreateError("num_sparse_features: 2 interleaving: INTERLEAVING_SEP "
                        "num_recent_tokens: 6")
                .find("model.num_recent_tokens: must be <= T' = T + CLS tokens = 5"),
            std::string::npos);
  EXPECT_NE(CreateError("num_sparse_features: 1 interleaving: INTERLEAVING_SEP")
                .find("the interaction arch needs M >= 2 tokens"),
            std::string::npos);
  EXPECT_NE(CreateError("num_sparse_features: 2 head_hidden_dims: [8, -1]")
                .find("model.head_hidden_dims[1]: must be in [1, 65535]"),
            std::string::npos);
  // Every error at once.
  const std::string all = CreateError("num_sparse_features: 2 dcn_rank: 0 head_dropout: 1");
  EXPECT_NE(all.find("model.dcn_rank: must be in [1, 4096], got 0"), std::string::npos) << all;
  EXPECT_NE(all.find("model.head_dropout: must be in [0, 1), got 1"), std::string::npos) << all;
  EXPECT_EQ(CreateError("num_sparse_features: 2"), "OK");
}

std::vector<std::string> Names(const InterFormer& m) {
  std::vector<std::string> out;
  for (const Parameter& p : m.parameters().parameters()) out.push_back(p.name);
  return out;
}

bool Has(const InterFormer& m, const std::string& name) {
  return m.parameters().Find(name) != nullptr;
}

TEST(InterFormerParamsTest, RegistrationOrderFollowsTheReference) {
  auto m = InterFormer::Create(Parse(kTiny), 4, 5, DType::kF32, Device::Cpu());
  ASSERT_TRUE(m.ok()) << m.status();
  const std::vector<std::string> n = Names(**m);
  ASSERT_GT(n.size(), 10u);
  EXPECT_EQ(n[0], "dense_proj.weight");
  EXPECT_EQ(n[1], "dense_proj.bias");
  EXPECT_EQ(n[2], "masknet.mask1.weight");
  EXPECT_EQ(n[8], "cross.0.x_lce.weight");
  EXPECT_EQ(n.back(), "head.out.bias");
  // Blocks of names appear in the reference's module order.
  auto first = [&](const std::string& prefix) {
    for (size_t i = 0; i < n.size(); ++i) {
      if (n[i].rfind(prefix, 0) == 0) return static_cast<int64_t>(i);
    }
    return int64_t{-1};
  };
  EXPECT_LT(first("masknet."), first("cross.0."));
  EXPECT_LT(first("cross.0."), first("cross.1."));
  EXPECT_LT(first("cross.2."), first("layers.0."));
  EXPECT_LT(first("layers.0.interaction."), first("layers.0.sequence."));
  EXPECT_LT(first("layers.0.sequence."), first("layers.1."));
  EXPECT_LT(first("layers.1."), first("head."));
  // Offsets are contiguous in registration order: the flat buffer is torch.cat(parameters()).
  int64_t off = 0;
  for (const Parameter& p : (*m)->parameters().parameters()) {
    EXPECT_EQ(p.offset, off) << p.name;
    off += p.numel();
  }
}

// docs/model.md §5: parameters exist only where their output is consumed.
TEST(InterFormerParamsTest, ExistenceRulesPerMode) {
  struct Case {
    const char* mode;
    const char* final_summary;
  };
  for (const Case c :
       {Case{"INT", "EXTRA_CROSS"}, Case{"N2S", "LITERAL"}, Case{"S2N", "EXTRA_CROSS"},
        Case{"SEP", "LITERAL"}, Case{"SOLE", "EXTRA_CROSS"}, Case{"SOLE", "LITERAL"}}) {
    const std::string text = std::string("interleaving: INTERLEAVING_") + c.mode +
                             " final_summary: FINAL_SUMMARY_" + c.final_summary;
    auto m = InterFormer::Create(Parse(kTiny, text), 4, 5, DType::kF32, Device::Cpu());
    ASSERT_TRUE(m.ok()) << text << ": " << m.status();
    const ModelDims& D = (*m)->dims();
    SCOPED_TRACE(text);
    for (int64_t l = 0; l <= D.L; ++l) {
      const std::string p = "cross." + std::to_string(l) + ".";
      EXPECT_EQ(Has(**m, p + "x_lce.weight"), D.XSummaryUsed(l));
      EXPECT_EQ(Has(**m, p + "pma.query"), D.SSummaryUsed(l));
    }
    const bool sole = std::string(c.mode) == "SOLE";
    const bool cls = std::string(c.mode) == "INT" || std::string(c.mode) == "N2S";
    const bool extra = std::string(c.final_summary) == "EXTRA_CROSS";
    EXPECT_EQ(Has(**m, "cross.0.x_lce.weight"), cls || (!extra && D.L == 1));
    EXPECT_EQ(Has(**m, "cross.2.x_lce.weight"), extra);
    EXPECT_EQ(Has(**m, "masknet.lce.weight"), !sole);
    EXPECT_EQ(Has(**m, "layers.0.sequence.attn.q.weight"), !sole);
    EXPECT_EQ(Has(**m, "layers.1.sequence.const_xsum"),
              std::string(c.mode) == "S2N" || std::string(c.mode) == "SEP");
    // The interaction input M = N_x + n_s (INT, S2N) or N_x: the token mix is (N_x, M).
    EXPECT_EQ((*m)->parameters().Find("layers.0.interaction.token_mix.weight")->shape,
              (Shape{D.Nx, D.M}));
    EXPECT_EQ((*m)->parameters().Find("head.fc0.weight")->shape, (Shape{6, D.head_in}));
  }
}

// The batch of a gradient check: B = 4, T = 5, rows with 5, 0, 1 and 3 real tokens.
struct Batch {
  Tensor dense, sparse, mask, labels;
  std::vector<Tensor> seqs;
  DenseInputs Inputs() const {
    DenseInputs in;
    in.dense = dense;
    in.sparse = sparse;
    for (const Tensor& s : seqs) in.seq.push_back(s);
    in.seq_mask = mask;
    return in;
  }
};

Batch MakeBatch(const ModelDims& D, int64_t b, int64_t t, uint64_t seed, DType dt) {
  Batch x;
  auto cast = [&](Tensor f64) {
    if (dt == DType::kF64) return f64;
    Tensor f = Tensor::Empty(f64.shape(), DType::kF32);
    for (int64_t i = 0; i < f64.numel(); ++i) {
      f.data<float>()[i] = static_cast<float>(f64.data<double>()[i]);
    }
    return f;
  };
  x.dense = cast(RandomF64(Shape{b, D.m}, seed + 1));
  x.sparse = cast(RandomF64(Shape{b, D.n, D.d}, seed + 2));
  for (int64_t j = 0; j < D.k; ++j)
    x.seqs.push_back(cast(RandomF64(Shape{b, t, D.d}, seed + 3 + j)));
  std::vector<int64_t> lengths = {t, 0, 1};
  while (static_cast<int64_t>(lengths.size()) < b) lengths.push_back(3 % (t + 1));
  lengths.resize(b);
  x.mask = PaddedMask(t, lengths);
  Tensor lab = Tensor::Empty(Shape{b}, DType::kF64);
  for (int64_t i = 0; i < b; ++i) lab.data<double>()[i] = i % 2;
  x.labels = cast(lab);
  return x;
}

struct GradCase {
  const char* name;
  const char* extra;
};

class InterFormerGradTest : public ::testing::TestWithParam<GradCase> {};

TEST_P(InterFormerGradTest, WholeModelMatchesFiniteDifferences) {
  const std::string text = GetParam().extra;
  const int64_t b = 4, t = 5;
  auto made = InterFormer::Create(Parse(kTiny, text), b, t, DType::kF64, Device::Cpu());
  ASSERT_TRUE(made.ok()) << made.status();
  InterFormer& m = **made;
  const ModelDims& D = m.dims();
  InitStore(&m.parameters(), 21);
  ParamVars pv(&m.parameters());
  Batch x = MakeBatch(D, b, t, 100, DType::kF64);
  const DenseInputs in = x.Inputs();
  std::vector<GradCheckVar> vars;
  Tensor g_dense = Tensor::Empty(x.dense.spec()), g_sparse = Tensor::Empty(x.sparse.spec());
  std::vector<Tensor> g_seq;
  if (D.m > 0) vars.push_back({"dense", x.dense, g_dense});
  vars.push_back({"sparse", x.sparse, g_sparse});
  for (int64_t j = 0; j < D.k; ++j) {
    g_seq.push_back(Tensor::Empty(x.seqs[j].spec()));
    vars.push_back({"seq." + std::to_string(j), x.seqs[j], g_seq[j]});
  }
  for (const auto& v : pv.vars()) vars.push_back(v);
  Tensor logits = Tensor::Empty(Shape{b}, DType::kF64);
  auto fwd = [&] {
    pv.PushValues();
    m.Forward(kCpu, in, logits);
  };
  auto bwd = [&](const std::vector<Tensor>& g) {
    pv.PushGrads();
    m.Backward(kCpu, g[0]);
    pv.PullGrads();
    const DenseInputGrads& ig = m.input_grads();
    if (D.m > 0) CopyTensor(ig.dense, g_dense);
    CopyTensor(ig.sparse, g_sparse);
    for (int64_t j = 0; j < D.k; ++j) CopyTensor(ig.seq[j], g_seq[j]);
  };
  GradCheckOptions opt;
  opt.max_checks_per_var = 60;  // ~100 variables: keeps the test well under 30 s
  const GradCheckResult r = CheckGradients(vars, {logits}, fwd, bwd, opt);
  EXPECT_TRUE(r.ok) << text << "\n" << r.ToString();
  EXPECT_GT(r.checked, 400);
  // docs/model.md §6: with recent_zero_padding (the default) nothing at a padded position
  // reaches the logits, so its input gradient is exactly 0.
  if (D.config.recent_zero_padding()) {
    for (int64_t j = 0; j < D.k; ++j) {
      for (int64_t i = 0; i < b; ++i) {
        for (int64_t p = 0; p < t; ++p) {
          if (x.mask.data<uint8_t>()[i * t + p]) continue;
          for (int64_t e = 0; e < D.d; ++e) {
            ASSERT_EQ(g_seq[j].data<double>()[(i * t + p) * D.d + e], 0.0)
                << "seq." << j << " row " << i << " pos " << p;
          }
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Configs, InterFormerGradTest,
    ::testing::Values(GradCase{"int_default", ""},
                      GradCase{"literal_hyper",
                               "gating_form: GATING_FORM_LITERAL pffn_form: PFFN_FORM_HYPERNET "
                               "final_summary: FINAL_SUMMARY_LITERAL"},
                      GradCase{"s2n_dcn_nopad",
                               "interleaving: INTERLEAVING_S2N interaction_backbone: "
                               "INTERACTION_BACKBONE_DCN recent_zero_padding: false "
                               "sequence_residual: SEQUENCE_RESIDUAL_LITERAL"},
                      GradCase{"sole_dot",
                               "interleaving: INTERLEAVING_SOLE interaction_backbone: "
                               "INTERACTION_BACKBONE_DOT num_dense_features: 0"}),
    [](const ::testing::TestParamInfo<GradCase>& i) { return std::string(i.param.name); });

TEST(InterFormerTest, LossMatchesClosedForm) {
  auto made = InterFormer::Create(Parse(kTiny), 4, 5, DType::kF64, Device::Cpu());
  ASSERT_TRUE(made.ok());
  InterFormer& m = **made;
  InitStore(&m.parameters(), 3);
  Batch x = MakeBatch(m.dims(), 4, 5, 7, DType::kF64);
  Tensor logits = Tensor::Empty(Shape{4}, DType::kF64), loss = Tensor::Empty(Shape{1}, DType::kF64),
         grad = Tensor::Empty(Shape{4}, DType::kF64);
  m.Forward(kCpu, x.Inputs(), logits);
  m.Loss(kCpu, x.labels, loss, grad);
  double want = 0.0;
  for (int i = 0; i < 4; ++i) {
    const double z = logits.data<double>()[i], y = x.labels.data<double>()[i];
    want += (std::max(z, 0.0) - y * z + std::log1p(std::exp(-std::fabs(z)))) / 4.0;
    EXPECT_NEAR(grad.data<double>()[i], (1.0 / (1.0 + std::exp(-z)) - y) / 4.0, 1e-15);
  }
  EXPECT_NEAR(loss.data<double>()[0], want, 1e-14);
}

// Same seed and inputs: identical bits, run to run; a smaller batch runs on views of the
// planned buffers and reproduces the corresponding rows.
TEST(InterFormerTest, DeterministicAndSmallerBatches) {
  const MC cfg = Parse(kTiny, "embedding_dim: 8");
  auto a = InterFormer::Create(cfg, 8, 6, DType::kF32, Device::Cpu());
  auto c = InterFormer::Create(cfg, 8, 6, DType::kF32, Device::Cpu());
  ASSERT_TRUE(a.ok() && c.ok());
  (*a)->Initialize(5);
  (*c)->Initialize(5);
  ASSERT_EQ(std::memcmp((*a)->parameters().values().raw(), (*c)->parameters().values().raw(),
                        (*a)->parameters().values().nbytes()),
            0);
  Batch x = MakeBatch((*a)->dims(), 8, 6, 9, DType::kF32);
  Tensor la = Tensor::Empty(Shape{8}, DType::kF32), lc = Tensor::Empty(Shape{8}, DType::kF32);
  Tensor ga = Tensor::Empty(Shape{8}, DType::kF32);
  for (auto* m : {&*a, &*c}) {
    (*m)->parameters().ZeroGrad();
    (*m)->Forward(kCpu, x.Inputs(), m == &*a ? la : lc);
    (*m)->Loss(kCpu, x.labels, TensorView(), ga);
    (*m)->Backward(kCpu, ga);
  }
  EXPECT_EQ(la.ToVector<float>(), lc.ToVector<float>());
  EXPECT_EQ(std::memcmp((*a)->parameters().grads().raw(), (*c)->parameters().grads().raw(),
                        (*a)->parameters().grads().nbytes()),
            0);
  // Rows 0..2 alone.
  DenseInputs in3;
  in3.dense = x.dense.view().Slice0(0, 3);
  in3.sparse = x.sparse.view().Slice0(0, 3);
  for (const Tensor& s : x.seqs) in3.seq.push_back(s.view().Slice0(0, 3));
  in3.seq_mask = x.mask.view().Slice0(0, 3);
  Tensor l3 = Tensor::Empty(Shape{3}, DType::kF32);
  (*c)->Forward(kCpu, in3, l3);
  for (int i = 0; i < 3; ++i) EXPECT_NEAR(l3.data<float>()[i], la.data<float>()[i], 1e-6f);
}

// Packed positions (the CPU default) and the full computation agree on the logits, every
// parameter gradient and every input gradient, for modes with and without the CLS prefix and
// with recent_zero_padding off (padded recent slots then reach the head).
TEST(InterFormerTest, PackedPositionsMatchFullComputation) {
  for (const char* extra :
       {"", "interleaving: INTERLEAVING_S2N recent_zero_padding: false num_recent_tokens: 3",
        "interleaving: INTERLEAVING_SEP final_summary: FINAL_SUMMARY_LITERAL"}) {
    SCOPED_TRACE(extra);
    auto made = InterFormer::Create(Parse(kTiny, extra), 4, 5, DType::kF64, Device::Cpu());
    ASSERT_TRUE(made.ok()) << made.status();
    InterFormer& m = **made;
    ASSERT_TRUE(m.packed_positions());
    InitStore(&m.parameters(), 8);
    Batch x = MakeBatch(m.dims(), 4, 5, 31, DType::kF64);
    std::vector<std::vector<double>> logits, grads, in_grads;
    for (bool packed : {true, false}) {
      m.SetPackedPositions(packed);
      Tensor lg = Tensor::Empty(Shape{4}, DType::kF64), g = Tensor::Empty(Shape{4}, DType::kF64);
      m.parameters().ZeroGrad();
      m.Forward(kCpu, x.Inputs(), lg);
      m.Loss(kCpu, x.labels, TensorView(), g);
      m.Backward(kCpu, g);
      logits.push_back(lg.ToVector<double>());
      const double* pg = m.parameters().grads().data<double>();
      grads.emplace_back(pg, pg + m.parameters().total_elements());
      std::vector<double> ig;
      for (const TensorView& v : m.input_grads().seq) {
        ig.insert(ig.end(), v.data<double>(), v.data<double>() + v.numel());
      }
      const TensorView sp = m.input_grads().sparse;
      ig.insert(ig.end(), sp.data<double>(), sp.data<double>() + sp.numel());
      in_grads.push_back(ig);
    }
    auto close = [](const std::vector<double>& a, const std::vector<double>& b) {
      double worst = 0.0, scale = 1e-30;
      for (size_t i = 0; i < a.size(); ++i) {
        worst = std::max(worst, std::fabs(a[i] - b[i]));
        scale = std::max(scale, std::fabs(b[i]));
      }
      return worst / scale;
    };
    EXPECT_LT(close(logits[0], logits[1]), 1e-12);
    EXPECT_LT(close(grads[0], grads[1]), 1e-12);
    EXPECT_LT(close(in_grads[0], in_grads[1]), 1e-12);
  }
}

TEST(InterFormerTest, ValidateInputsNamesTheTensor) {
  auto m = InterFormer::Create(Parse(kTiny), 4, 5, DType::kF32, Device::Cpu());
  ASSERT_TRUE(m.ok());
  Batch x = MakeBatch((*m)->dims(), 4, 5, 1, DType::kF32);
  DenseInputs in = x.Inputs();
  EXPECT_TRUE((*m)->ValidateInputs(in).ok());
  Tensor wrong = Tensor::Zeros(Shape{4, 6, 4}, DType::kF32);
  in.seq[1] = wrong;
  const Status s = (*m)->ValidateInputs(in);
  EXPECT_NE(s.message().find("InterFormer input seq.1: expected f32(4, 5, 4), got f32(4, 6, 4)"),
            std::string::npos)
      << s;
  Batch big = MakeBatch((*m)->dims(), 5, 5, 1, DType::kF32);
  EXPECT_NE((*m)->ValidateInputs(big.Inputs()).message().find("must be in [1, 4]"),
            std::string::npos);
}

// SetGradsFinalCallback: in every mode, each Backward reports every parameter element exactly
// once, and a range only once its gradient is final: its bits at the callback equal its bits
// at the end of Backward (two steps, so a range reported before a later accumulation fails).
TEST(InterFormerTest, GradsFinalRangesCoverEveryElementOnceAndAreFinal) {
  for (const char* extra :
       {"", "interleaving: INTERLEAVING_N2S final_summary: FINAL_SUMMARY_LITERAL",
        "interleaving: INTERLEAVING_S2N", "interleaving: INTERLEAVING_SEP",
        "interleaving: INTERLEAVING_SEP final_summary: FINAL_SUMMARY_LITERAL",
        "interleaving: INTERLEAVING_SOLE",
        "interleaving: INTERLEAVING_SOLE final_summary: FINAL_SUMMARY_LITERAL", "num_layers: 1",
        "num_layers: 3 num_dense_features: 0"}) {
    SCOPED_TRACE(extra);
    auto made = InterFormer::Create(Parse(kTiny, extra), 4, 5, DType::kF32, Device::Cpu());
    ASSERT_TRUE(made.ok()) << made.status();
    InterFormer& m = **made;
    m.Initialize(3);
    const int64_t P = m.parameters().total_elements();
    struct Report {
      int64_t begin, end;
      std::vector<float> grad;  // the range's gradient when it was reported
    };
    std::vector<Report> reports;
    m.SetGradsFinalCallback([&](int64_t begin, int64_t end) {
      ASSERT_TRUE(0 <= begin && begin < end && end <= P) << begin << " " << end;
      const float* g = m.parameters().grads().data<float>();
      reports.push_back(Report{begin, end, std::vector<float>(g + begin, g + end)});
    });
    for (int step = 0; step < 2; ++step) {
      SCOPED_TRACE(step);
      reports.clear();
      Batch x = MakeBatch(m.dims(), 4, 5, 21 + step, DType::kF32);
      Tensor lg = Tensor::Empty(Shape{4}, DType::kF32), g = Tensor::Empty(Shape{4}, DType::kF32);
      m.parameters().ZeroGrad();
      m.Forward(kCpu, x.Inputs(), lg);
      m.Loss(kCpu, x.labels, TensorView(), g);
      m.Backward(kCpu, g);
      ASSERT_FALSE(reports.empty());
      // The head's range is the first reported (the last registered parameters).
      EXPECT_EQ(reports[0].end, P);
      std::vector<int> times(P, 0);
      const float* final_grad = m.parameters().grads().data<float>();
      int64_t nonzero = 0;
      for (const Report& r : reports) {
        for (int64_t i = r.begin; i < r.end; ++i) ++times[i];
        EXPECT_EQ(
            std::memcmp(r.grad.data(), final_grad + r.begin, (r.end - r.begin) * sizeof(float)), 0)
            << "range [" << r.begin << ", " << r.end << ") changed after it was reported final";
        for (float v : r.grad) nonzero += v != 0.0f;
      }
      EXPECT_GT(nonzero, 0);  // the snapshots hold real gradients, not only zeros
      for (const Parameter& p : m.parameters().parameters()) {
        for (int64_t i = p.offset; i < p.offset + p.numel(); ++i) {
          if (times[i] != 1) {
            ADD_FAILURE() << p.name << " element " << i - p.offset << " reported " << times[i]
                          << " times";
            break;
          }
        }
      }
    }
    // Off again: Backward reports nothing.
    m.SetGradsFinalCallback(nullptr);
    reports.clear();
    Batch x = MakeBatch(m.dims(), 4, 5, 30, DType::kF32);
    Tensor lg = Tensor::Empty(Shape{4}, DType::kF32), g = Tensor::Empty(Shape{4}, DType::kF32);
    m.Forward(kCpu, x.Inputs(), lg);
    m.Loss(kCpu, x.labels, TensorView(), g);
    m.Backward(kCpu, g);
    EXPECT_TRUE(reports.empty());
  }
}

}  // namespace
}  // namespace loom::model
