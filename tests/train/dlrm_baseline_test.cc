// Tests of the DLRM-style baseline (csrc/model/dlrm_baseline.h): a whole-model gradient check
// in double precision against central differences (inputs and parameters, padded sequences of
// mixed lengths), the forward against a plain reference computed here, and config errors.
#include "csrc/model/dlrm_baseline.h"

#include <cmath>

#include <gtest/gtest.h>

#include "csrc/proto/config_io.h"
#include "tests/model/layers/layer_test_util.h"
#include "tests/testing/gradcheck.h"

namespace loom::model {
namespace {

using layers::test::InitStore;
using layers::test::kCpu;
using layers::test::PaddedMask;
using layers::test::ParamVars;
using layers::test::RandomF64;
using testing::CheckGradients;
using testing::GradCheckOptions;
using testing::GradCheckResult;
using testing::GradCheckVar;

proto::ModelConfig Config(const std::string& text) {
  proto::ModelConfig c;
  LOOM_CHECK_OK(config::ParseTextProto(text, "test", &c));
  return c;
}

struct Inputs {
  Tensor dense, sparse, mask;
  std::vector<Tensor> seqs;
  DenseInputs view() const {
    DenseInputs in;
    in.dense = dense;
    in.sparse = sparse;
    for (const Tensor& s : seqs) in.seq.push_back(s);
    in.seq_mask = mask;
    return in;
  }
};

Inputs MakeInputs(int64_t b, int64_t m, int64_t n, int64_t k, int64_t t, int64_t d) {
  Inputs x;
  x.dense = RandomF64(Shape{b, m}, 1);
  x.sparse = RandomF64(Shape{b, n, d}, 2);
  for (int64_t j = 0; j < k; ++j) x.seqs.push_back(RandomF64(Shape{b, t, d}, 3 + j));
  std::vector<int64_t> lengths = {t, 0, 1, 3};
  lengths.resize(b, 2);
  x.mask = PaddedMask(t, lengths);
  return x;
}

TEST(DlrmBaselineTest, WholeModelMatchesFiniteDifferences) {
  const int64_t b = 4, m = 3, n = 2, k = 2, t = 5, d = 4;
  auto made = DlrmBaseline::Create(Config("embedding_dim: 4 num_dense_features: 3 "
                                          "num_sparse_features: 2 num_sequences: 2 "
                                          "head_hidden_dims: [6, 5]"),
                                   b, t, DType::kF64, Device::Cpu());
  ASSERT_TRUE(made.ok()) << made.status();
  DlrmBaseline& net = **made;
  EXPECT_EQ(net.num_tokens(), 1 + n + k);
  InitStore(&net.parameters(), 5);
  ParamVars pv(&net.parameters());
  Inputs x = MakeInputs(b, m, n, k, t, d);
  const DenseInputs in = x.view();
  ASSERT_TRUE(net.ValidateInputs(in).ok()) << net.ValidateInputs(in);
  Tensor g_dense = Tensor::Empty(x.dense.spec()), g_sparse = Tensor::Empty(x.sparse.spec());
  std::vector<Tensor> g_seq;
  std::vector<GradCheckVar> vars = {{"dense", x.dense, g_dense}, {"sparse", x.sparse, g_sparse}};
  for (int64_t j = 0; j < k; ++j) {
    g_seq.push_back(Tensor::Empty(x.seqs[j].spec()));
    vars.push_back({"seq." + std::to_string(j), x.seqs[j], g_seq[j]});
  }
  for (const auto& v : pv.vars()) vars.push_back(v);
  Tensor logits = Tensor::Empty(Shape{b}, DType::kF64);
  auto fwd = [&] {
    pv.PushValues();
    net.Forward(kCpu, in, logits);
  };
  auto bwd = [&](const std::vector<Tensor>& g) {
    pv.PushGrads();
    net.Backward(kCpu, g[0]);
    pv.PullGrads();
    const DenseInputGrads& ig = net.input_grads();
    CopyTensor(ig.dense, g_dense);
    CopyTensor(ig.sparse, g_sparse);
    for (int64_t j = 0; j < k; ++j) CopyTensor(ig.seq[j], g_seq[j]);
  };
  GradCheckOptions opt;
  opt.max_checks_per_var = 80;
  const GradCheckResult r = CheckGradients(vars, {logits}, fwd, bwd, opt);
  EXPECT_TRUE(r.ok) << r.ToString();
  EXPECT_GT(r.checked, 100);
}

// The forward against a reference written out here: x = [Wd·dense + bd, sparse_1..n,
// masked means], a linear head (head_hidden_dims [0]): logit = w · flatten(x) + b.
TEST(DlrmBaselineTest, ForwardMatchesPlainReference) {
  const int64_t b = 4, m = 2, n = 1, k = 1, t = 3, d = 2;
  auto made = DlrmBaseline::Create(Config("embedding_dim: 2 num_dense_features: 2 "
                                          "num_sparse_features: 1 num_sequences: 1 "
                                          "head_hidden_dims: [0]"),
                                   b, t, DType::kF64, Device::Cpu());
  ASSERT_TRUE(made.ok()) << made.status();
  DlrmBaseline& net = **made;
  InitStore(&net.parameters(), 9);
  Inputs x = MakeInputs(b, m, n, k, t, d);
  Tensor logits = Tensor::Empty(Shape{b}, DType::kF64);
  net.Forward(kCpu, x.view(), logits);
  const ParameterStore& st = net.parameters();
  const double* wd = st.Find("dense_proj.weight")->value.data<double>();  // (d, m)
  const double* bd = st.Find("dense_proj.bias")->value.data<double>();
  const double* wo = st.Find("head.out.weight")->value.data<double>();  // (1, 3d)
  const double bo = st.Find("head.out.bias")->value.data<double>()[0];
  for (int64_t i = 0; i < b; ++i) {
    std::vector<double> tok;
    for (int64_t c = 0; c < d; ++c) {
      double s = bd[c];
      for (int64_t j = 0; j < m; ++j) s += wd[c * m + j] * x.dense.data<double>()[i * m + j];
      tok.push_back(s);
    }
    for (int64_t c = 0; c < d; ++c) tok.push_back(x.sparse.data<double>()[i * d + c]);
    double count = 0;
    std::vector<double> mean(d, 0.0);
    for (int64_t p = 0; p < t; ++p) {
      if (!x.mask.data<uint8_t>()[i * t + p]) continue;
      count += 1;
      for (int64_t c = 0; c < d; ++c) mean[c] += x.seqs[0].data<double>()[(i * t + p) * d + c];
    }
    for (int64_t c = 0; c < d; ++c) tok.push_back(count > 0 ? mean[c] / count : 0.0);
    double z = bo;
    for (size_t c = 0; c < tok.size(); ++c) z += wo[c] * tok[c];
    EXPECT_NEAR(logits.data<double>()[i], z, 1e-12 * (1 + std::fabs(z))) << "sample " << i;
  }
}

TEST(DlrmBaselineTest, ConfigErrorsNameTheField) {
  auto bad = DlrmBaseline::Create(Config("embedding_dim: 4 num_sequences: 0 "
                                         "num_sparse_features: 0 num_dense_features: 0"),
                                  2, 3, DType::kF32, Device::Cpu());
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("model.num_sparse_features"), std::string::npos)
      << bad.status();
  auto bad2 = DlrmBaseline::Create(Config("embedding_dim: 4 num_sparse_features: 1 "
                                          "head_hidden_dims: [8, -1]"),
                                   2, 3, DType::kF32, Device::Cpu());
  ASSERT_FALSE(bad2.ok());
  EXPECT_NE(bad2.status().message().find("model.head_hidden_dims[1]"), std::string::npos)
      << bad2.status();
}

// Without sequences (k = 0) the model is embeddings + MLP and needs no mask.
TEST(DlrmBaselineTest, NoSequences) {
  auto made = DlrmBaseline::Create(Config("embedding_dim: 4 num_sparse_features: 2 "
                                          "num_sequences: 0 head_hidden_dims: [8]"),
                                   3, 0, DType::kF32, Device::Cpu());
  ASSERT_TRUE(made.ok()) << made.status();
  Tensor sparse = Tensor::Zeros(Shape{3, 2, 4}, DType::kF32);
  DenseInputs in;
  in.sparse = sparse;
  EXPECT_TRUE((*made)->ValidateInputs(in).ok()) << (*made)->ValidateInputs(in);
}

}  // namespace
}  // namespace loom::model
