// CUDA reductions. Deterministic: every sum has a fixed shape-determined order (warp
// butterflies, fixed chunking, partials added in chunk order); no atomics.
#include "csrc/model/ops/reduce.h"

#include "csrc/model/ops/blas_handle.cuh"
#include "csrc/model/ops/cuda_util.cuh"

namespace loom::ops::internal {
namespace {

using cuda::AccT;
using cuda::Load;
using cuda::Store;

template <typename T>
__device__ __forceinline__ void Put(T* y, int64_t i, AccT<T> sum, bool accumulate) {
  Store(y, i, accumulate ? Load(y, i) + sum : sum);
}

// inner == 1: one warp per row of n contiguous elements.
template <typename T>
__global__ void RowSumKernel(const T* x, T* y, int64_t rows, int64_t n, bool accumulate) {
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (blockDim.x / 32);
  const int lane = threadIdx.x % 32;
  for (int64_t r = blockIdx.x * static_cast<int64_t>(blockDim.x / 32) + threadIdx.x / 32; r < rows;
       r += warps) {
    AccT<T> sum = 0;
    for (int64_t k = lane; k < n; k += 32) sum += Load(x, r * n + k);
    sum = cuda::WarpSum(sum);
    if (lane == 0) Put(y, r, sum, accumulate);
  }
}

// Pass 1: partial[(o, p), i] = Σ_{k in chunk p} x[o, k, i]; chunk p = [n·p/P, n·(p+1)/P).
// With P == 1 the partial is the result and goes straight to y.
template <typename T>
__global__ void ColumnPartialKernel(const T* x, AccT<T>* partial, T* y, int64_t outer, int64_t n,
                                    int64_t inner, int64_t chunks, bool accumulate) {
  const int64_t total = outer * chunks * inner;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = idx % inner;
    const int64_t p = (idx / inner) % chunks;
    const int64_t o = idx / (inner * chunks);
    const int64_t k0 = n * p / chunks, k1 = n * (p + 1) / chunks;
    AccT<T> sum = 0;
    for (int64_t k = k0; k < k1; ++k) sum += Load(x, (o * n + k) * inner + i);
    if (chunks == 1) {
      Put(y, o * inner + i, sum, accumulate);
    } else {
      partial[idx] = sum;
    }
  }
}

// Pass 2: y[o, i] (+)= Σ_p partial[(o, p), i], p in order.
template <typename T>
__global__ void ColumnFinishKernel(const AccT<T>* partial, T* y, int64_t outer, int64_t inner,
                                   int64_t chunks, bool accumulate) {
  const int64_t total = outer * inner;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = idx % inner, o = idx / inner;
    AccT<T> sum = 0;
    for (int64_t p = 0; p < chunks; ++p) sum += partial[(o * chunks + p) * inner + i];
    Put(y, idx, sum, accumulate);
  }
}

template <typename T>
__global__ void BroadcastKernel(const T* grad_y, T* grad_x, int64_t n, int64_t inner,
                                int64_t total) {
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = idx % inner, o = idx / (n * inner);
    grad_x[idx] = grad_y[o * inner + i];
  }
}

// Number of valid tokens of row b, shared by the whole block.
__device__ int64_t BlockCount(const uint8_t* mask, int64_t t, int64_t* shared) {
  int64_t c = 0;
  for (int64_t j = threadIdx.x; j < t; j += blockDim.x) c += mask[j] != 0;
  return cuda::BlockSum<cuda::kBlock>(c, shared);
}

template <typename T>
__global__ void MaskedMeanKernel(const T* x, const uint8_t* mask, T* y, int64_t t, int64_t d) {
  __shared__ int64_t shared[cuda::kBlock / 32];
  const int64_t b = blockIdx.x;
  const uint8_t* m = mask + b * t;
  const int64_t count = BlockCount(m, t, shared);
  const AccT<T> denom = static_cast<AccT<T>>(count > 0 ? count : 1);
  for (int64_t e = threadIdx.x; e < d; e += blockDim.x) {
    AccT<T> sum = 0;
    for (int64_t j = 0; j < t; ++j) {
      if (m[j]) sum += Load(x, (b * t + j) * d + e);
    }
    Store(y, b * d + e, sum / denom);
  }
}

