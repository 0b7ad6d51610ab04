// The backward of the sharded embedding, on the rows a rank owns: deterministic reduction
// of duplicate rows, then a sparse optimizer step on exactly those rows. No dense gradient
// of a table is ever formed; optimizer state lives with the shard (ShardView).
//
// Reduction (ReduceRows). The owner holds E entries: (key, contributions) where an entry is
// one unique key sent by one source rank, with entry_count contributions of W floats each
// (W = the shard's width), already scaled by the requester (scale * output gradient). The
// entries are merged by a stable sort of their keys, so for each touched row the entries
// come in source-rank order and each entry's contributions in canonical item order:
//   g[c] = 0; for each entry, for each contribution x: g[c] = g[c] + x[c]
// a left fold in the global order (global sample, feature, position), identical for any
// world size and plan (docs/sharding.md). With L2 weight decay, g[c] = g[c] + wd * w[c] after
// the fold. Gradient convention: the step consumes g (nothing accumulates across steps).
//
// Update (UpdateRows), per touched row with lr = optimizer.lr * lr_scale, all in float:
//   SGD             w -= lr * g
//   ADAGRAD         s += g*g;  w -= lr * g / (sqrt(s) + eps)
//   ROWWISE_ADAGRAD s += RowSquareSum(g) / D;  w -= lr * g / (sqrt(s) + eps)
//   ADAM            k += 1; m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g*g;
//                   bc1 = 1 - b1^k, bc2 = 1 - b2^k (double, rounded to float);
//                   w -= lr * (m / bc1) / (sqrt(v / bc2) + eps)
//   decoupled weight decay: w -= lr * wd * w_old, on top of the step above.
// D is the table's full dim; for a column-wise slice the row's square sum over all slices
// comes from row_sq (exchanged between the slices' owners, external_row_sq = 1).
//
// Non-lazy Adam (StepUntouchedRows; update_mode UPDATE_DENSE, OptimizerParams::dense_update).
// The update above is "lazy": an untouched row keeps its w, m, v and k. For a dense-update
// table, after the touched rows' update, every other row of every shard held here takes the
// same ADAM step with g = 0 (g = 0 + wd * w with L2 weight decay; decoupled decay applies as
// above), so every row steps at every training step and the per-row step counts k stay equal:
// they are the one global step count of a dense Adam. This is the math of torch.optim.Adam on
// the dense gradient of an nn.Embedding (zero rows where the batch has no ids): a row keeps
// moving after its last gradient while its first moment decays. Each row's step depends only
// on its own state and g, so every sharding plan gives the same bits. Cost O(held rows x W) per
// dense shard per step: meant for small tables and protocol fidelity.
#ifndef LOOM_EMBEDDING_SPARSE_OPTIMIZER_H_
#define LOOM_EMBEDDING_SPARSE_OPTIMIZER_H_

#include <cmath>
#include <cstdint>

#include "csrc/core/device.h"
#include "csrc/core/macros.h"
#include "csrc/embedding/embedding_kernels.h"
#include "csrc/embedding/embedding_spec.h"

