#include "csrc/comm/rank_ordered_reduce.h"

#include <glog/logging.h>

namespace loom::comm {
namespace {

// Elements reduced per chunk: the rank loop runs over a chunk that stays in L1/L2 instead of
// streaming the whole output R times, and chunks are the unit of OpenMP parallelism. The
// order in which one element's R terms are added never depends on the chunking.
constexpr int64_t kReduceChunk = 2048;

// max with NaN propagating (the comparison alone would drop a NaN in b).
template <typename A>
inline A Max(A a, A b) {
  return (a > b || a != a) ? a : b;
}

// Storage type T and its accumulation type: f32/f64 accumulate in themselves, bf16/f16 in f32,
// integers in themselves.
template <typename T>
struct Accum {
  using type = T;
  static T In(T v) { return v; }
  static T Out(T v) { return v; }
};
template <>
struct Accum<bf16> {
  using type = float;
  static float In(bf16 v) { return Bf16ToFloat(v); }
  static bf16 Out(float v) { return FloatToBf16(v); }
};
template <>
struct Accum<f16> {
  using type = float;
  static float In(f16 v) { return F16ToFloat(v); }
  static f16 Out(float v) { return FloatToF16(v); }
};

template <typename T>
void Reduce(const T* in, int64_t stride, int nranks, int64_t n, ReduceOp op, T* out) {
  using A = typename Accum<T>::type;
  const int64_t num_chunks = (n + kReduceChunk - 1) / kReduceChunk;
#pragma omp parallel for schedule(static) if (num_chunks > 8)
  for (int64_t c = 0; c < num_chunks; ++c) {
    const int64_t begin = c * kReduceChunk;
    const int64_t len = std::min(kReduceChunk, n - begin);
    A acc[kReduceChunk];
    const T* first = in + begin;
    for (int64_t i = 0; i < len; ++i) acc[i] = Accum<T>::In(first[i]);
    for (int p = 1; p < nranks; ++p) {
      const T* src = in + p * stride + begin;
      if (op == ReduceOp::kSum) {
        for (int64_t i = 0; i < len; ++i) acc[i] = acc[i] + Accum<T>::In(src[i]);
      } else {
        for (int64_t i = 0; i < len; ++i) acc[i] = Max(acc[i], Accum<T>::In(src[i]));
      }
    }
    for (int64_t i = 0; i < len; ++i) out[begin + i] = Accum<T>::Out(acc[i]);
  }
}

template <typename T>
void Divide(T* x, int64_t n, int divisor) {
  using A = typename Accum<T>::type;
  const A d = static_cast<A>(divisor);
#pragma omp parallel for schedule(static) if (n > (1 << 16))
  for (int64_t i = 0; i < n; ++i) x[i] = Accum<T>::Out(Accum<T>::In(x[i]) / d);
}

}  // namespace

void ReduceRankOrdered(DType dtype, ReduceOp op, const void* in, int64_t stride, int nranks,
                       int64_t n, void* out) {
  switch (dtype) {
    case DType::kF32:
      return Reduce(static_cast<const float*>(in), stride, nranks, n, op, static_cast<float*>(out));
    case DType::kF64:
      return Reduce(static_cast<const double*>(in), stride, nranks, n, op,
                    static_cast<double*>(out));
    case DType::kBF16:
      return Reduce(static_cast<const bf16*>(in), stride, nranks, n, op, static_cast<bf16*>(out));
    case DType::kF16:
      return Reduce(static_cast<const f16*>(in), stride, nranks, n, op, static_cast<f16*>(out));
    case DType::kI32:
      return Reduce(static_cast<const int32_t*>(in), stride, nranks, n, op,
                    static_cast<int32_t*>(out));
    case DType::kI64:
      return Reduce(static_cast<const int64_t*>(in), stride, nranks, n, op,
                    static_cast<int64_t*>(out));
    case DType::kU8:
      break;
  }
  LOG(FATAL) << "ReduceRankOrdered: no reduction for dtype " << DTypeName(dtype);
}

void DivideInPlace(DType dtype, void* x, int64_t n, int divisor) {
  switch (dtype) {
    case DType::kF32:
      return Divide(static_cast<float*>(x), n, divisor);
    case DType::kF64:
      return Divide(static_cast<double*>(x), n, divisor);
    case DType::kBF16:
      return Divide(static_cast<bf16*>(x), n, divisor);
    case DType::kF16:
      return Divide(static_cast<f16*>(x), n, divisor);
    default:
      break;
  }
  LOG(FATAL) << "DivideInPlace: dtype " << DTypeName(dtype) << " is not floating point";
}

}  // namespace loom::comm
