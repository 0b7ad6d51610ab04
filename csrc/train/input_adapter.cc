#include "csrc/train/input_adapter.h"

#include <algorithm>
#include <map>
#include <utility>

namespace loom::train {
namespace {

using proto::EmbeddingFeatureConfig;

template <typename T>
ConstTensorView VectorView(const std::vector<T>& v) {
  return ConstTensorView(v.data(),
                         TensorSpec{Shape{static_cast<int64_t>(v.size())}, DTypeOf<T>::value});
}

std::string Quote(const std::string& s) { return "'" + s + "'"; }

}  // namespace

StatusOr<InputAdapter> InputAdapter::Create(const proto::LoomConfig& config,
                                            const proto::DataSchema& schema, int64_t max_batch,
                                            bool allow_no_sequences) {
  InputAdapter a;
  std::vector<std::string> errors;
  std::map<std::string, int> sparse_by_name, seq_by_name;
  for (int i = 0; i < schema.sparse_size(); ++i) sparse_by_name[schema.sparse(i).name()] = i;
  for (int i = 0; i < schema.sequence_size(); ++i) seq_by_name[schema.sequence(i).name()] = i;
  std::map<std::string, int> dim_of_table;
  for (const auto& t : config.embedding().tables()) dim_of_table[t.name()] = t.dim();

  const int64_t d = config.model().embedding_dim();
  int64_t seq_len = -1;
  const auto& features = config.embedding().features();
  for (int f = 0; f < features.size(); ++f) {
    const EmbeddingFeatureConfig& fc = features.Get(f);
    const std::string path = "embedding.features[" + std::to_string(f) + "] (" + fc.name() + ")";
    Column col;
    // Counted by the configured kind, whether or not the data has the column.
    ++(fc.kind() == EmbeddingFeatureConfig::SEQUENCE ? a.num_sequences_ : a.num_pooled_);
    if (fc.kind() == EmbeddingFeatureConfig::SEQUENCE) {
      auto it = seq_by_name.find(fc.name());
      if (it == seq_by_name.end()) {
        errors.push_back(path + ".name: the data schema " + Quote(schema.name()) +
                         " has no sequence feature named " + Quote(fc.name()) +
                         (sparse_by_name.count(fc.name()) ? " (it is a sparse feature: use kind "
                                                            "SINGLE or MULTI_HOT)"
                                                          : ""));
        continue;
      }
      col.sequence = true;
      col.index = it->second;
      if (seq_len < 0) {
        seq_len = fc.max_length();
      } else if (fc.max_length() != seq_len) {
        errors.push_back(path +
                         ".max_length: every SEQUENCE feature must have the same T (the "
                         "sequences are position-aligned), " +
                         std::to_string(seq_len) + " before, got " +
                         std::to_string(fc.max_length()));
      }
    } else {
      auto it = sparse_by_name.find(fc.name());
      if (it == sparse_by_name.end()) {
        errors.push_back(path + ".name: the data schema " + Quote(schema.name()) +
                         " has no sparse feature named " + Quote(fc.name()) +
                         (seq_by_name.count(fc.name()) ? " (it is a sequence feature: use kind "
                                                         "SEQUENCE)"
                                                       : ""));
        continue;
      }
      col.index = it->second;
      const proto::SparseFeatureSpec& spec = schema.sparse(it->second);
      col.weighted = spec.weighted();
      if (fc.kind() == EmbeddingFeatureConfig::SINGLE && spec.multi_hot()) {
        errors.push_back(path +
                         ".kind: the data feature is multi-hot, got SINGLE (use "
                         "MULTI_HOT)");
      }
      if (fc.pooling() == EmbeddingFeatureConfig::POOLING_WEIGHTED_SUM && !spec.weighted()) {
        errors.push_back(path +
                         ".pooling: POOLING_WEIGHTED_SUM needs a weighted data feature, "
                         "and " +
                         Quote(fc.name()) + " has no weights");
      }
    }
    auto dim = dim_of_table.find(fc.table());
    if (dim != dim_of_table.end() && dim->second != d) {
      errors.push_back(path + ".table: table " + Quote(fc.table()) + " has dim " +
                       std::to_string(dim->second) + ", the model's embedding_dim is " +
                       std::to_string(d) + " (every token has d dimensions)");
    }
    a.columns_.push_back(col);
  }
  const auto& mc = config.model();
  if (mc.num_dense_features() != schema.dense_size()) {
    errors.push_back("model.num_dense_features: must equal the " +
                     std::to_string(schema.dense_size()) + " dense features of the data schema " +
                     Quote(schema.name()) + ", got " + std::to_string(mc.num_dense_features()));
  }
  if (mc.num_sparse_features() != a.num_pooled_) {
    errors.push_back("model.num_sparse_features: must equal the " + std::to_string(a.num_pooled_) +
                     " pooled (SINGLE and MULTI_HOT) embedding features, got " +
                     std::to_string(mc.num_sparse_features()));
  }
  if (mc.num_sequences() != a.num_sequences_) {
    errors.push_back("model.num_sequences: must equal the " + std::to_string(a.num_sequences_) +
                     " SEQUENCE embedding features, got " + std::to_string(mc.num_sequences()));
  }
  if (a.num_sequences_ == 0 && !allow_no_sequences) {
    errors.push_back("embedding.features: the InterFormer needs at least one SEQUENCE feature");
  }
  if (!errors.empty()) {
    std::string msg;
    for (const auto& e : errors) msg += (msg.empty() ? "" : "; ") + e;
    return InvalidArgumentError(msg);
  }
  a.num_dense_ = schema.dense_size();
  a.d_ = d;
  a.seq_len_ = std::max<int64_t>(seq_len, 0);
  a.mask_ = Tensor::Zeros(Shape{max_batch, a.seq_len_}, DType::kU8);
  return a;
}

void InputAdapter::EmbeddingBatch(const data::Batch& batch, embedding::EmbeddingBatch* out) const {
  out->batch_size = batch.size;
  out->features.resize(columns_.size());
  for (size_t f = 0; f < columns_.size(); ++f) {
    const Column& c = columns_[f];
    const data::CsrColumn& csr = c.sequence ? batch.sequences[c.index] : batch.sparse[c.index];
    embedding::FeatureBatch& fb = out->features[f];
    fb.ids = VectorView(csr.ids);
    fb.offsets = VectorView(csr.offsets);
    fb.weights = c.weighted ? VectorView(csr.weights) : ConstTensorView();
  }
}

model::DenseInputs InputAdapter::DenseInputs(const data::Batch& batch,
                                             const embedding::EmbeddingOutputs& outputs) {
  const int64_t b = batch.size;
  model::DenseInputs in;
  if (num_dense_ > 0) {
    in.dense = ConstTensorView(batch.dense.data(), TensorSpec{Shape{b, num_dense_}, DType::kF32});
  }
  if (num_pooled_ > 0) {
    in.sparse = outputs.pooled.Reshape(Shape{b, num_pooled_, d_});
  } else {
    // The model reads B from the sparse input: an empty (B, 0, d) view carries it.
    in.sparse = ConstTensorView(mask_.raw(), TensorSpec{Shape{b, 0, d_}, DType::kF32});
  }
  for (int j = 0; j < num_sequences_; ++j) in.seq.push_back(outputs.sequences[j]);
  if (num_sequences_ > 0) {
    uint8_t* mask = mask_.data<uint8_t>();
    const int64_t n = b * seq_len_;
    for (int64_t i = 0; i < n; ++i) mask[i] = 0;
    for (int j = 0; j < num_sequences_; ++j) {
      const float* m = outputs.masks[j].data<float>();
      for (int64_t i = 0; i < n; ++i) mask[i] |= static_cast<uint8_t>(m[i] != 0.0f);
    }
    in.seq_mask = ConstTensorView(mask, TensorSpec{Shape{b, seq_len_}, DType::kU8});
  }
  return in;
}

ConstTensorView InputAdapter::Labels(const data::Batch& batch) {
  return ConstTensorView(batch.labels.data(), TensorSpec{Shape{batch.size}, DType::kF32});
}

namespace {
void AppendCsr(const data::CsrColumn& src, data::CsrColumn* dst) {
  const int64_t base = dst->offsets.back();
  for (size_t i = 1; i < src.offsets.size(); ++i) dst->offsets.push_back(base + src.offsets[i]);
  dst->ids.insert(dst->ids.end(), src.ids.begin(), src.ids.end());
  dst->weights.insert(dst->weights.end(), src.weights.begin(), src.weights.end());
}
}  // namespace

void InputAdapter::ConcatBatches(const std::vector<const data::Batch*>& parts, data::Batch* out) {
  CHECK(!parts.empty());
  const data::Batch& first = *parts[0];
  out->size = 0;
  out->num_dense = first.num_dense;
  out->labels.clear();
  out->dense.clear();
  out->group_ids.clear();
  out->sparse.resize(first.sparse.size());
  out->sequences.resize(first.sequences.size());
  for (auto& c : out->sparse) {
    c.offsets.assign(1, 0);
    c.ids.clear();
    c.weights.clear();
  }
  for (auto& c : out->sequences) {
    c.offsets.assign(1, 0);
    c.ids.clear();
    c.weights.clear();
  }
  for (const data::Batch* p : parts) {
    CHECK_EQ(p->sparse.size(), first.sparse.size());
    CHECK_EQ(p->sequences.size(), first.sequences.size());
    out->size += p->size;
    out->labels.insert(out->labels.end(), p->labels.begin(), p->labels.end());
    out->dense.insert(out->dense.end(), p->dense.begin(), p->dense.end());
    out->group_ids.insert(out->group_ids.end(), p->group_ids.begin(), p->group_ids.end());
    for (size_t f = 0; f < p->sparse.size(); ++f) AppendCsr(p->sparse[f], &out->sparse[f]);
    for (size_t j = 0; j < p->sequences.size(); ++j) {
      AppendCsr(p->sequences[j], &out->sequences[j]);
    }
  }
}

void InputAdapter::MakeEmptyBatch(const proto::DataSchema& schema, data::Batch* batch) {
  batch->Reset(schema);
  batch->size = 1;
  batch->num_dense = schema.dense_size();
  batch->labels.assign(1, 0.0f);
  batch->dense.assign(schema.dense_size(), 0.0f);
  batch->sparse.resize(schema.sparse_size());
  for (auto& c : batch->sparse) {
    c.offsets.assign(2, 0);
    c.ids.clear();
    c.weights.clear();
  }
  batch->sequences.resize(schema.sequence_size());
  for (auto& c : batch->sequences) {
    c.offsets.assign(2, 0);
    c.ids.clear();
    c.weights.clear();
  }
  if (!schema.group_id().empty()) batch->group_ids.assign(1, 0);
}

}  // namespace loom::train
