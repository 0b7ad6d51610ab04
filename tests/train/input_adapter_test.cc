// Tests of the data -> embedding -> model wiring (csrc/train/input_adapter.h): the config
// checks name the field and both values, batches map to the embedding features by name,
// concatenated batches keep CSR offsets right, the sequence mask is the union of the masks.
#include "csrc/train/input_adapter.h"

#include <gtest/gtest.h>

#include "csrc/proto/config_io.h"

namespace loom::train {
namespace {

proto::DataSchema Schema() {
  proto::DataSchema s;
  LOOM_CHECK_OK(config::ParseTextProto(R"(
    name: "s" dense { name: "d0" }
    sparse { name: "user" } sparse { name: "tags" multi_hot: true weighted: true }
    sequence { name: "hist" max_length: 3 } sequence { name: "hist_cat" max_length: 3 }
    group_id: "user")",
                                       "schema", &s));
  return s;
}

proto::LoomConfig Config(const std::string& extra = "") {
  proto::LoomConfig c;
  LOOM_CHECK_OK(config::ParseTextProto(R"(
    model { embedding_dim: 4 num_dense_features: 1 num_sparse_features: 2 num_sequences: 2 }
    embedding {
      tables { name: "u" num_rows: 10 dim: 4 } tables { name: "t" num_rows: 10 dim: 4 }
      tables { name: "h" num_rows: 10 dim: 4 }
      features { name: "user" table: "u" }
      features { name: "tags" kind: MULTI_HOT table: "t" pooling: POOLING_WEIGHTED_SUM
                 max_ids_per_sample: 4 }
      features { name: "hist" kind: SEQUENCE table: "h" max_length: 3 }
      features { name: "hist_cat" kind: SEQUENCE table: "h" max_length: 3 }
    })" + extra,
                                       "config", &c));
  return c;
}

TEST(InputAdapterTest, AcceptsAMatchingConfig) {
  auto a = InputAdapter::Create(Config(), Schema(), 8, false);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->seq_len(), 3);
  EXPECT_EQ(a->num_dense(), 1);
}

TEST(InputAdapterTest, ErrorsNameTheFieldAndBothValues) {
  proto::LoomConfig c = Config();
  c.mutable_model()->set_num_sparse_features(4);
  c.mutable_model()->set_embedding_dim(8);
  c.mutable_embedding()->mutable_features(0)->set_name("usr");
  c.mutable_embedding()->mutable_features(2)->set_kind(proto::EmbeddingFeatureConfig::SINGLE);
  auto a = InputAdapter::Create(c, Schema(), 8, false);
  ASSERT_FALSE(a.ok());
  const std::string& m = a.status().message();
  EXPECT_NE(m.find("embedding.features[0] (usr).name: the data schema 's' has no sparse feature "
                   "named 'usr'"),
            std::string::npos)
      << m;
  EXPECT_NE(m.find("embedding.features[2] (hist).name: the data schema 's' has no sparse "
                   "feature named 'hist' (it is a sequence feature: use kind SEQUENCE)"),
            std::string::npos)
      << m;
  EXPECT_NE(m.find("table 't' has dim 4, the model's embedding_dim is 8"), std::string::npos) << m;
  EXPECT_NE(m.find("model.num_sequences: must equal the 1 SEQUENCE embedding features, got 2"),
            std::string::npos)
      << m;
  EXPECT_NE(m.find("model.num_sparse_features: must equal the 3 pooled"), std::string::npos) << m;
}

TEST(InputAdapterTest, InterFormerNeedsASequence) {
  proto::LoomConfig c = Config();
  c.mutable_embedding()->mutable_features()->DeleteSubrange(2, 2);
  c.mutable_model()->set_num_sequences(0);
  EXPECT_FALSE(InputAdapter::Create(c, Schema(), 8, false).ok());
  EXPECT_TRUE(InputAdapter::Create(c, Schema(), 8, true).ok());
}

data::Batch MakeBatch(int64_t b, int64_t seed) {
  data::Batch x;
  x.Reset(Schema());
  x.size = b;
  x.num_dense = 1;
  x.sparse.resize(2);
  x.sequences.resize(2);
  for (auto* c : {&x.sparse[0], &x.sparse[1], &x.sequences[0], &x.sequences[1]}) {
    c->offsets.assign(1, 0);
    c->ids.clear();
    c->weights.clear();
  }
  for (int64_t i = 0; i < b; ++i) {
    x.labels.push_back(static_cast<float>((i + seed) % 2));
    x.dense.push_back(static_cast<float>(seed * 10 + i));
    x.group_ids.push_back(seed * 100 + i);
    x.sparse[0].ids.push_back(seed + i);
    x.sparse[0].offsets.push_back(x.sparse[0].ids.size());
    for (int64_t j = 0; j < i % 3; ++j) {
      x.sparse[1].ids.push_back(j);
      x.sparse[1].weights.push_back(0.5f * static_cast<float>(j));
    }
    x.sparse[1].offsets.push_back(x.sparse[1].ids.size());
    for (int s = 0; s < 2; ++s) {
      for (int64_t j = 0; j < i % 4; ++j) x.sequences[s].ids.push_back(seed + j + s);
      x.sequences[s].offsets.push_back(x.sequences[s].ids.size());
    }
  }
  return x;
}

