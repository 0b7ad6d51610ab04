// CPU reference kernels of embedding_kernels.h: OpenMP over bags / rows, with static
// contiguous chunks so every parallel decision is deterministic.
#include "csrc/embedding/embedding_kernels.h"

#include <algorithm>
#include <cstdint>
#include <cstring>

#include <omp.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "csrc/embedding/bag_rules.h"
#include "csrc/embedding/embedding_spec.h"
#include "csrc/embedding/id_map.h"
#include "csrc/embedding/row_ops_cpu.h"

namespace loom::embedding::internal {
namespace {

// Items ahead the pool prefetches the row of (a 64-float row is 4 cache lines; the pool is
// bound by misses in flight, and a much longer distance only stalls on full fill buffers).
// With streaming output stores 16 beats 8 (bench pool 2.7-2.8 vs 2.9-3.2 ms); 24 and 32 no better.
constexpr int64_t kPoolAhead = 16;

// Streaming (non-temporal) stores for outputs too large to stay in a core's cache: they skip the
// read-for-ownership a plain store makes of every output line. Bench (B = 2048, T = 32, D = 64,
// the same binary toggled): pool 2.6-2.8 -> 2.5-2.7 ms, and reading the 17 MB of outputs
// afterwards 1.1-1.2 -> 0.9-1.0 ms. Each returns false, writing nothing, where the destination
// is not 16-byte aligned or the length not a multiple of 4 floats (the caller then stores
// normally). Callers end with StreamFence().
inline bool StreamCopy(float* dst, const float* src, int64_t n) {
#if defined(__SSE2__)
  if ((reinterpret_cast<uintptr_t>(dst) & 15) != 0 || n % 4 != 0) return false;
  for (int64_t c = 0; c < n; c += 4) _mm_stream_ps(dst + c, _mm_loadu_ps(src + c));
  return true;
#else
  (void)dst, (void)src, (void)n;
  return false;
#endif
}
inline bool StreamZero(float* dst, int64_t n) {
#if defined(__SSE2__)
  if ((reinterpret_cast<uintptr_t>(dst) & 15) != 0 || n % 4 != 0) return false;
  for (int64_t c = 0; c < n; c += 4) _mm_stream_ps(dst + c, _mm_setzero_ps());
  return true;
#else
  (void)dst, (void)n;
  return false;
#endif
}
// Orders this thread's streaming stores before what follows (they are weakly ordered).
inline void StreamFence() {
#if defined(__SSE2__)
  _mm_sfence();
#endif
}

// Pass 2 of Bucketize for bag g: its items, in canonical order, from position item on. The
// route's fields are copied into locals first: read through `fr` inside the loop they would be
// reloaded after every store (an int64 output may alias an int64 field).
inline void BucketizeBag(const BucketizeArgs& a, int64_t g, int64_t item) {
  const int F = a.num_features;
  const int64_t b = g / F;
  const FeatureRoute& fr = a.features[g % F];
  int64_t first, len, raw_len;
  BagRange(fr, b, &first, &len, &raw_len);
  const bool seq = fr.kind == static_cast<int>(FeatureKind::kSequence);
  const bool weighted = !seq && fr.pooling == static_cast<int>(Pooling::kWeightedSum);
  float scale = 1.0f;  // sum, sequence
  if (!seq && fr.pooling == static_cast<int>(Pooling::kMean) && len > 0) {
    scale = 1.0f / static_cast<float>(len);
  }
  // Output offset of the bag's first item, and the step per item (a sequence's tokens are
  // consecutive rows of its pre-padded (T, D) block; a pooled bag adds into one row).
  const int64_t out_first =
      seq ? (b * fr.max_length + (fr.max_length - len)) * fr.dim : b * fr.out_stride + fr.out_col;
  const int64_t out_step = seq ? fr.dim : 0;
  const int mapping = fr.mapping;
  const uint64_t num_rows = static_cast<uint64_t>(fr.num_rows);
  const uint64_t hash_seed = fr.hash_seed;
  const bool modulo = mapping == static_cast<int>(IdMapping::kModulo);
  const bool rw = fr.strategy == static_cast<int>(Strategy::kRowWise);
  const int num_parts = fr.num_parts, part_begin = fr.part_begin;
  const int parts_here = fr.strategy == static_cast<int>(Strategy::kColumnWise) ? num_parts : 1;
  const bool parts_pow2 = (num_parts & (num_parts - 1)) == 0;
  const int parts_shift = parts_pow2 ? __builtin_ctz(static_cast<unsigned>(num_parts)) : 0;
  const int row_bits = a.row_bits;
  const RoutePart* __restrict parts = a.parts;
  const int64_t* __restrict ids = fr.ids + first;
  const float* __restrict weights = weighted ? fr.weights + first : nullptr;
  uint64_t* __restrict key = a.item_key;
  int32_t* __restrict part_out = a.item_part;
  float* __restrict scale_out = a.item_scale;
  int64_t* __restrict out = a.item_out;
  for (int64_t p = 0; p < len; ++p) {
    // MapId, without its 64-bit division for the common MODULO id already below num_rows.
    const int64_t id = ids[p];
    const int64_t row = modulo && static_cast<uint64_t>(id) < num_rows
                            ? id
                            : MapId(id, mapping, static_cast<int64_t>(num_rows), hash_seed);
    const float s = weighted ? weights[p] : scale;
    const int64_t out_base = out_first + p * out_step;
    int part = part_begin;
    int64_t local = row;
    if (rw && parts_pow2) {  // row % n and row / n as a mask and a shift (row >= 0)
      part = part_begin + static_cast<int>(row & (num_parts - 1));
      local = row >> parts_shift;
    } else if (rw) {
      part = part_begin + static_cast<int>(row % num_parts);
      local = row / num_parts;
    }
    for (int k = 0; k < parts_here; ++k, ++item) {  // a column-wise id: one item per slice
      const RoutePart& rp = parts[part + k];
      key[item] = (static_cast<uint64_t>(rp.slot) << row_bits) | static_cast<uint64_t>(local);
      part_out[item] = part + k;
      scale_out[item] = s;
      out[item] = out_base + rp.col_begin;
    }
  }
}

}  // namespace

int64_t BucketizeCpu(const BucketizeArgs& a, BucketizeError* error) {
  const int F = a.num_features;
  const int64_t B = a.batch;
  const int64_t num_bags = B * F;
  // One parallel region and no barrier (on a loaded machine every synchronization can wait a
  // scheduler slice for a preempted sibling). Each thread owns a contiguous chunk of bags and
  // finds where its items start by summing the lengths of the bags before its chunk itself
  // (offsets only: a few microseconds). Pass 1 counts its bags' items and finds its first bad
  // bag; pass 2 fills its items, unless its chunk has a bad bag or a bag before it is too long
  // (then the item positions could overrun the buffers; the step fails anyway).
  constexpr int kMaxThreads = 256;
  int64_t chunk_bad[kMaxThreads];
  int threads = 1;
  auto bag_items = [&](int64_t g, bool* too_long) {
    const FeatureRoute& fr = a.features[g % F];
    int64_t first, len, raw_len;
    BagRange(fr, g / F, &first, &len, &raw_len);
    *too_long = BagTooLong(fr, raw_len);
    return len * (fr.strategy == static_cast<int>(Strategy::kColumnWise) ? fr.num_parts : 1);
  };
#pragma omp parallel num_threads(std::min(omp_get_max_threads(), kMaxThreads))
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    if (t == 0) threads = nt;
    const int64_t g0 = num_bags * t / nt, g1 = num_bags * (t + 1) / nt;
    int64_t base = 0, bad_bag = num_bags;
    bool lengths_ok = true;
    for (int64_t g = 0; g < g0; ++g) {
      bool too_long;
      base += bag_items(g, &too_long);
      lengths_ok = lengths_ok && !too_long;
    }
    if (t == 0) a.bag_item_begin[0] = 0;
    int64_t next = base;
    for (int64_t g = g0; g < g1; ++g) {
      bool too_long;
      next += bag_items(g, &too_long);
      a.bag_item_begin[g + 1] = next;
      bool bad = too_long;
      lengths_ok = lengths_ok && !too_long;
      const FeatureRoute& fr = a.features[g % F];
      if (!bad && fr.mapping == static_cast<int>(IdMapping::kDirect)) {
        int64_t first, len, raw_len;
        BagRange(fr, g / F, &first, &len, &raw_len);
        bad = FirstBadDirectPos(fr, first, len) >= 0;
      }
      if (bad && g < bad_bag) bad_bag = g;
    }
    chunk_bad[t] = bad_bag;
    if (lengths_ok && bad_bag == num_bags) {
      int64_t item = base;
      for (int64_t g = g0; g < g1; ++g) {
        BucketizeBag(a, g, item);
        item = a.bag_item_begin[g + 1];  // written by this thread above
      }
    }
  }
  int64_t first_bad = num_bags;
  for (int u = 0; u < threads; ++u) first_bad = std::min(first_bad, chunk_bad[u]);
  if (first_bad < num_bags) {
    const int f = static_cast<int>(first_bad % F);
    DescribeBadBag(a.features[f], f, first_bad / F, error);
    return -1;
  }
  return a.bag_item_begin[num_bags];
}

