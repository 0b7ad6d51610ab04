// CUDA layer norm: one warp per row (statistics by warp butterflies, fp32 for f32/bf16).
// Backward runs the gamma/beta column sums first (two-pass, fixed chunks: deterministic), and
// grad_x after them, so grad_x may overwrite grad_y.
#include "csrc/model/ops/layer_norm.h"

#include "csrc/model/ops/blas_handle.cuh"
#include "csrc/model/ops/cuda_util.cuh"
#include "csrc/model/ops/op_util.h"

namespace loom::ops::internal {
namespace {

using cuda::AccT;
using cuda::Load;
using cuda::Store;

constexpr int kWarpsPerBlock = cuda::kBlock / 32;

int RowGrid(int64_t rows) { return cuda::GridFor(rows, kWarpsPerBlock); }

template <typename T, typename S = AccT<T>>
__global__ void ForwardKernel(const T* x, const S* gamma, const S* beta, T* y, S* mean_out,
                              S* rstd_out, int64_t rows, int64_t c, S eps) {
  const int lane = threadIdx.x % 32;
  for (int64_t r = blockIdx.x * static_cast<int64_t>(kWarpsPerBlock) + threadIdx.x / 32; r < rows;
       r += static_cast<int64_t>(gridDim.x) * kWarpsPerBlock) {
    const T* xr = x + r * c;
    S sum = 0;
    for (int64_t j = lane; j < c; j += 32) sum += Load(xr, j);
    const S mean = cuda::WarpSum(sum) / static_cast<S>(c);
    S sq = 0;
    for (int64_t j = lane; j < c; j += 32) {
      const S d = Load(xr, j) - mean;
      sq += d * d;
    }
    const S var = cuda::WarpSum(sq) / static_cast<S>(c);
    const S rstd = S(1) / sqrt(var + eps);
    T* yr = y + r * c;
    for (int64_t j = lane; j < c; j += 32) {
      Store(yr, j, (Load(xr, j) - mean) * rstd * gamma[j] + beta[j]);
    }
    if (lane == 0) {
      mean_out[r] = mean;
      rstd_out[r] = rstd;
    }
  }
}

// partial[0][p][j] = Σ_{r in chunk p} grad_y·x̂,  partial[1][p][j] = Σ grad_y.
template <typename T, typename S = AccT<T>>
__global__ void ParamPartialKernel(const T* grad_y, const T* x, const S* mean, const S* rstd,
                                   S* partial, int64_t rows, int64_t c, int64_t chunks) {
  const int64_t total = chunks * c;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t j = idx % c, p = idx / c;
    const int64_t r0 = rows * p / chunks, r1 = rows * (p + 1) / chunks;
    S sum_gx = 0, sum_g = 0;
    for (int64_t r = r0; r < r1; ++r) {
      const S g = Load(grad_y, r * c + j);
      sum_gx += g * ((Load(x, r * c + j) - mean[r]) * rstd[r]);
      sum_g += g;
    }
    partial[idx] = sum_gx;
    partial[total + idx] = sum_g;
  }
}

template <typename S>
__global__ void ParamFinishKernel(const S* partial, S* grad_gamma, S* grad_beta, int64_t c,
                                  int64_t chunks) {
  for (int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; j < c;
       j += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    S sum_gx = 0, sum_g = 0;
    for (int64_t p = 0; p < chunks; ++p) {
      sum_gx += partial[p * c + j];
      sum_g += partial[chunks * c + p * c + j];
    }
    grad_gamma[j] += sum_gx;
    grad_beta[j] += sum_g;
  }
}

template <typename T, typename S = AccT<T>>
__global__ void GradInputKernel(const T* grad_y, const T* x, const S* gamma, const S* mean,
                                const S* rstd, T* grad_x, int64_t rows, int64_t c) {
  const int lane = threadIdx.x % 32;
  const S inv_c = S(1) / static_cast<S>(c);
  for (int64_t r = blockIdx.x * static_cast<int64_t>(kWarpsPerBlock) + threadIdx.x / 32; r < rows;
       r += static_cast<int64_t>(gridDim.x) * kWarpsPerBlock) {
    const T* xr = x + r * c;
    const T* gr = grad_y + r * c;
    const S m = mean[r], rs = rstd[r];
    S sum_g = 0, sum_gx = 0;
    for (int64_t j = lane; j < c; j += 32) {
      const S g = Load(gr, j) * gamma[j];
      sum_g += g;
      sum_gx += g * ((Load(xr, j) - m) * rs);
    }
    const S mean_g = cuda::WarpSum(sum_g) * inv_c, mean_gx = cuda::WarpSum(sum_gx) * inv_c;
    T* gxr = grad_x + r * c;
    for (int64_t j = lane; j < c; j += 32) {
      const S xhat = (Load(xr, j) - m) * rs;
      Store(gxr, j, rs * (Load(gr, j) * gamma[j] - mean_g - xhat * mean_gx));
    }
  }
}

}  // namespace

void LayerNormForwardCuda(const LayerNormArgs& args, ConstTensorView x, ConstTensorView gamma,
                          ConstTensorView beta, TensorView y, TensorView mean, TensorView rstd,
                          Stream stream) {
  const int64_t rows = MatrixRows(x.shape()), c = MatrixCols(x.shape());
  if (rows == 0) return;
  LOOM_OPS_CUDA_SWITCH("LayerNormForward", x.dtype(), T, {
    using S = AccT<T>;
    ForwardKernel<T><<<RowGrid(rows), cuda::kBlock, 0, AsCudaStream(stream)>>>(
        x.data<T>(), gamma.data<S>(), beta.data<S>(), y.data<T>(), mean.data<S>(), rstd.data<S>(),
        rows, c, static_cast<S>(args.epsilon));
  });
  LOOM_CUDA_CHECK_LAUNCH();
}

void LayerNormBackwardCuda(ConstTensorView grad_y, ConstTensorView x, ConstTensorView gamma,
                           ConstTensorView mean, ConstTensorView rstd, TensorView grad_x,
                           TensorView grad_gamma, TensorView grad_beta, Stream stream) {
  const int64_t rows = MatrixRows(x.shape()), c = MatrixCols(x.shape());
  if (rows == 0) return;
  cudaStream_t s = AsCudaStream(stream);
  const int64_t chunks = cuda::ColumnChunks(1, rows, c);
  LOOM_OPS_CUDA_SWITCH("LayerNormBackward", x.dtype(), T, {
    using S = AccT<T>;
    S* partial = static_cast<S*>(cuda::Scratch(stream, sizeof(S) * 2 * chunks * c));
    ParamPartialKernel<T><<<cuda::GridFor(chunks * c), cuda::kBlock, 0, s>>>(
        grad_y.data<T>(), x.data<T>(), mean.data<S>(), rstd.data<S>(), partial, rows, c, chunks);
    ParamFinishKernel<S><<<cuda::GridFor(c), cuda::kBlock, 0, s>>>(partial, grad_gamma.data<S>(),
                                                                   grad_beta.data<S>(), c, chunks);
    GradInputKernel<T><<<RowGrid(rows), cuda::kBlock, 0, s>>>(
        grad_y.data<T>(), x.data<T>(), gamma.data<S>(), mean.data<S>(), rstd.data<S>(),
        grad_x.data<T>(), rows, c);
  });
  LOOM_CUDA_CHECK_LAUNCH();
}

}  // namespace loom::ops::internal
