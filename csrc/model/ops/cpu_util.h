// CPU building blocks of the ops' reference backends (included by *_cpu.cc files only).
//
// Determinism: every reduction across rows is split into chunks whose boundaries depend only
// on the number of rows (never on the thread count), each chunk sums its rows in order into
// its own partial, and the partials are added in chunk order. So results are bit-identical
// for any OMP_NUM_THREADS. Cross-row sums accumulate in double (docs/numerics.md).
#ifndef LOOM_MODEL_OPS_CPU_UTIL_H_
#define LOOM_MODEL_OPS_CPU_UTIL_H_

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace loom::ops::cpu {

// Loops with fewer elements than this run on the calling thread (an OpenMP fork/join costs
// a few microseconds, more than the work below it).
constexpr int64_t kParallelGrain = 1 << 15;

// Row chunks of cross-row reductions: at least kMinRowsPerChunk rows per chunk, at most
// kMaxRowChunks chunks. A function of `rows` only.
constexpr int64_t kMinRowsPerChunk = 32;
constexpr int64_t kMaxRowChunks = 64;
inline int64_t NumRowChunks(int64_t rows) {
  return std::clamp<int64_t>(rows / kMinRowsPerChunk, 1, kMaxRowChunks);
}
inline int64_t ChunkBegin(int64_t rows, int64_t chunks, int64_t p) { return rows * p / chunks; }

// Scratch memory: grow-only, kScratchAlignment-aligned buffers private to the calling thread,
// one per slot. A buffer is allocated the first time an op needs that much (the first step),
// never in the steady state, and grows geometrically.
//
// The rule: a pointer from slot S is valid until the next request for S on the same thread,
// so code holding S's pointer must not call anything that requests S on its own thread (other
// threads have their own buffers). Holders and what they call today:
//   kDoubles (ScratchDoubles): ChunkedColumnReduce (its body must not use kDoubles), the
//     reductions in reduce_cpu.cc, and GemmBatchedSum's CPU backend, which keeps its partials
//     there while it runs Gemm products on the same thread.
//   kGemmPack: Loom's f32 GEMM kernel (gemm_cpu.cc) packs B panels there; it calls nothing
//     that requests scratch while it holds them.
// GemmBatchedSum holding kDoubles across a product that packs into kGemmPack is why the two
// are separate slots: a new holder that calls out while holding one needs its own slot.
enum class ScratchSlot : int { kDoubles, kGemmPack, kCount };

// 64 bytes: a cache line; enough for AVX-512 loads, and the GEMM's 16-float B panels start on
// cache lines.
constexpr size_t kScratchAlignment = 64;

// At least `bytes` bytes of the calling thread's buffer for `slot` (nullptr while no byte has
// been requested), valid until the next request for `slot` on this thread. Contents are not
// preserved across growth and not initialized.
void* ScratchBytes(ScratchSlot slot, size_t bytes);

template <typename T>
T* Scratch(ScratchSlot slot, size_t n) {
  static_assert(alignof(T) <= kScratchAlignment);
  return static_cast<T*>(ScratchBytes(slot, n * sizeof(T)));
}

// `n` doubles of the calling thread's kDoubles scratch (see the rule above).
inline double* ScratchDoubles(size_t n) { return Scratch<double>(ScratchSlot::kDoubles, n); }

// Runs body(r0, r1, partial) for every chunk [r0, r1) of [0, rows), in parallel; `partial`
// is `width` zeroed doubles owned by that chunk. The body must not call ScratchDoubles (the
// partials live in the calling thread's scratch). Returns the `width` sums of the partials,
// added in chunk order (a pointer into this thread's scratch, valid until the next call).
template <typename Body>
const double* ChunkedColumnReduce(int64_t rows, int64_t width, Body body) {
  const int64_t chunks = NumRowChunks(rows);
  double* scratch = ScratchDoubles(static_cast<size_t>((chunks + 1) * width));
  std::memset(scratch, 0, sizeof(double) * static_cast<size_t>((chunks + 1) * width));
  double* result = scratch + chunks * width;
#pragma omp parallel for schedule(static) if (rows * width > kParallelGrain)
  for (int64_t p = 0; p < chunks; ++p) {
    body(ChunkBegin(rows, chunks, p), ChunkBegin(rows, chunks, p + 1), scratch + p * width);
  }
  for (int64_t p = 0; p < chunks; ++p) {
    const double* part = scratch + p * width;
#pragma omp simd
    for (int64_t j = 0; j < width; ++j) result[j] += part[j];
  }
  return result;
}

// sums[j] = Σ_r x[r, j] over a row-major (rows, cols) matrix, in double, deterministically.
template <typename T>
const double* ColumnSums(const T* x, int64_t rows, int64_t cols) {
  return ChunkedColumnReduce(rows, cols, [&](int64_t r0, int64_t r1, double* part) {
    for (int64_t r = r0; r < r1; ++r) {
      const T* row = x + r * cols;
#pragma omp simd
      for (int64_t j = 0; j < cols; ++j) part[j] += static_cast<double>(row[j]);
    }
  });
}

}  // namespace loom::ops::cpu

#endif  // LOOM_MODEL_OPS_CPU_UTIL_H_
