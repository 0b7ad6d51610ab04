// The per-bag rules of Bucketize, shared by its CPU and CUDA implementations (host and device
// code alike): which ids of a bag count, when a bag is malformed, and how the first bad bag is
// described.
#ifndef LOOM_EMBEDDING_BAG_RULES_H_
#define LOOM_EMBEDDING_BAG_RULES_H_

#include <cstdint>

#include "csrc/core/macros.h"
#include "csrc/embedding/embedding_kernels.h"
#include "csrc/embedding/embedding_spec.h"

namespace loom::embedding::internal {

// Ids of bag (b, f) after truncation (a sequence keeps its last T): [first, first + len);
// raw_len is the bag's length before it.
LOOM_HOST_DEVICE LOOM_INLINE void BagRange(const FeatureRoute& fr, int64_t b, int64_t* first,
                                           int64_t* len, int64_t* raw_len) {
  const int64_t begin = fr.offsets[b], end = fr.offsets[b + 1];
  *raw_len = end - begin;
  int64_t n = end - begin;
  if (fr.kind == static_cast<int>(FeatureKind::kSequence) && n > fr.max_length) n = fr.max_length;
  *first = end - n;
  *len = n;
}

// A bag of negative length, or a non-sequence bag longer than max_ids.
LOOM_HOST_DEVICE LOOM_INLINE bool BagTooLong(const FeatureRoute& fr, int64_t raw_len) {
  return raw_len < 0 ||
         (fr.kind != static_cast<int>(FeatureKind::kSequence) && raw_len > fr.max_ids);
}

// The position in ids of the first of ids[first, first + len) outside [0, num_rows) of a
// DIRECT table, or -1 when there is none (or the table maps ids by modulo or hash).
LOOM_HOST_DEVICE LOOM_INLINE int64_t FirstBadDirectPos(const FeatureRoute& fr, int64_t first,
                                                       int64_t len) {
  if (fr.mapping != static_cast<int>(IdMapping::kDirect)) return -1;
  for (int64_t i = first; i < first + len; ++i) {
    if (fr.ids[i] < 0 || fr.ids[i] >= fr.num_rows) return i;
  }
  return -1;
}

// Fills *error for bad bag (b, f): kind 2 for a bag too long, else kind 1 with the id.
LOOM_HOST_DEVICE LOOM_INLINE void DescribeBadBag(const FeatureRoute& fr, int f, int64_t b,
                                                 BucketizeError* error) {
  int64_t first, len, raw_len;
  BagRange(fr, b, &first, &len, &raw_len);
  error->feature = f;
  error->sample = b;
  error->count = raw_len;
  error->id = 0;
  if (BagTooLong(fr, raw_len)) {
    error->kind = 2;
  } else {
    error->kind = 1;
    const int64_t i = FirstBadDirectPos(fr, first, len);
    if (i >= 0) error->id = fr.ids[i];
  }
}

}  // namespace loom::embedding::internal

#endif  // LOOM_EMBEDDING_BAG_RULES_H_
