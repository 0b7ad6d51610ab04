// InputAdapter: how a data batch (csrc/data/batch.h) feeds the embedding collection and the
// dense model, and the checks that the three configs agree.
//
// Matching is by name: every embedding feature (embedding.features[i].name) names a column of
// the data schema — a sparse feature for SINGLE and MULTI_HOT, a sequence feature for
// SEQUENCE. Data columns no embedding feature names are not read. The model's input shape
// must follow (model.proto):
//   num_dense_features  = m, the schema's dense features (all of them, schema order)
//   num_sparse_features = n, the pooled (SINGLE + MULTI_HOT) embedding features
//   num_sequences       = k, the SEQUENCE embedding features (the DLRM baseline allows 0)
//   embedding_dim       = d, the dim of every table a feature looks up
// and every SEQUENCE feature has the same max_length T (the k sequences are position-aligned,
// the model takes one mask). Errors name the field and both values, e.g.
//   "model.num_sparse_features: must equal the 9 pooled embedding features, got 8".
//
// Per step (no allocation after Create):
//   EmbeddingBatch(batch)   views of the batch's CSR vectors, embedding feature order
//   DenseInputs(batch, out) dense (B, m) view of batch.dense; sparse = out.pooled (B, n, d);
//                           seq[j] = out.sequences[j] (B, T, d); seq_mask (B, T) u8 = 1 where
//                           any sequence has a token (the union of the collection's masks)
//   Labels(batch)           (B) f32 view of batch.labels
// Views stay valid while the batch and the collection's outputs are unchanged.
#ifndef LOOM_TRAIN_INPUT_ADAPTER_H_
#define LOOM_TRAIN_INPUT_ADAPTER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "csrc/core/status.h"
#include "csrc/core/tensor.h"
#include "csrc/data/batch.h"
#include "csrc/embedding/embedding_collection.h"
#include "csrc/model/interformer.h"
#include "csrc/proto/config.pb.h"
#include "csrc/proto/data.pb.h"

namespace loom::train {

class InputAdapter {
 public:
  // `allow_no_sequences`: the model accepts k = 0 (the DLRM baseline). max_batch sizes the
  // mask buffer.
  static StatusOr<InputAdapter> Create(const proto::LoomConfig& config,
                                       const proto::DataSchema& schema, int64_t max_batch,
                                       bool allow_no_sequences);

  // T of the sequence features (0 when there are none).
  int64_t seq_len() const { return seq_len_; }
  int num_dense() const { return num_dense_; }

  // The batch's columns in embedding-feature order. `out` keeps its capacity between calls.
  void EmbeddingBatch(const data::Batch& batch, embedding::EmbeddingBatch* out) const;
  // The model inputs of a batch whose embedding Forward produced `outputs`.
  model::DenseInputs DenseInputs(const data::Batch& batch,
                                 const embedding::EmbeddingOutputs& outputs);
  static ConstTensorView Labels(const data::Batch& batch);

  // out = the samples of parts[0], then parts[1], ... (same schema). `out` keeps its capacity.
  static void ConcatBatches(const std::vector<const data::Batch*>& parts, data::Batch* out);

  // A batch of one sample with every bag empty, zero dense values and label 0 (what a rank
  // without eval data feeds so the collectives stay matched).
  static void MakeEmptyBatch(const proto::DataSchema& schema, data::Batch* batch);

 private:
  struct Column {
    bool sequence = false;  // batch.sequences[index] or batch.sparse[index]
    int index = 0;
    bool weighted = false;
  };
  std::vector<Column> columns_;  // by embedding feature
  int num_dense_ = 0;
  int num_pooled_ = 0;
  int num_sequences_ = 0;
  int64_t d_ = 0;
  int64_t seq_len_ = 0;
  Tensor mask_;  // (max_batch, T) u8
};

}  // namespace loom::train

#endif  // LOOM_TRAIN_INPUT_ADAPTER_H_
