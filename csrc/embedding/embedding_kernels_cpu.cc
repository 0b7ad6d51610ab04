// CPU reference kernels of embedding_kernels.h: OpenMP over bags / rows, with static
// contiguous chunks so every parallel decision is deterministic.
#include "csrc/embedding/embedding_kernels.h"

#include <algorithm>
#include <cstring>

#include <omp.h>

#include "csrc/embedding/embedding_spec.h"
#include "csrc/embedding/id_map.h"

namespace loom::embedding::internal {
namespace {

// Ids of bag (b, f) after truncation: [first, first + len).
inline void BagRange(const FeatureRoute& fr, int64_t b, int64_t* first, int64_t* len,
                     int64_t* raw_len) {
  const int64_t begin = fr.offsets[b], end = fr.offsets[b + 1];
  *raw_len = end - begin;
  int64_t n = end - begin;
  if (fr.kind == static_cast<int>(FeatureKind::kSequence) && n > fr.max_length) n = fr.max_length;
  *first = end - n;
  *len = n;
}

// Prefetches the row slice item i + kAhead will read (random rows of a large table are
// latency-bound; a few rows in flight per thread hide most of it).
constexpr int64_t kAhead = 6;
inline void PrefetchRow(const float* p, int width) {
  const char* c = reinterpret_cast<const char*>(p);
  for (int b = 0; b < width * 4; b += 64) __builtin_prefetch(c + b);
}

// dst[c] += s * src[c]; written so the compiler vectorizes it (no reassociation needed).
inline void Axpy(float* __restrict dst, const float* __restrict src, float s, int w) {
#pragma omp simd
  for (int c = 0; c < w; ++c) dst[c] += s * src[c];
}

}  // namespace

int64_t BucketizeCpu(const BucketizeArgs& a, BucketizeError* error) {
  const int F = a.num_features;
  const int64_t B = a.batch;
  const int64_t num_bags = B * F;
  // Pass 1: items per bag, and the first bad bag.
  int64_t first_bad = num_bags;
#pragma omp parallel for schedule(static) reduction(min : first_bad)
  for (int64_t g = 0; g < num_bags; ++g) {
    const int64_t b = g / F;
    const FeatureRoute& fr = a.features[g % F];
    int64_t first, len, raw_len;
    BagRange(fr, b, &first, &len, &raw_len);
    const bool cw = fr.strategy == static_cast<int>(Strategy::kColumnWise);
    a.bag_item_begin[g + 1] = len * (cw ? fr.num_parts : 1);
    bool bad = raw_len < 0 ||
               (fr.kind != static_cast<int>(FeatureKind::kSequence) && raw_len > fr.max_ids);
    if (!bad && fr.mapping == static_cast<int>(IdMapping::kDirect)) {
      for (int64_t i = first; i < first + len; ++i) {
        if (fr.ids[i] < 0 || fr.ids[i] >= fr.num_rows) {
          bad = true;
          break;
        }
      }
    }
    if (bad && g < first_bad) first_bad = g;
  }
  if (first_bad < num_bags) {
    const int64_t b = first_bad / F;
    const int f = static_cast<int>(first_bad % F);
    const FeatureRoute& fr = a.features[f];
    int64_t first, len, raw_len;
    BagRange(fr, b, &first, &len, &raw_len);
    error->feature = f;
    error->sample = b;
    error->count = raw_len;
    if (raw_len < 0 ||
        (fr.kind != static_cast<int>(FeatureKind::kSequence) && raw_len > fr.max_ids)) {
      error->kind = 2;
    } else {
      error->kind = 1;
      for (int64_t i = first; i < first + len; ++i) {
        if (fr.ids[i] < 0 || fr.ids[i] >= fr.num_rows) {
          error->id = fr.ids[i];
          break;
        }
      }
    }
    return -1;
  }
  a.bag_item_begin[0] = 0;
  for (int64_t g = 0; g < num_bags; ++g) a.bag_item_begin[g + 1] += a.bag_item_begin[g];
    // Pass 2: fill the items.
#pragma omp parallel for schedule(static)
  for (int64_t g = 0; g < num_bags; ++g) {
    const int64_t b = g / F;
    const FeatureRoute& fr = a.features[g % F];
    int64_t first, len, raw_len;
    BagRange(fr, b, &first, &len, &raw_len);
    int64_t item = a.bag_item_begin[g];
    const bool seq = fr.kind == static_cast<int>(FeatureKind::kSequence);
    const float inv_len = len > 0 ? 1.0f / static_cast<float>(len) : 0.0f;
    for (int64_t p = 0; p < len; ++p) {
      const int64_t row = MapId(fr.ids[first + p], fr.mapping, fr.num_rows, fr.hash_seed);
      float scale = 1.0f;
      if (!seq && fr.pooling == static_cast<int>(Pooling::kMean)) scale = inv_len;
      if (!seq && fr.pooling == static_cast<int>(Pooling::kWeightedSum)) {
        scale = fr.weights[first + p];
      }
      const int64_t out_base = seq ? (b * fr.max_length + (fr.max_length - len + p)) * fr.dim
                                   : b * fr.out_stride + fr.out_col;
      int part = fr.part_begin;
      int64_t local = row;
      int parts_here = 1;
      if (fr.strategy == static_cast<int>(Strategy::kRowWise)) {
        part = fr.part_begin + static_cast<int>(row % fr.num_parts);
        local = row / fr.num_parts;
      } else if (fr.strategy == static_cast<int>(Strategy::kColumnWise)) {
        parts_here = fr.num_parts;
      }
      for (int k = 0; k < parts_here; ++k, ++item) {
        const RoutePart& rp = a.parts[part + k];
        a.item_key[item] =
            (static_cast<uint64_t>(rp.slot) << a.row_bits) | static_cast<uint64_t>(local);
        a.item_part[item] = part + k;
        a.item_scale[item] = scale;
        a.item_out[item] = out_base + rp.col_begin;
      }
    }
  }
  return a.bag_item_begin[num_bags];
}

// 8-bit digits: 256 buckets keep the scatter's write streams within L1 and TLB reach.
constexpr int kDigitBits = 8;

int64_t SortUniqueCpu(const SortUniqueArgs& a) {
  const int64_t n = a.n;
  if (n == 0) {
    a.unique_begin[0] = 0;
    return 0;
  }
  // LSD radix sort of (key, index), digits of at most 11 bits. Each thread owns one
  // contiguous chunk and scatters its chunk in order: the sort is stable.
  const int passes = std::max(1, (a.bits + kDigitBits - 1) / kDigitBits);
  const int digit_bits = (a.bits + passes - 1) / passes;
  const int buckets = 1 << digit_bits;
  uint64_t* key_in = a.keys;
  uint64_t* key_out = a.keys_tmp;
  int32_t* val_in = a.perm;
  int32_t* val_out = a.vals_tmp;
  if (passes % 2 == 1) {  // end in (keys, perm): start from the scratch pair
    std::memcpy(a.keys_tmp, a.keys, n * sizeof(uint64_t));
    key_in = a.keys_tmp;
    key_out = a.keys;
    val_in = a.vals_tmp;
    val_out = a.perm;
  }
  for (int64_t i = 0; i < n; ++i) val_in[i] = static_cast<int32_t>(i);
  // Each pass has two barriers; below ~1M keys a single thread sorts in a few ms and never
  // waits for a descheduled sibling on a loaded machine.
  const int threads = std::max(
      1, std::min({omp_get_max_threads(), a.histogram_threads, static_cast<int>(n >> 20)}));
  for (int pass = 0; pass < passes; ++pass) {
    const int shift = pass * digit_bits;
    const uint64_t mask = static_cast<uint64_t>(buckets - 1);
#pragma omp parallel num_threads(threads)
    {
      const int t = omp_get_thread_num();
      const int nt = omp_get_num_threads();
      const int64_t lo = n * t / nt, hi = n * (t + 1) / nt;
      int64_t* h = a.histogram + static_cast<int64_t>(t) * 2048;
      std::fill(h, h + buckets, 0);
      for (int64_t i = lo; i < hi; ++i) ++h[(key_in[i] >> shift) & mask];
#pragma omp barrier
#pragma omp single
      {
        int64_t sum = 0;
        for (int d = 0; d < buckets; ++d) {
          for (int u = 0; u < nt; ++u) {
            int64_t& c = a.histogram[static_cast<int64_t>(u) * 2048 + d];
            const int64_t v = c;
            c = sum;
            sum += v;
          }
        }
      }
      for (int64_t i = lo; i < hi; ++i) {
        const int64_t dst = h[(key_in[i] >> shift) & mask]++;
        key_out[dst] = key_in[i];
        val_out[dst] = val_in[i];
      }
    }
    std::swap(key_in, key_out);
    std::swap(val_in, val_out);
  }
  // key_in / val_in now hold the sorted keys (a.keys) and perm (a.perm).
  int64_t u = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (i == 0 || key_in[i] != key_in[i - 1]) {
      a.unique_keys[u] = key_in[i];
      a.unique_begin[u] = static_cast<int32_t>(i);
      ++u;
    }
    if (a.inverse != nullptr) a.inverse[val_in[i]] = static_cast<int32_t>(u - 1);
  }
  a.unique_begin[u] = static_cast<int32_t>(n);
  return u;
}

