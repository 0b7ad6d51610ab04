// Batch: what the reader hands the trainer for B samples, and Example: one sample as the
// writers take it.
//
// Batch layout (B = size, m = dense features, F = sparse features, k = sequences; all host
// memory owned by the Batch, reused across Reader::Next calls so steady-state reads do not
// allocate):
//   labels     (B)      f32, in [0, 1]
//   dense      (B, m)   f32, row-major: dense[b * m + j] is dense feature j of sample b
//   sparse[f]  CSR, f in [0, F), schema order:
//                offsets (B + 1) int64, offsets[0] = 0; sample b owns ids[offsets[b], offsets[b+1])
//                ids     (offsets[B]) int64 >= 0
//                weights (offsets[B]) f32, only for weighted features (else empty)
//              single-hot features have offsets[b] = b (exactly one id each).
//   sequences[j] CSR, j in [0, k): ids of sample b in time order (oldest first, most recent
//              last), 0..T of them, unpadded; the embedding layer pre-pads with 0 to T.
//   group_ids  (B)      int64 (e.g. the user id, for gAUC); empty when the schema has none.
#ifndef LOOM_DATA_BATCH_H_
#define LOOM_DATA_BATCH_H_

#include <cstdint>
#include <vector>

#include "csrc/proto/data.pb.h"

namespace loom::data {

struct CsrColumn {
  std::vector<int64_t> offsets;  // B + 1
  std::vector<int64_t> ids;      // offsets[B]
  std::vector<float> weights;    // offsets[B] when weighted, else empty

  int64_t size() const { return offsets.empty() ? 0 : static_cast<int64_t>(offsets.size()) - 1; }
  int64_t length(int64_t b) const { return offsets[b + 1] - offsets[b]; }
  const int64_t* ids_of(int64_t b) const { return ids.data() + offsets[b]; }
};

struct Batch {
  int64_t size = 0;                  // B
  int num_dense = 0;                 // m
  std::vector<float> labels;         // B
  std::vector<float> dense;          // B * m
  std::vector<CsrColumn> sparse;     // F
  std::vector<CsrColumn> sequences;  // k
  std::vector<int64_t> group_ids;    // B, or empty

  // Empties the batch for `schema` (keeps capacity).
  void Reset(const proto::DataSchema& schema);
};

// One sample, as converters build it and writers take it. Vectors are reused between rows:
// call Reset(schema) and fill. sparse_ids[f] holds exactly one id for single-hot features.
struct Example {
  float label = 0.f;
  int64_t group_id = 0;
  std::vector<float> dense;                        // m
  std::vector<std::vector<int64_t>> sparse_ids;    // F
  std::vector<std::vector<float>> sparse_weights;  // F; filled only for weighted features
  std::vector<std::vector<int64_t>> sequences;     // k

  void Reset(const proto::DataSchema& schema);
};

// Appends sample `b` of `batch` to `out` (tests and tools; not a hot path).
void ExampleFromBatch(const Batch& batch, int64_t b, Example* out);

}  // namespace loom::data

#endif  // LOOM_DATA_BATCH_H_
