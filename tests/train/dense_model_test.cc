// Tests of the DenseModel adapter (csrc/train/dense_model.h) as the trainer drives it: the
// gradient-final callback (SetGradsFinalCallback) of both model types reports every parameter
// element exactly once per Backward, and only once its gradient is final (the bits at the
// callback equal the bits at the end of Backward). The trainer relies on both to start the
// gradient all-reduce chunk by chunk during the dense backward.
#include "csrc/train/dense_model.h"

#include <cstring>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "csrc/core/rng.h"
#include "csrc/proto/config_io.h"
#include "tests/model/layers/layer_test_util.h"

namespace loom::train {
namespace {

using layers::test::kCpu;
using layers::test::PaddedMask;

Tensor RandomF32(const Shape& shape, uint64_t stream) {
  Tensor t = Tensor::Empty(shape, DType::kF32);
  FillUniform(kCpu, t.view(), 77, MakeStream(kRngTest, stream, 3), -1.0, 1.0);
  return t;
}

struct Case {
  const char* type;
  const char* config;
};

TEST(DenseModelTest, GradsFinalRangesCoverEveryElementOnceAndAreFinal) {
  const char kBase[] =
      "embedding_dim: 8 num_heads: 2 num_sparse_features: 3 num_sequences: 2 num_layers: 2 "
      "num_cls_tokens: 2 num_pma_tokens: 1 num_recent_tokens: 2 dcn_rank: 3 "
      "head_hidden_dims: [6, 4] pffn_hypernet_hidden_dim: 3 ";
  for (const Case& c : {Case{kModelInterFormer, "num_dense_features: 2"},
                        Case{kModelInterFormer,
                             "num_dense_features: 0 interleaving: "
                             "INTERLEAVING_SEP final_summary: "
                             "FINAL_SUMMARY_LITERAL"},
                        Case{kModelDlrmBaseline, "num_dense_features: 2"},
                        Case{kModelDlrmBaseline, "num_dense_features: 0"}}) {
    SCOPED_TRACE(std::string(c.type) + " " + c.config);
    proto::ModelConfig cfg;
    ASSERT_TRUE(config::ParseTextProto(std::string(kBase) + c.config, "test", &cfg).ok());
    const int64_t b = 4, t = 5;
    auto made = CreateDenseModel(c.type, cfg, b, t, Device::Cpu());
    ASSERT_TRUE(made.ok()) << made.status();
    DenseModel& m = **made;
    m.Initialize(9);
    const int64_t P = m.parameters().total_elements();
    ASSERT_GT(P, 0);
    std::vector<int> times(P, 0);
    std::vector<std::vector<float>> snaps;
    std::vector<int64_t> begins;
    m.SetGradsFinalCallback([&](int64_t begin, int64_t end) {
      ASSERT_TRUE(0 <= begin && begin < end && end <= P) << begin << " " << end;
      for (int64_t i = begin; i < end; ++i) ++times[i];
      const float* g = m.parameters().grads().data<float>();
      begins.push_back(begin);
      snaps.emplace_back(g + begin, g + end);
    });
    const int64_t n = cfg.num_sparse_features(), k = cfg.num_sequences(), d = cfg.embedding_dim(),
                  dm = cfg.num_dense_features();
    Tensor dense = RandomF32(Shape{b, dm}, 1), sparse = RandomF32(Shape{b, n, d}, 2);
    std::vector<Tensor> seqs;
    for (int64_t j = 0; j < k; ++j) seqs.push_back(RandomF32(Shape{b, t, d}, 3 + j));
    Tensor mask = PaddedMask(t, {5, 0, 1, 3});
    Tensor labels = Tensor::Zeros(Shape{b}, DType::kF32);
    labels.data<float>()[1] = labels.data<float>()[2] = 1.0f;
    model::DenseInputs in;
    in.dense = dense;
    in.sparse = sparse;
    for (const Tensor& s : seqs) in.seq.push_back(s);
    in.seq_mask = mask;
    ASSERT_TRUE(m.ValidateInputs(in).ok()) << m.ValidateInputs(in);
    Tensor logits = Tensor::Empty(Shape{b}, DType::kF32);
    Tensor grad_logits = Tensor::Empty(Shape{b}, DType::kF32);
    m.SetTraining(true, 5, 0);
    for (int step = 0; step < 2; ++step) {
      SCOPED_TRACE(step);
      std::fill(times.begin(), times.end(), 0);
      snaps.clear();
      begins.clear();
      m.parameters().ZeroGrad();
      m.Forward(kCpu, in, logits);
      m.Loss(kCpu, labels, TensorView(), grad_logits, 0.5);
      m.Backward(kCpu, grad_logits);
      ASSERT_FALSE(snaps.empty());
      for (int64_t i = 0; i < P; ++i) ASSERT_EQ(times[i], 1) << "element " << i;
      const float* g = m.parameters().grads().data<float>();
      int64_t nonzero = 0;
      for (size_t r = 0; r < snaps.size(); ++r) {
        EXPECT_EQ(std::memcmp(snaps[r].data(), g + begins[r], snaps[r].size() * sizeof(float)), 0)
            << "range at " << begins[r] << " changed after it was reported final";
        for (float v : snaps[r]) nonzero += v != 0.0f;
      }
      EXPECT_GT(nonzero, 0);
    }
  }
}

}  // namespace
}  // namespace loom::train
