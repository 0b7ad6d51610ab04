// How a raw 64-bit id becomes a row of a table (EmbeddingTableConfig.id_mapping), on host and
// device alike. Raw logs need no vocabulary pass:
//   MODULO  row = uint64(id) mod num_rows            (negative ids wrap as uint64)
//   HASH    row = Hash64(uint64(id), seed) mod num_rows
//   DIRECT  row = id, valid only in [0, num_rows)
// Hash64 is the splitmix64 finalizer of (id + seed * golden ratio): a bijection of 64-bit
// values for a fixed seed, so distinct ids collide only through the final modulo.
#ifndef LOOM_EMBEDDING_ID_MAP_H_
#define LOOM_EMBEDDING_ID_MAP_H_

#include <cstdint>

#include "csrc/core/macros.h"

namespace loom::embedding {

LOOM_HOST_DEVICE LOOM_INLINE uint64_t Hash64(uint64_t id, uint64_t seed) {
  uint64_t x = id + seed * 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// mapping: 0 MODULO, 1 HASH, 2 DIRECT (IdMapping). Returns -1 for a DIRECT id out of range.
LOOM_HOST_DEVICE LOOM_INLINE int64_t MapId(int64_t id, int mapping, int64_t num_rows,
                                           uint64_t seed) {
  if (mapping == 2) return (id >= 0 && id < num_rows) ? id : -1;
  const uint64_t u =
      mapping == 1 ? Hash64(static_cast<uint64_t>(id), seed) : static_cast<uint64_t>(id);
  return static_cast<int64_t>(u % static_cast<uint64_t>(num_rows));
}

}  // namespace loom::embedding

#endif  // LOOM_EMBEDDING_ID_MAP_H_
