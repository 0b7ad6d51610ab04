// Device-side helpers shared by the ops' CUDA backends (included by *_cuda.cu files only).
//
//   Acc<T>         the accumulation type: float for f32 and bf16, double for f64.
//   Cvt<T>         element <-> accumulator conversions (bf16 through dtype.h's exact RNE).
//   WarpSum/Max    butterfly reductions over a full warp.
//   GridFor        a grid size for grid-stride loops.
//   LOOM_OPS_CUDA_SWITCH  binds T to float, double or bf16 from a DType.
#ifndef LOOM_MODEL_OPS_CUDA_UTIL_CUH_
#define LOOM_MODEL_OPS_CUDA_UTIL_CUH_

#include <cstdint>

#include <cuda_runtime.h>
#include <glog/logging.h>

#include "csrc/core/cuda_check.cuh"
#include "csrc/core/dtype.h"

namespace loom::ops::cuda {

template <typename T>
struct Acc {
  using type = float;
};
template <>
struct Acc<double> {
  using type = double;
};
template <typename T>
using AccT = typename Acc<T>::type;

template <typename T>
struct Cvt;
template <>
struct Cvt<float> {
  static __device__ __forceinline__ float ToAcc(float v) { return v; }
  static __device__ __forceinline__ float FromAcc(float v) { return v; }
};
template <>
struct Cvt<double> {
  static __device__ __forceinline__ double ToAcc(double v) { return v; }
  static __device__ __forceinline__ double FromAcc(double v) { return v; }
};
template <>
struct Cvt<bf16> {
  static __device__ __forceinline__ float ToAcc(bf16 v) { return Bf16ToFloat(v); }
  static __device__ __forceinline__ bf16 FromAcc(float v) { return FloatToBf16(v); }
};

template <typename T>
__device__ __forceinline__ AccT<T> Load(const T* p, int64_t i) {
  return Cvt<T>::ToAcc(p[i]);
}
template <typename T>
__device__ __forceinline__ void Store(T* p, int64_t i, AccT<T> v) {
  p[i] = Cvt<T>::FromAcc(v);
}

template <typename A>
__device__ __forceinline__ A WarpSum(A v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}
template <typename A>
__device__ __forceinline__ A WarpMax(A v) {
  for (int offset = 16; offset > 0; offset >>= 1) {
    v = fmax(v, __shfl_xor_sync(0xffffffffu, v, offset));
  }
  return v;
}

// Sum over a block of kThreads threads (a multiple of 32). Every thread gets the result.
// `shared` holds at least kThreads / 32 accumulators.
template <int kThreads, typename A>
__device__ __forceinline__ A BlockSum(A v, A* shared) {
  static_assert(kThreads % 32 == 0 && kThreads <= 1024, "block size");
  constexpr int kWarps = kThreads / 32;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  v = WarpSum(v);
  __syncthreads();  // `shared` may still be read by a previous call
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  A total = 0;
  for (int w = 0; w < kWarps; ++w) total += shared[w];  // fixed order: deterministic
  return total;
}

constexpr int kBlock = 256;
inline int GridFor(int64_t n, int block = kBlock) {
  const int64_t blocks = (n + block - 1) / block;
  return static_cast<int>(blocks < 1 ? 1 : (blocks > 65536 ? 65536 : blocks));
}

// Chunks of a two-pass column reduction of (outer, n, inner) over n: enough (o, chunk, i)
// threads to fill a GPU (~64K), at least 32 rows per chunk, at most 1024 chunks. A function
// of the shape only, so results do not depend on the device (deterministic).
inline int64_t ColumnChunks(int64_t outer, int64_t n, int64_t inner) {
  const int64_t cells = outer * inner > 0 ? outer * inner : 1;
  const int64_t want = (65536 + cells - 1) / cells;
  int64_t chunks = want < n / 32 ? want : n / 32;
  if (chunks > 1024) chunks = 1024;
  return chunks < 1 ? 1 : chunks;
}

}  // namespace loom::ops::cuda

// Runs the statements with `T` bound to float (f32), double (f64) or loom::bf16 (bf16).
#define LOOM_OPS_CUDA_SWITCH(op, dtype, T, ...)                                          \
  do {                                                                                   \
    switch (dtype) {                                                                     \
      case ::loom::DType::kF32: {                                                        \
        using T = float;                                                                 \
        __VA_ARGS__;                                                                     \
        break;                                                                           \
      }                                                                                  \
      case ::loom::DType::kF64: {                                                        \
        using T = double;                                                                \
        __VA_ARGS__;                                                                     \
        break;                                                                           \
      }                                                                                  \
      case ::loom::DType::kBF16: {                                                       \
        using T = ::loom::bf16;                                                          \
        __VA_ARGS__;                                                                     \
        break;                                                                           \
      }                                                                                  \
      default:                                                                           \
        LOG(FATAL) << op << ": the CUDA backend has no kernel for " << DTypeName(dtype); \
    }                                                                                    \
  } while (0)

#endif  // LOOM_MODEL_OPS_CUDA_UTIL_CUH_
