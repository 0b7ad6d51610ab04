// CPU reference of the backward reduction and the sparse optimizers: OpenMP over touched rows
// (each row is written by one thread; no atomics), loops over columns vectorized. Every
// per-element expression is the one of UpdateElement (sparse_optimizer.h), evaluated in the
// same order, so the CUDA kernels round identically.
#include "csrc/embedding/sparse_optimizer.h"

#include <algorithm>
#include <cstring>

#include <omp.h>

#include "csrc/embedding/row_ops_cpu.h"

namespace loom::embedding::internal {
namespace {

inline void FoldLocal(const ReduceArgs& a, int32_t local, int w, float* __restrict g) {
  for (int32_t j = a.local_unique_begin[local]; j < a.local_unique_begin[local + 1]; ++j) {
    const int32_t i = a.local_perm[j];
    const RoutePart& rp = a.local_parts[a.local_item_part[i]];
    const float* __restrict x = a.local_feature_grad[rp.feature] + a.local_item_out[i];
    const float sc = a.local_item_scale[i];
    AxpyRow(g, x, sc, w);
  }
}

// Folds row u's entries into g. phase kAll: every entry (local ones row by row). kBefore /
// kAfter: the message entries before / after the local entry (which a sweep folds between).
enum FoldPhase { kAll, kBefore, kAfter };
inline void FoldEntries(const ReduceArgs& a, int64_t u, int w, float* __restrict g,
                        FoldPhase phase) {
  bool after_local = false;
  for (int32_t e = a.begin[u]; e < a.begin[u + 1]; ++e) {
    const int32_t entry = a.entry_perm[e];
    const int32_t local = a.entry_local != nullptr ? a.entry_local[entry] : -1;
    if (local >= 0) {
      if (phase == kAll) FoldLocal(a, local, w, g);
      if (phase == kBefore) return;
      after_local = true;
      continue;
    }
    if (phase == kAfter && !after_local) continue;
    const float* x = a.entry_contrib[entry];
    for (int32_t j = 0; j < a.entry_count[entry]; ++j, x += w) {
      if (j + 1 < a.entry_count[entry]) __builtin_prefetch(x + w);
      AddRow(g, x, w);
    }
  }
}

inline void ApplyL2(const ShardView& s, int64_t row, const OptimizerParams& p,
                    float* __restrict g) {
  if (p.weight_decay != 0.0f && !p.decoupled) {
    const int w = s.width;
    const float* __restrict wr = s.weights + row * w;
#pragma omp simd
    for (int c = 0; c < w; ++c) g[c] = g[c] + p.weight_decay * wr[c];
  }
}

// One row's ADAM step (UpdateElement's expressions). kUntouched: the row is not in the batch
// and g is 0, or 0 + wd * w under L2 weight decay (what ApplyL2 makes of a zero fold); g unused.
template <bool kUntouched>
inline void AdamRow(const OptimizerParams& p, float lr, const ShardView& s, int64_t row,
                    const float* __restrict g) {
  const int w = s.width;
  float* __restrict wr = s.weights + row * w;
  const float wd = p.weight_decay;
  const bool dec = p.decoupled != 0;
  const bool l2 = wd != 0.0f && !dec;
  const RowScalars r = PrepareRow(p, nullptr, s.steps + row, 0.0f);
  float* __restrict s0 = s.state0 + row * w;
  float* __restrict s1 = s.state1 + row * w;
  const float b1 = p.beta1, b2 = p.beta2, one_b1 = 1.0f - p.beta1, one_b2 = 1.0f - p.beta2;
#pragma omp simd
  for (int c = 0; c < w; ++c) {
    const float w_old = wr[c];
    const float gc = kUntouched ? (l2 ? 0.0f + wd * w_old : 0.0f) : g[c];
    s0[c] = b1 * s0[c] + one_b1 * gc;
    s1[c] = b2 * s1[c] + one_b2 * gc * gc;
    const float m_hat = s0[c] / r.bc1;
    const float v_hat = s1[c] / r.bc2;
    float nw = w_old - lr * m_hat / (sqrtf(v_hat) + p.eps);
    if (dec) nw = nw - lr * wd * w_old;
    wr[c] = nw;
  }
}

// One row's update; UpdateElement's expressions with the type switch hoisted out of the loop.
// kW > 0: the shard's width as a constant (loops fully unrolled; the same expressions).
template <int kW>
inline void UpdateOneW(const OptimizerParams& p, float lr, const ShardView& s, int64_t row,
                       const float* __restrict g, float row_sq_external) {
  const int w = kW > 0 ? kW : s.width;
  float* __restrict wr = s.weights + row * w;
  const float wd = p.weight_decay;
  const bool dec = p.decoupled != 0;
  switch (p.type) {
    case 0:
#pragma omp simd
      for (int c = 0; c < w; ++c) {
        const float w_old = wr[c];
        float nw = w_old - lr * g[c];
        if (dec) nw = nw - lr * wd * w_old;
        wr[c] = nw;
      }
      break;
    case 1: {
      float* __restrict s0 = s.state0 + row * w;
#pragma omp simd
      for (int c = 0; c < w; ++c) {
        const float w_old = wr[c];
        s0[c] = s0[c] + g[c] * g[c];
        float nw = w_old - lr * g[c] / (sqrtf(s0[c]) + p.eps);
        if (dec) nw = nw - lr * wd * w_old;
        wr[c] = nw;
      }
      break;
    }
    case 2: {
      const float row_sq = p.external_row_sq ? row_sq_external : RowSquareSum(g, w);
      const RowScalars r = PrepareRow(p, s.state0 + row, nullptr, row_sq);
      const float denom = r.denom;
#pragma omp simd
      for (int c = 0; c < w; ++c) {
        const float w_old = wr[c];
        float nw = w_old - lr * g[c] / denom;
        if (dec) nw = nw - lr * wd * w_old;
        wr[c] = nw;
      }
      break;
    }
    default:
      AdamRow<false>(p, lr, s, row, g);
      break;
  }
}

inline void UpdateOne(const OptimizerParams& p, float lr, const ShardView& s, int64_t row,
                      const float* __restrict g, float row_sq_external) {
  WithFixedWidth(s.width, [&](auto W) { UpdateOneW<W()>(p, lr, s, row, g, row_sq_external); });
}

}  // namespace

namespace {

inline void PrefetchShardRowForWrite(const ShardView& s, int64_t row) {
  PrefetchRowForWrite(s.weights + row * s.width, s.width);
}

// The reduction (and, when `update` is set, the fused update) over all touched rows. Each
// thread owns a contiguous range of rows and touches nothing else, so the three phases need no
// barrier between them: message entries before the local one, the sweep over this rank's own
// items in canonical order, then the rest (and the update). (With several threads the sweep
// starts with one shared item map, its only barrier.)
void ReduceImpl(const ReduceArgs& a, const UpdateArgs* update) {
  const uint64_t row_mask = (uint64_t{1} << a.row_bits) - 1;
  const bool sweep =
      a.local_item_to_unique != nullptr && a.local_to_merged != nullptr && a.entry_local != nullptr;
  constexpr int kAheadRows = 8;
#pragma omp parallel
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    const int64_t m0 = a.num_rows * t / nt, m1 = a.num_rows * (t + 1) / nt;
    for (int64_t u = m0; u < m1; ++u) {
      const ShardView& s = a.shards[a.keys[u] >> a.row_bits];
      float* g = a.reduced + a.reduced_off[u];
      std::memset(g, 0, s.width * sizeof(float));
      FoldEntries(a, u, s.width, g, sweep ? kBefore : kAll);
    }
    if (sweep) {
      // Every thread walks all items and folds those of its rows. With several threads, the
      // items' merged rows are looked up once, shared (one barrier): a thread then skips a
      // foreign item with one sequential load instead of two dependent random ones.
      const int32_t* item_merged = nullptr;
      if (nt > 1 && a.local_item_merged != nullptr) {
#pragma omp for schedule(static)
        for (int64_t i = 0; i < a.local_num_items; ++i) {
          a.local_item_merged[i] = a.local_to_merged[a.local_item_to_unique[i]];
        }
        item_merged = a.local_item_merged;
      }
      auto merged_of = [&](int64_t i) {
        return item_merged != nullptr ? item_merged[i]
                                      : a.local_to_merged[a.local_item_to_unique[i]];
      };
      // The accumulator row of an item is three dependent random loads away (local_to_merged,
      // reduced_off, the row): prefetched in three stages, each a few items ahead of the next.
      // The item's output gradient is prefetched with the row: a thread reads only its own
      // items' gradients, a sparse walk the hardware prefetcher does not follow (2 threads:
      // reduce 3.7 -> 3.1 ms on the bench; 1 thread: 5.9 -> 5.4 ms).
      constexpr int64_t kAheadMap = 40, kAheadOff = 24, kAheadRow = 12;
      const int64_t n = a.local_num_items;
      for (int64_t i = 0; i < n; ++i) {
        if (item_merged == nullptr && i + kAheadMap < n) {
          __builtin_prefetch(a.local_to_merged + a.local_item_to_unique[i + kAheadMap]);
        }
        if (i + kAheadOff < n) {
          const int32_t mn = merged_of(i + kAheadOff);
          if (mn >= m0 && mn < m1) __builtin_prefetch(a.reduced_off + mn);
        }
        if (i + kAheadRow < n) {
          const int32_t mn = merged_of(i + kAheadRow);
          if (mn >= m0 && mn < m1) {  // the accumulator row and the output gradient it adds
            const RoutePart& rn = a.local_parts[a.local_item_part[i + kAheadRow]];
            PrefetchRowForWrite(a.reduced + a.reduced_off[mn], rn.width);
            PrefetchRow(a.local_feature_grad[rn.feature] + a.local_item_out[i + kAheadRow],
                        rn.width);
          }
        }
        const int32_t m = merged_of(i);
        if (m < m0 || m >= m1) continue;
        const RoutePart& rp = a.local_parts[a.local_item_part[i]];
        const float* __restrict x = a.local_feature_grad[rp.feature] + a.local_item_out[i];
        float* __restrict g = a.reduced + a.reduced_off[m];
        const float sc = a.local_item_scale[i];
        AxpyRow(g, x, sc, rp.width);
      }
    }
    for (int64_t u = m0; u < m1; ++u) {
      const int shard = static_cast<int>(a.keys[u] >> a.row_bits);
      const int64_t row = static_cast<int64_t>(a.keys[u] & row_mask);
      const ShardView& s = a.shards[shard];
      const OptimizerParams& p = a.params[shard];
      if (u + kAheadRows < m1) {
        const uint64_t k = a.keys[u + kAheadRows];
        PrefetchShardRowForWrite(a.shards[k >> a.row_bits], static_cast<int64_t>(k & row_mask));
      }
      float* g = a.reduced + a.reduced_off[u];
      if (sweep) FoldEntries(a, u, s.width, g, kAfter);
      ApplyL2(s, row, p, g);
      if (update != nullptr) UpdateOne(p, p.lr * update->lr_scale, s, row, g, 0.0f);
    }
  }
}

}  // namespace