namespace {

// Digits of at most 11 bits (2048 buckets, the histogram's row): keys of up to 22 bits (a
// 1M-row table and a few shards) sort in two passes.
constexpr int kDigitBits = 11;
constexpr int kMaxPackedPasses = 4;

// Returns the bits an index below n needs (at least 1).
inline int IndexBits(int64_t n) {
  int b = 1;
  while ((int64_t{1} << b) < n) ++b;
  return b;
}

// Keys per thread below which the packed sort does not split: a pass over fewer keys costs
// less than the two barriers around it, and on a shared, loaded machine a barrier waits for a
// descheduled sibling for a whole scheduler slice (measured: 107K keys sort in 0.5-0.9 ms on
// one thread, ~24 ms wall on two at load 5).
constexpr int64_t kMinSortKeysPerThread = int64_t{1} << 17;

// Writes perm, the runs (unique_keys, unique_begin) and the inverse from words sorted[lo, hi)
// whose first run is number u + 1 (u = -1 for the first chunk); returns the last run's number.
inline int64_t EmitRuns(const SortUniqueArgs& a, const uint64_t* __restrict sorted, int64_t lo,
                        int64_t hi, int index_bits, int64_t u) {
  const uint64_t index_mask = (uint64_t{1} << index_bits) - 1;
  uint64_t* __restrict unique_keys = a.unique_keys;
  int32_t* __restrict unique_begin = a.unique_begin;
  int32_t* __restrict perm = a.perm;
  int32_t* __restrict inverse = a.inverse;
  uint64_t prev = lo > 0 ? sorted[lo - 1] >> index_bits : ~uint64_t{0};
  for (int64_t i = lo; i < hi; ++i) {
    const uint64_t w = sorted[i];
    const uint64_t k = w >> index_bits;
    if (i == 0 || k != prev) {
      ++u;
      unique_keys[u] = k;
      unique_begin[u] = static_cast<int32_t>(i);
      prev = k;
    }
    const int32_t idx = static_cast<int32_t>(w & index_mask);
    perm[i] = idx;
    if (inverse != nullptr) inverse[idx] = static_cast<int32_t>(u);
  }
  return u;
}

// The scatter loops of the packed sort, each a function of its own: written inline in a
// parallel region they reached the offsets and buffers through the shared frame and ran ~1.7x
// slower (107K keys on one thread: 0.9 vs 0.53 ms).
// Pass 0: the words (key << index_bits) | index of keys[lo, hi), placed by their low digit.
inline void ScatterKeys(const uint64_t* __restrict keys, int64_t lo, int64_t hi, uint64_t mask,
                        int index_bits, uint32_t* __restrict off, uint64_t* __restrict out) {
  for (int64_t i = lo; i < hi; ++i) {
    const uint64_t k = keys[i];
    out[off[k & mask]++] = (k << index_bits) | static_cast<uint64_t>(i);
  }
}
// Later passes: words in[lo, hi) placed by digit (w >> shift) & mask.
inline void ScatterWords(const uint64_t* __restrict in, int64_t lo, int64_t hi, int shift,
                         uint64_t mask, uint32_t* __restrict off, uint64_t* __restrict out) {
  for (int64_t i = lo; i < hi; ++i) {
    const uint64_t w = in[i];
    out[off[(w >> shift) & mask]++] = w;
  }
}

// The packed sort below on one thread, without a parallel region (nothing to wake, no
// barriers): counts every pass's digits in one read, scatters, and emits the runs.
template <int kPasses>
int64_t SortUniquePackedSerial(const SortUniqueArgs& a, int index_bits, uint32_t* hist) {
  const int64_t n = a.n;
  const int digit_bits = (a.bits + kPasses - 1) / kPasses;
  const int buckets = 1 << digit_bits;
  const uint64_t mask = static_cast<uint64_t>(buckets - 1);
  std::fill(hist, hist + kPasses * buckets, 0u);
  // The first scatter writes keys_tmp in up to 2048 interleaved streams, and a store to a line
  // not in cache waits for it (a read for ownership each, one at a time). Prefetching the
  // buffer for writing during the counting read, a line per 8 keys, fetches it as one stream
  // instead: bench dedup (one rank, buffers evicted by the pool) 1.2 -> 0.9 ms.
  for (int64_t i = 0; i < n; ++i) {
    if ((i & 7) == 0) __builtin_prefetch(a.keys_tmp + i, 1, 3);
    const uint64_t k = a.keys[i];
    for (int q = 0; q < kPasses; ++q) ++hist[q * buckets + ((k >> (q * digit_bits)) & mask)];
  }
  for (int q = 0; q < kPasses; ++q) {  // exclusive prefix sums: each digit's first position
    uint32_t* h = hist + q * buckets;
    uint32_t base = 0;
    for (int d = 0; d < buckets; ++d) {
      const uint32_t c = h[d];
      h[d] = base;
      base += c;
    }
  }
  ScatterKeys(a.keys, 0, n, mask, index_bits, hist, a.keys_tmp);
  for (int p = 1; p < kPasses; ++p) {  // pass p reads what pass p - 1 wrote
    ScatterWords(p % 2 == 1 ? a.keys_tmp : a.keys, 0, n, index_bits + p * digit_bits, mask,
                 hist + p * buckets, p % 2 == 1 ? a.keys : a.keys_tmp);
  }
  const int64_t num_unique =
      EmitRuns(a, kPasses % 2 == 1 ? a.keys_tmp : a.keys, 0, n, index_bits, -1) + 1;
  a.unique_begin[num_unique] = static_cast<int32_t>(n);
  return num_unique;
}

// LSD radix sort of words (key << index_bits) | index on `threads` threads (one thread: the
// serial twin above). Each thread owns one contiguous chunk of every pass's input: it counts
// the chunk's digits, then scatters the chunk in order (the first pass builds the words from
// the keys); at the end it writes perm, the runs and the inverse for its chunk of the sorted
// words. A word moves 8 bytes where a (key, index) pair moves 12, and the index
// rides in the word, so there is no value stream.
// Stable: within a digit, thread t's words land after those of threads < t, in chunk order.
// hist holds threads * passes * buckets counters (the int64 histogram scratch, as uint32).
int64_t SortUniquePacked(const SortUniqueArgs& a, int index_bits, int passes, int threads,
                         uint32_t* hist) {
  switch (threads == 1 ? passes : 0) {
    case 1:
      return SortUniquePackedSerial<1>(a, index_bits, hist);
    case 2:
      return SortUniquePackedSerial<2>(a, index_bits, hist);
    case 3:
      return SortUniquePackedSerial<3>(a, index_bits, hist);
    case 4:
      return SortUniquePackedSerial<4>(a, index_bits, hist);
    default:
      break;
  }
  const int64_t n = a.n;
  const int digit_bits = (a.bits + passes - 1) / passes;
  const int buckets = 1 << digit_bits;
  const uint64_t mask = static_cast<uint64_t>(buckets - 1);
  const int64_t stride = static_cast<int64_t>(passes) * buckets;  // counters per thread
  // Sorted words end in keys_tmp (odd passes) or keys.
  const uint64_t* sorted = passes % 2 == 1 ? a.keys_tmp : a.keys;
  int64_t num_unique = 0;
#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    const int64_t lo = n * t / nt, hi = n * (t + 1) / nt;
    uint32_t* h = hist + t * stride;
    uint32_t off[1 << kDigitBits];
    for (int p = 0; p < passes; ++p) {
      // Pass p reads the raw keys (p = 0) or the words of pass p - 1.
      const uint64_t* in = p == 0 ? a.keys : p % 2 == 1 ? a.keys_tmp : a.keys;
      uint64_t* out = p % 2 == 0 ? a.keys_tmp : a.keys;
      const int shift = p == 0 ? 0 : index_bits + p * digit_bits;
      uint32_t* hp = h + p * buckets;  // counts of pass p: read by all threads after a barrier
      std::fill(hp, hp + buckets, 0u);
      for (int64_t i = lo; i < hi; ++i) ++hp[(in[i] >> shift) & mask];
#pragma omp barrier
      // This thread's write positions: all threads' words of smaller digits, then the words of
      // this digit from threads < t.
      uint32_t base = 0;
      for (int d = 0; d < buckets; ++d) {
        uint32_t before = 0, total = 0;
        for (int u = 0; u < nt; ++u) {
          const uint32_t c = hist[u * stride + p * buckets + d];
          before += u < t ? c : 0u;
          total += c;
        }
        off[d] = base + before;
        base += total;
      }
      if (p == 0) {
        ScatterKeys(in, lo, hi, mask, index_bits, off, out);
      } else {
        ScatterWords(in, lo, hi, shift, mask, off, out);
      }
#pragma omp barrier
    }
    // Runs: count the run starts of this chunk, then number them after those of lower chunks.
    uint32_t starts = 0;
    for (int64_t i = lo; i < hi; ++i) {
      starts += i == 0 || (sorted[i] >> index_bits) != (sorted[i - 1] >> index_bits) ? 1u : 0u;
    }
    h[0] = starts;  // every thread is past reading pass 0's counts (the barriers above)
#pragma omp barrier
    int64_t u = -1;
    for (int k = 0; k < t; ++k) u += hist[k * stride];
    if (t == nt - 1) num_unique = u + 1 + starts;
    EmitRuns(a, sorted, lo, hi, index_bits, u);
  }
  a.unique_begin[num_unique] = static_cast<int32_t>(n);
  return num_unique;
}