void GatherRowsCpu(const uint64_t* keys, int64_t n, int row_bits, const ShardView* shards,
                   const int64_t* out_off, float* out) {
  const uint64_t row_mask = (uint64_t{1} << row_bits) - 1;
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const ShardView& s = shards[keys[i] >> row_bits];
    const int64_t row = static_cast<int64_t>(keys[i] & row_mask);
    std::memcpy(out + out_off[i], s.weights + row * s.width, s.width * sizeof(float));
  }
}

void PoolForwardCpu(const PoolArgs& a) {
  const int F = a.num_features;
  const int64_t num_bags = a.batch * F;
#pragma omp parallel for schedule(static)
  for (int64_t g = 0; g < num_bags; ++g) {
    const int64_t b = g / F;
    const int f = static_cast<int>(g % F);
    const FeatureRoute& fr = a.features[f];
    float* out = a.feature_out[f];
    const int64_t i0 = a.bag_item_begin[g], i1 = a.bag_item_begin[g + 1];
    if (fr.kind == static_cast<int>(FeatureKind::kSequence)) {
      const int64_t T = fr.max_length, D = fr.dim;
      const int parts = fr.strategy == static_cast<int>(Strategy::kColumnWise) ? fr.num_parts : 1;
      const int64_t len = (i1 - i0) / parts;
      std::memset(out + b * T * D, 0, (T - len) * D * sizeof(float));
      float* mask = a.feature_mask[f] + b * T;
      for (int64_t t = 0; t < T; ++t) mask[t] = t < T - len ? 0.0f : 1.0f;
      for (int64_t i = i0; i < i1; ++i) {
        const RoutePart& rp = a.parts[a.item_part[i]];
        if (i + kAhead < i1) PrefetchRow(a.unique_ptr[a.item_to_unique[i + kAhead]], rp.width);
        std::memcpy(out + a.item_out[i], a.unique_ptr[a.item_to_unique[i]],
                    rp.width * sizeof(float));
      }
    } else {
      float* dst = out + b * fr.out_stride + fr.out_col;
      std::memset(dst, 0, fr.dim * sizeof(float));
      for (int64_t i = i0; i < i1; ++i) {
        const RoutePart& rp = a.parts[a.item_part[i]];
        if (i + kAhead < i1) PrefetchRow(a.unique_ptr[a.item_to_unique[i + kAhead]], rp.width);
        Axpy(out + a.item_out[i], a.unique_ptr[a.item_to_unique[i]], a.item_scale[i], rp.width);
      }
    }
  }
}

void PackContributionsCpu(const PackArgs& a) {
#pragma omp parallel for schedule(static)
  for (int64_t u = 0; u < a.num_unique; ++u) {
    float* dst = a.out + a.contrib_off[u];
    for (int32_t j = a.unique_begin[u]; j < a.unique_begin[u + 1]; ++j) {
      const int32_t i = a.perm[j];
      const RoutePart& rp = a.parts[a.item_part[i]];
      const float* g = a.feature_grad[rp.feature] + a.item_out[i];
      const float s = a.item_scale[i];
#pragma omp simd
      for (int c = 0; c < rp.width; ++c) dst[c] = s * g[c];
      dst += rp.width;
    }
  }
}

}  // namespace loom::embedding::internal
