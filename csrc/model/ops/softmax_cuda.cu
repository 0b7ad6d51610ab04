// CUDA softmax: one warp per row, three sweeps (max, sum of exponentials, write); the row
// stays in L1/L2 between sweeps. fp32 math for f32/bf16.
#include "csrc/model/ops/softmax.h"

#include <cmath>

#include "csrc/model/ops/activation_math.h"
#include "csrc/model/ops/cuda_util.cuh"
#include "csrc/model/ops/op_util.h"

namespace loom::ops::internal {
namespace {

using cuda::AccT;
using cuda::Load;
using cuda::Store;

constexpr int kWarpsPerBlock = cuda::kBlock / 32;

template <typename T, typename S = AccT<T>>
__global__ void ForwardKernel(const T* x, const S* add, int64_t add_rows, const uint8_t* keep,
                              int64_t rows_per_keep, T* y, int64_t rows, int64_t c, S scale) {
  const int lane = threadIdx.x % 32;
  const S neg_inf = -INFINITY;
  for (int64_t r = blockIdx.x * static_cast<int64_t>(kWarpsPerBlock) + threadIdx.x / 32; r < rows;
       r += static_cast<int64_t>(gridDim.x) * kWarpsPerBlock) {
    const T* xr = x + r * c;
    const S* ar = add ? add + (r % add_rows) * c : nullptr;
    const uint8_t* kr = keep ? keep + (r / rows_per_keep) * c : nullptr;
    auto z_at = [&](int64_t j) -> S {
      if (kr && !kr[j]) return neg_inf;
      S z = scale * Load(xr, j);
      if (ar) z += ar[j];
      return z;
    };
    S max = neg_inf;
    for (int64_t j = lane; j < c; j += 32) max = fmax(max, z_at(j));
    max = cuda::WarpMax(max);
    T* yr = y + r * c;
    if (max == neg_inf) {
      for (int64_t j = lane; j < c; j += 32) Store(yr, j, S(0));
      continue;
    }
    S sum = 0;
    for (int64_t j = lane; j < c; j += 32) {
      const S z = z_at(j);
      sum += z == neg_inf ? S(0) : math::Exp(z - max);
    }
    const S inv = S(1) / cuda::WarpSum(sum);
    for (int64_t j = lane; j < c; j += 32) {
      const S z = z_at(j);
      Store(yr, j, z == neg_inf ? S(0) : math::Exp(z - max) * inv);
    }
  }
}

template <typename T, typename S = AccT<T>>
__global__ void BackwardKernel(const T* grad_y, const T* y, T* grad_x, int64_t rows, int64_t c,
                               S scale) {
  const int lane = threadIdx.x % 32;
  for (int64_t r = blockIdx.x * static_cast<int64_t>(kWarpsPerBlock) + threadIdx.x / 32; r < rows;
       r += static_cast<int64_t>(gridDim.x) * kWarpsPerBlock) {
    const T* gr = grad_y + r * c;
    const T* yr = y + r * c;
    S dot = 0;
    for (int64_t j = lane; j < c; j += 32) dot += Load(gr, j) * Load(yr, j);
    dot = cuda::WarpSum(dot);
    T* gxr = grad_x + r * c;
    for (int64_t j = lane; j < c; j += 32) {
      Store(gxr, j, scale * Load(yr, j) * (Load(gr, j) - dot));
    }
  }
}

}  // namespace

void SoftmaxForwardCuda(const SoftmaxArgs& args, ConstTensorView x, ConstTensorView additive_mask,
                        ConstTensorView key_mask, TensorView y, Stream stream) {
  const int64_t rows = MatrixRows(x.shape()), c = MatrixCols(x.shape());
  if (rows == 0) return;
  const int64_t add_rows = additive_mask.empty() ? 1 : MatrixRows(additive_mask.shape());
  const int64_t keep_rows = key_mask.empty() ? 1 : MatrixRows(key_mask.shape());
  const uint8_t* keep = key_mask.empty() ? nullptr : key_mask.data<uint8_t>();
  LOOM_OPS_CUDA_SWITCH("SoftmaxForward", x.dtype(), T, {
    using S = AccT<T>;
    const S* add = additive_mask.empty() ? nullptr : additive_mask.data<S>();
    ForwardKernel<T>
        <<<cuda::GridFor(rows, kWarpsPerBlock), cuda::kBlock, 0, AsCudaStream(stream)>>>(
            x.data<T>(), add, add_rows, keep, rows / keep_rows, y.data<T>(), rows, c,
            static_cast<S>(args.scale));
  });
  LOOM_CUDA_CHECK_LAUNCH();
}

void SoftmaxBackwardCuda(const SoftmaxArgs& args, ConstTensorView grad_y, ConstTensorView y,
                         TensorView grad_x, Stream stream) {
  const int64_t rows = MatrixRows(y.shape()), c = MatrixCols(y.shape());
  if (rows == 0) return;
  LOOM_OPS_CUDA_SWITCH("SoftmaxBackward", y.dtype(), T, {
    using S = AccT<T>;
    BackwardKernel<T>
        <<<cuda::GridFor(rows, kWarpsPerBlock), cuda::kBlock, 0, AsCudaStream(stream)>>>(
            grad_y.data<T>(), y.data<T>(), grad_x.data<T>(), rows, c, static_cast<S>(args.scale));
  });
  LOOM_CUDA_CHECK_LAUNCH();
}

}  // namespace loom::ops::internal