// The general sort (keys too wide to pack with their index, or enough keys for several
// threads): 8-bit digits, 256 buckets keep the scatter's write streams within L1 and TLB
// reach of (key, index) pairs far larger than the caches.
constexpr int kWideDigitBits = 8;

}  // namespace

int64_t SortUniqueCpu(const SortUniqueArgs& a) {
  const int64_t n = a.n;
  if (n == 0) {
    a.unique_begin[0] = 0;
    return 0;
  }
  // Keys already strictly ascending (the owner's merge on one rank: its own sorted unique
  // keys) are their own stable sort, each key a run. Checked in one read that stops at the
  // first key not above its predecessor (at once for unsorted input).
  int64_t ascending = 1;
  while (ascending < n && a.keys[ascending - 1] < a.keys[ascending]) ++ascending;
  if (ascending == n) {
    for (int64_t i = 0; i < n; ++i) {
      a.perm[i] = static_cast<int32_t>(i);
      a.unique_keys[i] = a.keys[i];
      a.unique_begin[i] = static_cast<int32_t>(i);
      if (a.inverse != nullptr) a.inverse[i] = static_cast<int32_t>(i);
    }
    a.unique_begin[n] = static_cast<int32_t>(n);
    return n;
  }
  const int index_bits = IndexBits(n);
  const int packed_passes = std::max(1, (a.bits + kDigitBits - 1) / kDigitBits);
  if (a.bits + index_bits <= 64 && packed_passes <= kMaxPackedPasses) {
    // The histogram scratch holds histogram_threads * 4096 uint32 counters.
    const int64_t per_thread = static_cast<int64_t>(packed_passes) << kDigitBits;
    int threads = static_cast<int>(
        std::min<int64_t>({omp_get_max_threads(), a.histogram_threads,
                           std::max<int64_t>(1, n / kMinSortKeysPerThread),
                           static_cast<int64_t>(a.histogram_threads) * 4096 / per_thread}));
    if (threads >= 1) {
      return SortUniquePacked(a, index_bits, packed_passes, threads,
                              reinterpret_cast<uint32_t*>(a.histogram));
    }
  }
  // Each pass of the threaded sort has two barriers; below ~1M keys a single thread sorts in a
  // few ms and never waits for a descheduled sibling on a loaded machine.
  const int threads = std::max(
      1, std::min({omp_get_max_threads(), a.histogram_threads, static_cast<int>(n >> 20)}));
  // LSD radix sort of (key, index), digits of at most 8 bits. Each thread owns one
  // contiguous chunk and scatters its chunk in order: the sort is stable.
  const int passes = std::max(1, (a.bits + kWideDigitBits - 1) / kWideDigitBits);
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

namespace {

// PoolForwardCpu for one way of finding an item's row: row_of(i) -> const float*.
template <typename RowOf>
void PoolBags(const PoolArgs& a, RowOf row_of) {
  const int F = a.num_features;
  const int64_t num_bags = a.batch * F;
  // Each thread owns a contiguous range of bags, hence of items, and prefetches the row of the
  // item kPoolAhead positions on across bag boundaries (a bag of a few ids would otherwise
  // start every bag with cold misses).
#pragma omp parallel
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    const int64_t g0 = num_bags * t / nt, g1 = num_bags * (t + 1) / nt;
    const int64_t item_end = a.bag_item_begin[g1];
    for (int64_t i = a.bag_item_begin[g0];
         i < std::min(a.bag_item_begin[g0] + kPoolAhead, item_end); ++i) {
      PrefetchRow(row_of(i), a.parts[a.item_part[i]].width);
    }
    for (int64_t g = g0; g < g1; ++g) {
      const int64_t b = g / F;
      const int f = static_cast<int>(g % F);
      const FeatureRoute& fr = a.features[f];
      float* out = a.feature_out[f];
      const int64_t i0 = a.bag_item_begin[g], i1 = a.bag_item_begin[g + 1];
      if (fr.kind == static_cast<int>(FeatureKind::kSequence)) {
        const int64_t T = fr.max_length, D = fr.dim;
        const int parts = fr.strategy == static_cast<int>(Strategy::kColumnWise) ? fr.num_parts : 1;
        const int64_t len = (i1 - i0) / parts;
        float* pad = out + b * T * D;
        if (!(a.stream_outputs && StreamZero(pad, (T - len) * D))) {
          std::memset(pad, 0, (T - len) * D * sizeof(float));
        }
        float* mask = a.feature_mask[f] + b * T;
        for (int64_t p = 0; p < T; ++p) mask[p] = p < T - len ? 0.0f : 1.0f;
        for (int64_t i = i0; i < i1; ++i) {
          if (i + kPoolAhead < item_end) {
            PrefetchRow(row_of(i + kPoolAhead), a.parts[a.item_part[i + kPoolAhead]].width);
          }
          const int w = a.parts[a.item_part[i]].width;
          if (!(a.stream_outputs && StreamCopy(out + a.item_out[i], row_of(i), w))) {
            CopyRow(out + a.item_out[i], row_of(i), w);
          }
        }
      } else {
        float* dst = out + b * fr.out_stride + fr.out_col;
        std::memset(dst, 0, fr.dim * sizeof(float));
        for (int64_t i = i0; i < i1; ++i) {
          if (i + kPoolAhead < item_end) {
            PrefetchRow(row_of(i + kPoolAhead), a.parts[a.item_part[i + kPoolAhead]].width);
          }
          AxpyRow(out + a.item_out[i], row_of(i), a.item_scale[i], a.parts[a.item_part[i]].width);
        }
      }
    }
    if (a.stream_outputs) StreamFence();
  }
}

}  // namespace