TEST(InputAdapterTest, ConcatBatchesShiftsOffsets) {
  const data::Batch a = MakeBatch(3, 1), b = MakeBatch(4, 2);
  data::Batch out;
  InputAdapter::ConcatBatches({&a, &b}, &out);
  EXPECT_EQ(out.size, 7);
  ASSERT_EQ(out.labels.size(), 7u);
  for (int64_t i = 0; i < 7; ++i) {
    const data::Batch& src = i < 3 ? a : b;
    const int64_t k = i < 3 ? i : i - 3;
    EXPECT_EQ(out.labels[i], src.labels[k]);
    EXPECT_EQ(out.dense[i], src.dense[k]);
    EXPECT_EQ(out.group_ids[i], src.group_ids[k]);
    for (int f = 0; f < 2; ++f) {
      ASSERT_EQ(out.sparse[f].length(i), src.sparse[f].length(k))
          << "feature " << f << " row " << i;
      for (int64_t j = 0; j < src.sparse[f].length(k); ++j) {
        EXPECT_EQ(out.sparse[f].ids_of(i)[j], src.sparse[f].ids_of(k)[j]);
      }
    }
    for (int s = 0; s < 2; ++s) {
      ASSERT_EQ(out.sequences[s].length(i), src.sequences[s].length(k));
    }
  }
  EXPECT_EQ(out.sparse[1].weights.size(), a.sparse[1].weights.size() + b.sparse[1].weights.size());
}

TEST(InputAdapterTest, EmbeddingBatchFollowsFeatureOrderAndMaskIsTheUnion) {
  proto::LoomConfig c = Config();
  auto a = InputAdapter::Create(c, Schema(), 8, false);
  ASSERT_TRUE(a.ok()) << a.status();
  const data::Batch x = MakeBatch(4, 1);
  embedding::EmbeddingBatch eb;
  a->EmbeddingBatch(x, &eb);
  ASSERT_EQ(eb.features.size(), 4u);
  EXPECT_EQ(eb.batch_size, 4);
  EXPECT_EQ(eb.features[0].ids.data<int64_t>(), x.sparse[0].ids.data());
  EXPECT_EQ(eb.features[1].weights.numel(), static_cast<int64_t>(x.sparse[1].weights.size()));
  EXPECT_EQ(eb.features[3].offsets.data<int64_t>(), x.sequences[1].offsets.data());
  // Two masks (B = 4, T = 3): the model gets their union.
  std::vector<float> m0 = {0, 0, 1, 0, 0, 0, 1, 1, 1, 0, 1, 1};
  std::vector<float> m1 = {0, 1, 1, 0, 0, 0, 0, 1, 1, 0, 0, 1};
  std::vector<float> pooled(4 * 2 * 4, 0.f), s0(4 * 3 * 4, 0.f), s1(4 * 3 * 4, 0.f);
  embedding::EmbeddingOutputs out;
  out.pooled = TensorView(pooled.data(), TensorSpec{Shape{4, 2, 4}, DType::kF32});
  out.sequences = {TensorView(s0.data(), TensorSpec{Shape{4, 3, 4}, DType::kF32}),
                   TensorView(s1.data(), TensorSpec{Shape{4, 3, 4}, DType::kF32})};
  out.masks = {TensorView(m0.data(), TensorSpec{Shape{4, 3}, DType::kF32}),
               TensorView(m1.data(), TensorSpec{Shape{4, 3}, DType::kF32})};
  const model::DenseInputs in = a->DenseInputs(x, out);
  EXPECT_EQ(in.dense.shape(), (Shape{4, 1}));
  EXPECT_EQ(in.sparse.shape(), (Shape{4, 2, 4}));
  ASSERT_EQ(in.seq.size(), 2u);
  ASSERT_EQ(in.seq_mask.shape(), (Shape{4, 3}));
  for (int i = 0; i < 12; ++i) {
    EXPECT_EQ(in.seq_mask.data<uint8_t>()[i], (m0[i] != 0 || m1[i] != 0) ? 1 : 0) << i;
  }
}

TEST(InputAdapterTest, EmptyBatchHasOneSampleAndNoIds) {
  data::Batch x;
  InputAdapter::MakeEmptyBatch(Schema(), &x);
  EXPECT_EQ(x.size, 1);
  EXPECT_EQ(x.dense.size(), 1u);
  EXPECT_EQ(x.group_ids.size(), 1u);
  for (const auto& c : x.sparse) EXPECT_EQ(c.offsets, (std::vector<int64_t>{0, 0}));
  for (const auto& c : x.sequences) EXPECT_EQ(c.offsets, (std::vector<int64_t>{0, 0}));
}

}  // namespace
}  // namespace loom::train