void ReduceRowsCpu(const ReduceArgs& a) { ReduceImpl(a, nullptr); }

void UpdateRowsCpu(const UpdateArgs& a) {
  const uint64_t row_mask = (uint64_t{1} << a.row_bits) - 1;
#pragma omp parallel for schedule(static)
  for (int64_t u = 0; u < a.num_rows; ++u) {
    const int shard = static_cast<int>(a.keys[u] >> a.row_bits);
    const int64_t row = static_cast<int64_t>(a.keys[u] & row_mask);
    const OptimizerParams& p = a.params[shard];
    if (u + 8 < a.num_rows) {
      const uint64_t k = a.keys[u + 8];
      PrefetchShardRowForWrite(a.shards[k >> a.row_bits], static_cast<int64_t>(k & row_mask));
    }
    UpdateOne(p, p.lr * a.lr_scale, a.shards[shard], row, a.reduced + a.reduced_off[u],
              a.row_sq != nullptr ? a.row_sq[u] : 0.0f);
  }
}

void ReduceAndUpdateRowsCpu(const ReduceArgs& a, const UpdateArgs& up) { ReduceImpl(a, &up); }

void StepUntouchedRowsCpu(const UntouchedArgs& a) {
  const uint64_t row_mask = (uint64_t{1} << a.row_bits) - 1;
  const uint64_t* keys_end = a.touched_keys + a.num_touched;
  for (int shard = 0; shard < a.num_shards; ++shard) {
    const ShardView& s = a.shards[shard];
    const OptimizerParams& p = a.params[shard];
    if (!p.dense_update || s.weights == nullptr || s.num_rows == 0) continue;
    const uint64_t base = static_cast<uint64_t>(shard) << a.row_bits;
    // This shard's touched keys: one ascending run [t0, t1).
    const uint64_t* t0 = std::lower_bound(a.touched_keys, keys_end, base);
    const uint64_t* t1 = std::lower_bound(t0, keys_end, base + s.num_rows);
    const float lr = p.lr * a.lr_scale;
#pragma omp parallel
    {
      const int t = omp_get_thread_num(), nt = omp_get_num_threads();
      const int64_t r0 = s.num_rows * t / nt, r1 = s.num_rows * (t + 1) / nt;
      const uint64_t* next = std::lower_bound(t0, t1, base + static_cast<uint64_t>(r0));
      for (int64_t row = r0; row < r1; ++row) {
        if (next < t1 && static_cast<int64_t>(*next & row_mask) == row) {
          ++next;  // touched: stepped by the sparse update
          continue;
        }
        AdamRow<true>(p, lr, s, row, nullptr);
      }
    }
  }
}

}  // namespace loom::embedding::internal
