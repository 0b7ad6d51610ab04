// CUDA activations: grid-stride element-wise kernels, fp32 math for f32/bf16.
#include "csrc/model/ops/activation.h"

#include "csrc/model/ops/activation_math.h"
#include "csrc/model/ops/cuda_util.cuh"

namespace loom::ops::internal {
namespace {

using cuda::AccT;
using cuda::Load;
using cuda::Store;

template <Activation kAct, typename T>
__global__ void ForwardKernel(const T* x, T* y, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    Store(y, i, math::ActForward<kAct>(Load(x, i)));
  }
}

template <Activation kAct, bool kFromOutput, typename T>
__global__ void BackwardKernel(const T* grad_y, const T* saved, T* grad_x, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const AccT<T> s = Load(saved, i);
    AccT<T> d;
    if constexpr (kFromOutput) {
      d = math::ActGradFromOutput<kAct>(s);
    } else {
      d = math::ActGradFromInput<kAct>(s);
    }
    Store(grad_x, i, Load(grad_y, i) * d);
  }
}

// Picks the output- or input-based kernel; silu has only the input-based one (the branch is
// discarded at compile time, so BackwardKernel<kSilu, true> is never named).
template <Activation kAct, typename T>
void LaunchBackward(bool from_output, const T* grad_y, const T* saved, T* grad_x, int64_t n,
                    cudaStream_t stream) {
  const int grid = cuda::GridFor(n);
  if constexpr (kAct == Activation::kSilu) {
    CHECK(!from_output) << "ActivationBackward: silu needs the saved input";
    BackwardKernel<kAct, false, T><<<grid, cuda::kBlock, 0, stream>>>(grad_y, saved, grad_x, n);
  } else {
    if (from_output) {
      BackwardKernel<kAct, true, T><<<grid, cuda::kBlock, 0, stream>>>(grad_y, saved, grad_x, n);
    } else {
      BackwardKernel<kAct, false, T><<<grid, cuda::kBlock, 0, stream>>>(grad_y, saved, grad_x, n);
    }
  }
}

}  // namespace

void ActivationForwardCuda(Activation act, ConstTensorView x, TensorView y, Stream stream) {
  const int64_t n = x.numel();
  if (n == 0) return;
  LOOM_OPS_CUDA_SWITCH("ActivationForward", x.dtype(), T, {
    LOOM_OPS_ACTIVATION_SWITCH(act, kAct, {
      ForwardKernel<kAct, T><<<cuda::GridFor(n), cuda::kBlock, 0, AsCudaStream(stream)>>>(
          x.data<T>(), y.data<T>(), n);
    });
  });
  LOOM_CUDA_CHECK_LAUNCH();
}

void ActivationBackwardCuda(Activation act, ActivationSaved saved, ConstTensorView grad_y,
                            ConstTensorView saved_tensor, TensorView grad_x, Stream stream) {
  const int64_t n = grad_y.numel();
  if (n == 0) return;
  LOOM_OPS_CUDA_SWITCH("ActivationBackward", grad_y.dtype(), T, {
    LOOM_OPS_ACTIVATION_SWITCH(act, kAct, {
      LaunchBackward<kAct, T>(saved == ActivationSaved::kOutput, grad_y.data<T>(),
                              saved_tensor.data<T>(), grad_x.data<T>(), n, AsCudaStream(stream));
    });
  });
  LOOM_CUDA_CHECK_LAUNCH();
}

}  // namespace loom::ops::internal
