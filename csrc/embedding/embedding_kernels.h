// The per-step kernels of the sharded embedding pipeline (docs/sharding.md, "Stages"), each
// with a CPU reference (OpenMP) and a CUDA twin, chosen by LOOM_DISPATCH on ctx.device.
// All pointers live on ctx.device; nothing here allocates (scratch is passed in).
//
// Vocabulary. A bag is (sample b, feature f), b-major: bag index b * F + f. An item is one id
// occurrence of a bag routed to one shard: a column-wise table gives K items per id (one per
// column slice), any other table one. Items are numbered in canonical order
// (b, f, position in the bag, slice), the order in which gradients are summed.
// A key is (slot << row_bits) | local_row, where slot orders shards by destination.
#ifndef LOOM_EMBEDDING_EMBEDDING_KERNELS_H_
#define LOOM_EMBEDDING_EMBEDDING_KERNELS_H_

#include <cstddef>
#include <cstdint>

#include "csrc/core/device.h"
#include "csrc/core/macros.h"

namespace loom::embedding {

// One (feature, shard) route. Plain data, copied to the device as is.
struct RoutePart {
  int32_t feature = 0;
  int32_t shard = 0;      // global shard index
  int32_t slot = 0;       // this rank's sort slot of the shard (destination-major)
  int32_t col_begin = 0;  // first table column of the shard
  int32_t width = 0;      // columns of the shard
  int32_t pad = 0;
};

// One feature of the batch: its table, routing and this step's CSR input.
struct FeatureRoute {
  int64_t num_rows = 0;  // table rows
  uint64_t hash_seed = 0;
  int32_t mapping = 0;     // IdMapping
  int32_t kind = 0;        // FeatureKind
  int32_t pooling = 0;     // Pooling
  int32_t max_ids = 1;     // most ids a bag may carry (after truncation for sequences)
  int32_t max_length = 0;  // T for sequences
  int32_t strategy = 0;    // Strategy of the table
  int32_t part_begin = 0;  // parts [part_begin, part_begin + num_parts)
  int32_t num_parts = 1;   // RW: n row shards (row r -> part r mod n); CW: K column slices
  int32_t dim = 0;         // D of the table
  int32_t pad = 0;
  int64_t out_stride = 0;        // pooled: floats per sample of the pooled output; sequence: T * D
  int64_t out_col = 0;           // pooled: first column of this feature in the pooled row
  const int64_t* ids = nullptr;  // raw ids [nnz]
  const int64_t* offsets = nullptr;  // [B + 1]
  const float* weights = nullptr;    // [nnz], POOLING_WEIGHTED_SUM only
};

// The first bad bag in canonical order, if any. kind: 0 none; 1 DIRECT id out of range; 2 a
// bag longer than max_ids (MULTI_HOT, SINGLE).
struct BucketizeError {
  int kind = 0;
  int feature = -1;
  int64_t sample = -1;
  int64_t id = 0;
  int64_t count = 0;
};

struct BucketizeArgs {
  const FeatureRoute* features = nullptr;  // [F]
  int num_features = 0;
  const RoutePart* parts = nullptr;
  int64_t batch = 0;  // B
  int row_bits = 1;
  // Outputs.
  int64_t* bag_item_begin = nullptr;  // [B * F + 1]: items of bag g are [begin[g], begin[g+1])
  uint64_t* item_key = nullptr;       // [N]
  int32_t* item_part = nullptr;       // [N]
  float* item_scale = nullptr;        // [N]: 1 (sum, sequence), 1/len (mean), weight
  int64_t* item_out = nullptr;        // [N]: float offset of the item's slice in its feature's
                                      // output (pooled: b*stride + col + slice col;
                                      // sequence: (b*T + T-len+pos)*D + slice col)
  void* temp = nullptr;               // CUDA: BucketizeCudaTempBytes(B * F) bytes of scratch
  size_t temp_bytes = 0;
};

// Stage "bucketize": maps raw ids to rows (id_map.h), truncates sequences to their last T
// ids, expands column slices and writes the items in canonical order. Returns N, the number
// of items; on a bad bag, fills *error (first in canonical order) and returns -1.
int64_t Bucketize(const ExecContext& ctx, const BucketizeArgs& args, BucketizeError* error);
// CUDA scratch bytes of Bucketize for num_bags = B * F bags (0 in a CPU-only build).
size_t BucketizeCudaTempBytes(int64_t num_bags);

struct SortUniqueArgs {
  uint64_t* keys = nullptr;  // [n] input keys; overwritten (used as sort scratch)
  int64_t n = 0;
  int bits = 64;                 // keys are < 2^bits
  uint64_t* keys_tmp = nullptr;  // [n] scratch
  int32_t* vals_tmp = nullptr;   // [n] scratch
  int64_t* histogram = nullptr;  // CPU: [histogram_threads * 2048] scratch
  int histogram_threads = 1;     // CPU: threads the histogram has room for (caps the sort's)
  void* temp = nullptr;          // CUDA: CUB scratch of SortUniqueCudaTempBytes(n) bytes
  size_t temp_bytes = 0;
  // Outputs.
  int32_t* perm = nullptr;          // [n] indices in (key, index) order: a stable sort
  uint64_t* unique_keys = nullptr;  // [U] ascending
  int32_t* unique_begin = nullptr;  // [U + 1] run starts in perm
  int32_t* inverse = nullptr;       // [n] unique index of each input (may be null)
};

// Stage "unique" (dedup): stable radix sort of (key, index) and run-length encoding. Returns U.
// (CPU: strictly ascending keys are returned as they are, the identity permutation.)
int64_t SortUnique(const ExecContext& ctx, const SortUniqueArgs& args);
// CUB scratch bytes SortUnique needs on CUDA for n keys (0 in a CPU-only build).
size_t SortUniqueCudaTempBytes(int64_t n);

// A shard's storage on this rank; weights are [num_rows, width] row-major.
struct ShardView {
  float* weights = nullptr;
  float* state0 = nullptr;   // Adagrad s [rows, width]; row-wise Adagrad s [rows]; Adam m
  float* state1 = nullptr;   // Adam v [rows, width]
  int32_t* steps = nullptr;  // Adam per-row step counts [rows]
  int64_t num_rows = 0;
  int32_t width = 0;
  int32_t pad = 0;
};

// Stage "lookup": out[out_off[i] + c] = shards[key_i >> row_bits].weights[row_i * W + c] for
// c < W (the shard's width); keys hold global shard indices.
void GatherRows(const ExecContext& ctx, const uint64_t* keys, int64_t n, int row_bits,
                const ShardView* shards, const int64_t* out_off, float* out);

struct PoolArgs {
  const FeatureRoute* features = nullptr;
  int num_features = 0;
  const RoutePart* parts = nullptr;
  int64_t batch = 0;
  const int64_t* bag_item_begin = nullptr;
  const int32_t* item_part = nullptr;
  const float* item_scale = nullptr;
  const int64_t* item_out = nullptr;
  // Where item i's row slice is read from. After a dedup: unique_ptr[item_to_unique[i]]. When
  // item_key is set instead (one rank, where every row is local and the forward needs no
  // dedup): slot_weights[key >> row_bits] + (key & (2^row_bits - 1)) * width, key = item_key[i].
  const int32_t* item_to_unique = nullptr;
  const float* const* unique_ptr = nullptr;    // [U]
  const uint64_t* item_key = nullptr;          // [N]
  const float* const* slot_weights = nullptr;  // [slots] the slot's shard weights, local
  int row_bits = 0;
  float* const* feature_out = nullptr;   // [F] output base per feature
  float* const* feature_mask = nullptr;  // [F] (B, T) mask for sequences, else null
  // CPU: write the sequence outputs with streaming (cache-bypassing) stores; for outputs far
  // larger than a core's cache, which the next op reads from memory either way.
  bool stream_outputs = false;
};

// Item i's row slice when PoolArgs::item_key is set (width: its part's); the CPU and CUDA
// pools share it.
LOOM_HOST_DEVICE LOOM_INLINE const float* PoolRowByKey(const PoolArgs& a, int64_t i, int width) {
  const uint64_t key = a.item_key[i];
  const uint64_t row = key & ((uint64_t{1} << a.row_bits) - 1);
  return a.slot_weights[key >> a.row_bits] + static_cast<int64_t>(row) * width;
}

// Stage "pool" (restore the local order): per bag, in item order,
//   pooled:   out[b, col + c] = sum_i scale_i * row_i[c]   (0 for an empty bag)
//   sequence: out[b, T - len + p, :] = row_p, padding rows 0; mask 1 on tokens, 0 on padding.
// Overwrites the bag's whole output region.
void PoolForward(const ExecContext& ctx, const PoolArgs& args);

struct PackArgs {
  int64_t num_unique = 0;
  const int32_t* unique_begin = nullptr;  // [U + 1] runs of perm
  const int32_t* perm = nullptr;
  const int32_t* item_part = nullptr;
  const float* item_scale = nullptr;
  const int64_t* item_out = nullptr;
  const RoutePart* parts = nullptr;
  const float* const* feature_grad = nullptr;  // [F] gradient base per feature (same layout as
                                               // the forward output)
  const int64_t* contrib_off = nullptr;        // [U] word offset of unique u's contributions
  float* out = nullptr;
};

// Stage "pack gradients": for unique u and its j-th item i (canonical order),
//   out[contrib_off[u] + j * W + c] = scale_i * grad_f(i)[item_out_i + c],  c < W.
void PackContributions(const ExecContext& ctx, const PackArgs& args);

namespace internal {
int64_t BucketizeCpu(const BucketizeArgs& args, BucketizeError* error);
int64_t SortUniqueCpu(const SortUniqueArgs& args);
void GatherRowsCpu(const uint64_t* keys, int64_t n, int row_bits, const ShardView* shards,
                   const int64_t* out_off, float* out);
void PoolForwardCpu(const PoolArgs& args);
void PackContributionsCpu(const PackArgs& args);
int64_t BucketizeCuda(const BucketizeArgs& args, BucketizeError* error, Stream stream);
int64_t SortUniqueCuda(const SortUniqueArgs& args, Stream stream);
size_t SortUniqueCudaTempBytesImpl(int64_t n);
size_t BucketizeCudaTempBytesImpl(int64_t num_bags);
void GatherRowsCuda(const uint64_t* keys, int64_t n, int row_bits, const ShardView* shards,
                    const int64_t* out_off, float* out, Stream stream);
void PoolForwardCuda(const PoolArgs& args, Stream stream);
void PackContributionsCuda(const PackArgs& args, Stream stream);
}  // namespace internal

}  // namespace loom::embedding

#endif  // LOOM_EMBEDDING_EMBEDDING_KERNELS_H_
