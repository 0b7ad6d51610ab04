// CUDA element-wise arithmetic: grid-stride kernels, fp32 math for f32/bf16.
#include "csrc/model/ops/elementwise.h"

#include "csrc/model/ops/cuda_util.cuh"

namespace loom::ops::internal {
namespace {

using cuda::AccT;
using cuda::Load;
using cuda::Store;

// kMode: 0 = alpha·a (b unread), 1 = a + b, 2 = alpha·a + beta·b, 3 = a ⊙ b.
template <int kMode, typename T>
__global__ void BinaryKernel(AccT<T> alpha, const T* a, AccT<T> beta, const T* b, T* out,
                             int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const AccT<T> x = Load(a, i);
    AccT<T> r;
    if constexpr (kMode == 0) {
      r = alpha * x;
    } else if constexpr (kMode == 1) {
      r = x + Load(b, i);
    } else if constexpr (kMode == 2) {
      r = alpha * x + beta * Load(b, i);
    } else {
      r = x * Load(b, i);
    }
    Store(out, i, r);
  }
}

}  // namespace

void BinaryCuda(BinaryOp op, double alpha, ConstTensorView a, double beta, ConstTensorView b,
                TensorView out, Stream stream) {
  const int64_t n = out.numel();
  if (n == 0) return;
  const int grid = cuda::GridFor(n);
  cudaStream_t s = AsCudaStream(stream);
  LOOM_OPS_CUDA_SWITCH("Elementwise", a.dtype(), T, {
    const AccT<T> al = static_cast<AccT<T>>(alpha), be = static_cast<AccT<T>>(beta);
    const T* pa = a.data<T>();
    const T* pb = b.data<T>();
    T* po = out.data<T>();
    if (op == BinaryOp::kMul) {
      BinaryKernel<3, T><<<grid, cuda::kBlock, 0, s>>>(al, pa, be, pb, po, n);
    } else if (beta == 0.0) {
      BinaryKernel<0, T><<<grid, cuda::kBlock, 0, s>>>(al, pa, be, pb, po, n);
    } else if (alpha == 1.0 && beta == 1.0) {
      BinaryKernel<1, T><<<grid, cuda::kBlock, 0, s>>>(al, pa, be, pb, po, n);
    } else {
      BinaryKernel<2, T><<<grid, cuda::kBlock, 0, s>>>(al, pa, be, pb, po, n);
    }
  });
  LOOM_CUDA_CHECK_LAUNCH();
}

}  // namespace loom::ops::internal
