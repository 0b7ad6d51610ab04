// CUDA BCE-with-logits: the loss in one block (B is a local batch: thousands), each thread
// summing a strided slice in double, then a fixed-order block reduction; the gradient is an
// element-wise kernel.
#include "csrc/model/ops/bce_loss.h"

#include "csrc/model/ops/activation_math.h"
#include "csrc/model/ops/cuda_util.cuh"

namespace loom::ops::internal {
namespace {

template <typename T>
__global__ void LossKernel(const T* z, const T* y, const T* w, T* loss, int64_t b) {
  __shared__ double shared[cuda::kBlock / 32];
  double s = 0.0;
  for (int64_t i = threadIdx.x; i < b; i += blockDim.x) {
    const T l = math::Softplus(z[i]) - y[i] * z[i];
    s += static_cast<double>(w ? w[i] * l : l);
  }
  const double total = cuda::BlockSum<cuda::kBlock>(s, shared);
  if (threadIdx.x == 0) *loss = static_cast<T>(b > 0 ? total / static_cast<double>(b) : 0.0);
}

template <typename T>
__global__ void GradKernel(const T* z, const T* y, const T* w, T* grad, int64_t b, T scale) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < b;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const T g = (math::Sigmoid(z[i]) - y[i]) * scale;
    grad[i] = w ? w[i] * g : g;
  }
}

}  // namespace

void BceWithLogitsForwardCuda(ConstTensorView logits, ConstTensorView labels,
                              ConstTensorView weights, TensorView loss, Stream stream) {
  const int64_t b = logits.numel();
  switch (logits.dtype()) {
    case DType::kF32:
      LossKernel<float><<<1, cuda::kBlock, 0, AsCudaStream(stream)>>>(
          logits.data<float>(), labels.data<float>(),
          weights.empty() ? nullptr : weights.data<float>(), loss.data<float>(), b);
      break;
    case DType::kF64:
      LossKernel<double><<<1, cuda::kBlock, 0, AsCudaStream(stream)>>>(
          logits.data<double>(), labels.data<double>(),
          weights.empty() ? nullptr : weights.data<double>(), loss.data<double>(), b);
      break;
    default:
      LOG(FATAL) << "BceWithLogitsForward: no CUDA kernel for " << DTypeName(logits.dtype());
  }
  LOOM_CUDA_CHECK_LAUNCH();
}

void BceWithLogitsBackwardCuda(double grad_scale, ConstTensorView logits, ConstTensorView labels,
                               ConstTensorView weights, TensorView grad_logits, Stream stream) {
  const int64_t b = logits.numel();
  if (b == 0) return;
  const double scale = grad_scale / static_cast<double>(b);
  const int grid = cuda::GridFor(b);
  switch (logits.dtype()) {
    case DType::kF32:
      GradKernel<float><<<grid, cuda::kBlock, 0, AsCudaStream(stream)>>>(
          logits.data<float>(), labels.data<float>(),
          weights.empty() ? nullptr : weights.data<float>(), grad_logits.data<float>(), b,
          static_cast<float>(scale));
      break;
    case DType::kF64:
      GradKernel<double><<<grid, cuda::kBlock, 0, AsCudaStream(stream)>>>(
          logits.data<double>(), labels.data<double>(),
          weights.empty() ? nullptr : weights.data<double>(), grad_logits.data<double>(), b, scale);
      break;
    default:
      LOG(FATAL) << "BceWithLogitsBackward: no CUDA kernel for " << DTypeName(logits.dtype());
  }
  LOOM_CUDA_CHECK_LAUNCH();
}

}  // namespace loom::ops::internal