template <typename T>
__global__ void MaskedMeanBackwardKernel(const T* grad_y, const uint8_t* mask, T* grad_x, int64_t t,
                                         int64_t d) {
  __shared__ int64_t shared[cuda::kBlock / 32];
  const int64_t b = blockIdx.x;
  const uint8_t* m = mask + b * t;
  const int64_t count = BlockCount(m, t, shared);
  const AccT<T> denom = static_cast<AccT<T>>(count > 0 ? count : 1);
  for (int64_t idx = threadIdx.x; idx < t * d; idx += blockDim.x) {
    const int64_t j = idx / d, e = idx % d;
    Store(grad_x, b * t * d + idx, m[j] ? Load(grad_y, b * d + e) / denom : AccT<T>(0));
  }
}

}  // namespace

void SumDimCuda(int64_t outer, int64_t n, int64_t inner, bool accumulate, ConstTensorView x,
                TensorView y, Stream stream) {
  if (outer * inner == 0) return;
  cudaStream_t s = AsCudaStream(stream);
  LOOM_OPS_CUDA_SWITCH("SumDim", x.dtype(), T, {
    if (inner == 1) {
      RowSumKernel<T><<<cuda::GridFor(outer * 32), cuda::kBlock, 0, s>>>(x.data<T>(), y.data<T>(),
                                                                         outer, n, accumulate);
    } else {
      const int64_t chunks = cuda::ColumnChunks(outer, n, inner);
      AccT<T>* partial = nullptr;
      if (chunks > 1) {
        partial =
            static_cast<AccT<T>*>(cuda::Scratch(stream, sizeof(AccT<T>) * outer * chunks * inner));
      }
      ColumnPartialKernel<T><<<cuda::GridFor(outer * chunks * inner), cuda::kBlock, 0, s>>>(
          x.data<T>(), partial, y.data<T>(), outer, n, inner, chunks, accumulate);
      if (chunks > 1) {
        ColumnFinishKernel<T><<<cuda::GridFor(outer * inner), cuda::kBlock, 0, s>>>(
            partial, y.data<T>(), outer, inner, chunks, accumulate);
      }
    }
  });
  LOOM_CUDA_CHECK_LAUNCH();
}

void SumDimBackwardCuda(int64_t outer, int64_t n, int64_t inner, ConstTensorView grad_y,
                        TensorView grad_x, Stream stream) {
  const int64_t total = outer * n * inner;
  if (total == 0) return;
  LOOM_OPS_CUDA_SWITCH("SumDimBackward", grad_y.dtype(), T, {
    BroadcastKernel<T><<<cuda::GridFor(total), cuda::kBlock, 0, AsCudaStream(stream)>>>(
        grad_y.data<T>(), grad_x.data<T>(), n, inner, total);
  });
  LOOM_CUDA_CHECK_LAUNCH();
}

void MaskedMeanTokensCuda(ConstTensorView x, ConstTensorView mask, TensorView y, Stream stream) {
  const int64_t b = x.dim(0), t = x.dim(1), d = x.dim(2);
  if (b * d == 0) return;
  CHECK_LE(b, int64_t{1} << 31) << "MaskedMeanTokens: batch too large for one grid";
  LOOM_OPS_CUDA_SWITCH("MaskedMeanTokens", x.dtype(), T, {
    MaskedMeanKernel<T><<<static_cast<unsigned>(b), cuda::kBlock, 0, AsCudaStream(stream)>>>(
        x.data<T>(), mask.data<uint8_t>(), y.data<T>(), t, d);
  });
  LOOM_CUDA_CHECK_LAUNCH();
}

void MaskedMeanTokensBackwardCuda(ConstTensorView grad_y, ConstTensorView mask, TensorView grad_x,
                                  Stream stream) {
  const int64_t b = grad_x.dim(0), t = grad_x.dim(1), d = grad_x.dim(2);
  if (b * t * d == 0) return;
  CHECK_LE(b, int64_t{1} << 31) << "MaskedMeanTokensBackward: batch too large for one grid";
  LOOM_OPS_CUDA_SWITCH("MaskedMeanTokensBackward", grad_y.dtype(), T, {
    MaskedMeanBackwardKernel<T>
        <<<static_cast<unsigned>(b), cuda::kBlock, 0, AsCudaStream(stream)>>>(
            grad_y.data<T>(), mask.data<uint8_t>(), grad_x.data<T>(), t, d);
  });
  LOOM_CUDA_CHECK_LAUNCH();
}

}  // namespace loom::ops::internal
