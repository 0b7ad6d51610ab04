#include "csrc/data/batch.h"

namespace loom::data {

void Batch::Reset(const proto::DataSchema& schema) {
  size = 0;
  num_dense = schema.dense_size();
  labels.clear();
  dense.clear();
  group_ids.clear();
  sparse.resize(schema.sparse_size());
  sequences.resize(schema.sequence_size());
  for (auto* cols : {&sparse, &sequences}) {
    for (auto& c : *cols) {
      c.offsets.assign(1, 0);
      c.ids.clear();
      c.weights.clear();
    }
  }
}

void Example::Reset(const proto::DataSchema& schema) {
  label = 0.f;
  group_id = 0;
  dense.assign(schema.dense_size(), 0.f);
  sparse_ids.resize(schema.sparse_size());
  sparse_weights.resize(schema.sparse_size());
  sequences.resize(schema.sequence_size());
  for (auto& v : sparse_ids) v.clear();
  for (auto& v : sparse_weights) v.clear();
  for (auto& v : sequences) v.clear();
}

void ExampleFromBatch(const Batch& batch, int64_t b, Example* out) {
  out->label = batch.labels[b];
  out->group_id = batch.group_ids.empty() ? 0 : batch.group_ids[b];
  out->dense.assign(batch.dense.begin() + b * batch.num_dense,
                    batch.dense.begin() + (b + 1) * batch.num_dense);
  out->sparse_ids.resize(batch.sparse.size());
  out->sparse_weights.resize(batch.sparse.size());
  for (size_t f = 0; f < batch.sparse.size(); ++f) {
    const CsrColumn& c = batch.sparse[f];
    out->sparse_ids[f].assign(c.ids.begin() + c.offsets[b], c.ids.begin() + c.offsets[b + 1]);
    if (c.weights.empty()) {
      out->sparse_weights[f].clear();
    } else {
      out->sparse_weights[f].assign(c.weights.begin() + c.offsets[b],
                                    c.weights.begin() + c.offsets[b + 1]);
    }
  }
  out->sequences.resize(batch.sequences.size());
  for (size_t j = 0; j < batch.sequences.size(); ++j) {
    const CsrColumn& c = batch.sequences[j];
    out->sequences[j].assign(c.ids.begin() + c.offsets[b], c.ids.begin() + c.offsets[b + 1]);
  }
}

}  // namespace loom::data