namespace loom::embedding {

// Per-shard optimizer parameters as the kernels read them.
struct OptimizerParams {
  int32_t type = 0;             // OptimizerType
  int32_t decoupled = 0;        // decoupled weight decay
  int32_t full_dim = 0;         // D of the table (row-wise Adagrad's mean)
  int32_t external_row_sq = 0;  // 1: row-wise Adagrad square sums come from row_sq (CW)
  float lr = 0, eps = 0, beta1 = 0, beta2 = 0, weight_decay = 0;
  int32_t dense_update = 0;  // 1: non-lazy ADAM, every row steps every step (StepUntouchedRows)
};

OptimizerParams MakeOptimizerParams(const OptimizerSpec& spec, int full_dim, bool external);

struct ReduceArgs {
  int64_t num_rows = 0;                         // U merged keys
  const uint64_t* keys = nullptr;               // [U] (global shard << row_bits) | local row
  const int32_t* begin = nullptr;               // [U + 1] runs in entry_perm
  const int32_t* entry_perm = nullptr;          // [E]
  const float* const* entry_contrib = nullptr;  // [E] first contribution of each entry
  const int32_t* entry_count = nullptr;         // [E]
  int row_bits = 1;
  const ShardView* shards = nullptr;        // by global shard index
  const OptimizerParams* params = nullptr;  // by global shard index
  const int64_t* reduced_off = nullptr;     // [U] float offset of row u's reduced slice
  float* reduced = nullptr;                 // out: g
  // Entries this rank requested from itself skip the message: entry_local[e] >= 0 names the
  // requester's unique key whose items contribute scale_i * grad_out(i) directly (the same
  // float operations as packing them). -1 (or a null entry_local) = a message entry.
  const int32_t* entry_local = nullptr;         // [E]
  const int32_t* local_unique_begin = nullptr;  // requester's dedup runs (kItemPerm positions)
  const int32_t* local_perm = nullptr;
  const int32_t* local_item_part = nullptr;
  const float* local_item_scale = nullptr;
  const int64_t* local_item_out = nullptr;
  const RoutePart* local_parts = nullptr;
  const float* const* local_feature_grad = nullptr;
  // Optional (CPU): with these, the local entries are folded by one sweep over the items in
  // canonical order (output gradients read front to back) instead of row by row; same bits.
  int64_t local_num_items = 0;
  const int32_t* local_item_to_unique = nullptr;  // [N]
  const int32_t* local_to_merged = nullptr;       // [U_req] merged row of a local unique, or -1
  int32_t* local_item_merged = nullptr;           // [N] scratch (optional): each item's merged row
};

struct UpdateArgs {
  int64_t num_rows = 0;
  const uint64_t* keys = nullptr;
  int row_bits = 1;
  const ShardView* shards = nullptr;
  const OptimizerParams* params = nullptr;
  const int64_t* reduced_off = nullptr;
  const float* reduced = nullptr;
  const float* row_sq = nullptr;  // [U] whole-row square sums where external_row_sq
  float lr_scale = 1.0f;
};

// The rows the step did not touch, for StepUntouchedRows.
struct UntouchedArgs {
  int num_shards = 0;                       // S global shards
  const ShardView* shards = nullptr;        // [S]; null weights = not held here (skipped)
  const OptimizerParams* params = nullptr;  // [S]; only shards with dense_update step
  int64_t num_touched = 0;                  // U
  const uint64_t* touched_keys = nullptr;   // [U] ascending, (global shard << row_bits) | row
  int row_bits = 1;
  float lr_scale = 1.0f;
};

void ReduceRows(const ExecContext& ctx, const ReduceArgs& args);
void UpdateRows(const ExecContext& ctx, const UpdateArgs& args);
// Non-lazy Adam: every held row of every dense_update shard whose key is not in touched_keys
// takes the ADAM step with g = 0 (+ L2 term), k += 1. Call once per training step, after the
// touched rows' update (UpdateRows or ReduceAndUpdateRows), with the same lr_scale and keys.
// Does nothing (O(S)) when no shard has dense_update.
void StepUntouchedRows(const ExecContext& ctx, const UntouchedArgs& args);
// ReduceRows then UpdateRows, fused per row on the CPU (the row is updated while its gradient
// is in cache). Not for shards with external_row_sq (they need the exchange in between).
void ReduceAndUpdateRows(const ExecContext& ctx, const ReduceArgs& reduce,
                         const UpdateArgs& update);

// Sum of g[c]^2 in blocks of kColumnBlock (4) columns, each block summed left to right from
// 0, then the blocks left to right from 0. A column-wise slice cut on block boundaries gives
// the same block sums, so exchanging them reproduces the unsharded sum bit for bit.
LOOM_HOST_DEVICE LOOM_INLINE float BlockSquareSum(const float* g, int begin, int end) {
  float s = 0.0f;
  for (int c = begin; c < end; ++c) s = s + g[c] * g[c];
  return s;
}
LOOM_HOST_DEVICE LOOM_INLINE float RowSquareSum(const float* g, int width) {
  float total = 0.0f;
  for (int b = 0; b < width; b += 4)
    total = total + BlockSquareSum(g, b, b + 4 < width ? b + 4 : width);
  return total;
}

// One row's update (the math above), split so a CUDA warp can share it: PrepareRow does the
// per-row part once (row-wise Adagrad state, Adam step count and bias corrections), then
// UpdateElement runs for every column. ApplyRowUpdate is the two in sequence.
struct RowScalars {
  float denom = 1.0f;  // row-wise Adagrad: sqrt(s) + eps
  float bc1 = 1.0f;    // Adam bias corrections
  float bc2 = 1.0f;
};

LOOM_HOST_DEVICE LOOM_INLINE RowScalars PrepareRow(const OptimizerParams& p, float* s0,
                                                   int32_t* step, float row_sq) {
  RowScalars r;
  if (p.type == 2) {
    s0[0] = s0[0] + row_sq / static_cast<float>(p.full_dim);
    r.denom = sqrtf(s0[0]) + p.eps;
  } else if (p.type == 3) {
    const int32_t k = step[0] + 1;
    step[0] = k;
    r.bc1 = static_cast<float>(1.0 - pow(static_cast<double>(p.beta1), static_cast<double>(k)));
    r.bc2 = static_cast<float>(1.0 - pow(static_cast<double>(p.beta2), static_cast<double>(k)));
  }
  return r;
}

// Column c of a row: w, s0, s1 point at the row's element c (s0 unused by row-wise Adagrad).
LOOM_HOST_DEVICE LOOM_INLINE void UpdateElement(const OptimizerParams& p, float lr,
                                                const RowScalars& r, float* w, float* s0, float* s1,
                                                float g) {
  const float w_old = *w;
  float nw;
  switch (p.type) {
    case 0:
      nw = w_old - lr * g;
      break;
    case 1:
      *s0 = *s0 + g * g;
      nw = w_old - lr * g / (sqrtf(*s0) + p.eps);
      break;
    case 2:
      nw = w_old - lr * g / r.denom;
      break;
    default: {
      *s0 = p.beta1 * *s0 + (1.0f - p.beta1) * g;
      *s1 = p.beta2 * *s1 + (1.0f - p.beta2) * g * g;
      const float m_hat = *s0 / r.bc1;
      const float v_hat = *s1 / r.bc2;
      nw = w_old - lr * m_hat / (sqrtf(v_hat) + p.eps);
      break;
    }
  }
  if (p.decoupled) nw = nw - lr * p.weight_decay * w_old;
  *w = nw;
}

LOOM_HOST_DEVICE LOOM_INLINE void ApplyRowUpdate(const OptimizerParams& p, float lr, float* w,
                                                 float* s0, float* s1, int32_t* step,
                                                 const float* g, int width, float row_sq) {
  const RowScalars r = PrepareRow(p, s0, step, row_sq);
  for (int c = 0; c < width; ++c) {
    UpdateElement(p, lr, r, w + c, p.type == 1 || p.type == 3 ? s0 + c : nullptr,
                  p.type == 3 ? s1 + c : nullptr, g[c]);
  }
}

namespace internal {
void ReduceRowsCpu(const ReduceArgs& args);
void UpdateRowsCpu(const UpdateArgs& args);
void ReduceAndUpdateRowsCpu(const ReduceArgs& reduce, const UpdateArgs& update);
void ReduceRowsCuda(const ReduceArgs& args, Stream stream);
void UpdateRowsCuda(const UpdateArgs& args, Stream stream);
void StepUntouchedRowsCpu(const UntouchedArgs& args);
void StepUntouchedRowsCuda(const UntouchedArgs& args, Stream stream);  // device pointers
}  // namespace internal

}  // namespace loom::embedding

#endif  // LOOM_EMBEDDING_SPARSE_OPTIMIZER_H_
