// Row loops and row prefetches of the CPU embedding kernels (embedding_kernels_cpu.cc,
// sparse_optimizer_cpu.cc). Embedding rows are short (16-128 floats) and touched one at a time,
// so a loop over a runtime width pays its trip-count logic per row; the common widths get fully
// unrolled copies instead. Every copy evaluates the same expression per element, so all widths
// give the same bits.
#ifndef LOOM_EMBEDDING_ROW_OPS_CPU_H_
#define LOOM_EMBEDDING_ROW_OPS_CPU_H_

#include <type_traits>

namespace loom::embedding::internal {

// Calls f(std::integral_constant<int, W>{}) with W = w when w is a width the kernels unroll
// (16, 32, 64, 128), else with W = 0: f then loops to the runtime width (see RowWidth).
template <typename F>
inline decltype(auto) WithFixedWidth(int w, F&& f) {
  switch (w) {
    case 16:
      return f(std::integral_constant<int, 16>{});
    case 32:
      return f(std::integral_constant<int, 32>{});
    case 64:
      return f(std::integral_constant<int, 64>{});
    case 128:
      return f(std::integral_constant<int, 128>{});
    default:
      return f(std::integral_constant<int, 0>{});
  }
}

// The loop bound inside a WithFixedWidth body: the constant W, or the runtime w for W = 0.
template <int W>
constexpr int RowWidth(int w) {
  return W > 0 ? W : w;
}

// Prefetches the cache lines of a row of w floats, for reading or for writing (random rows of
// a large table are latency-bound; a few rows in flight per thread hide most of it).
inline void PrefetchRow(const float* p, int w) {
  const char* c = reinterpret_cast<const char*>(p);
  for (int b = 0; b < w * 4; b += 64) __builtin_prefetch(c + b);
}
inline void PrefetchRowForWrite(const float* p, int w) {
  const char* c = reinterpret_cast<const char*>(p);
  for (int b = 0; b < w * 4; b += 64) __builtin_prefetch(c + b, 1);
}

// dst[c] = dst[c] + s * src[c] for c < w.
inline void AxpyRow(float* __restrict dst, const float* __restrict src, float s, int w) {
  WithFixedWidth(w, [&](auto W) {
    const int n = RowWidth<W()>(w);
#pragma omp simd
    for (int c = 0; c < n; ++c) dst[c] = dst[c] + s * src[c];
  });
}

// dst[c] = dst[c] + src[c] for c < w.
inline void AddRow(float* __restrict dst, const float* __restrict src, int w) {
  WithFixedWidth(w, [&](auto W) {
    const int n = RowWidth<W()>(w);
#pragma omp simd
    for (int c = 0; c < n; ++c) dst[c] = dst[c] + src[c];
  });
}

// dst[c] = src[c] for c < w (inline vector moves instead of a memcpy call).
inline void CopyRow(float* __restrict dst, const float* __restrict src, int w) {
  WithFixedWidth(w, [&](auto W) {
    const int n = RowWidth<W()>(w);
#pragma omp simd
    for (int c = 0; c < n; ++c) dst[c] = src[c];
  });
}

}  // namespace loom::embedding::internal

#endif  // LOOM_EMBEDDING_ROW_OPS_CPU_H_