void PoolForwardCpu(const PoolArgs& a) {
  if (a.item_key != nullptr) {
    PoolBags(a, [&](int64_t i) { return PoolRowByKey(a, i, a.parts[a.item_part[i]].width); });
  } else {
    PoolBags(a, [&](int64_t i) { return a.unique_ptr[a.item_to_unique[i]]; });
  }
}

void PackContributionsCpu(const PackArgs& a) {
  // Items in dedup order read their output gradients at random: each item prefetches the
  // gradient of the one kPackAhead places on (bench, 2 ranks: pack 2.9 -> 2.3-2.4 ms).
  constexpr int32_t kPackAhead = 12;
  const int32_t j_end = a.num_unique > 0 ? a.unique_begin[a.num_unique] : 0;
  auto grad_of = [&](int32_t i) {
    const RoutePart& rp = a.parts[a.item_part[i]];
    return a.feature_grad[rp.feature] + a.item_out[i];
  };
#pragma omp parallel for schedule(static)
  for (int64_t u = 0; u < a.num_unique; ++u) {
    float* dst = a.out + a.contrib_off[u];
    for (int32_t j = a.unique_begin[u]; j < a.unique_begin[u + 1]; ++j) {
      if (j + kPackAhead < j_end) {
        const int32_t in = a.perm[j + kPackAhead];
        PrefetchRow(grad_of(in), a.parts[a.item_part[in]].width);
      }
      const int32_t i = a.perm[j];
      const int w = a.parts[a.item_part[i]].width;
      const float* g = grad_of(i);
      const float s = a.item_scale[i];
#pragma omp simd
      for (int c = 0; c < w; ++c) dst[c] = s * g[c];
      dst += w;
    }
  }
}

}  // namespace loom::embedding::internal
