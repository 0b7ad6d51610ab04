// CUDA dropout: one thread per Philox block (four elements), the same bits as the CPU.
#include "csrc/model/ops/dropout.h"

#include "csrc/core/philox.h"
#include "csrc/model/ops/cuda_util.cuh"

namespace loom::ops::internal {
namespace {

using cuda::AccT;
using cuda::Load;
using cuda::Store;

template <typename T>
__global__ void DropoutKernel(const T* x, T* y, int64_t n, uint64_t seed, uint64_t stream, float p,
                              AccT<T> scale) {
  const int64_t blocks = (n + 3) / 4;
  for (int64_t b = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; b < blocks;
       b += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const Philox4x32Result r = PhiloxBlock(seed, stream, static_cast<uint64_t>(b));
    for (int lane = 0; lane < 4 && 4 * b + lane < n; ++lane) {
      const int64_t i = 4 * b + lane;
      const bool keep = !(UintToUniform(r.v[lane]) < p);
      Store(y, i, keep ? Load(x, i) * scale : AccT<T>(0));
    }
  }
}

__global__ void MaskKernel(uint8_t* keep, int64_t n, uint64_t seed, uint64_t stream, float p) {
  const int64_t blocks = (n + 3) / 4;
  for (int64_t b = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; b < blocks;
       b += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const Philox4x32Result r = PhiloxBlock(seed, stream, static_cast<uint64_t>(b));
    for (int lane = 0; lane < 4 && 4 * b + lane < n; ++lane) {
      keep[4 * b + lane] = UintToUniform(r.v[lane]) < p ? 0 : 1;
    }
  }
}

}  // namespace

void DropoutCuda(const DropoutArgs& args, ConstTensorView x, TensorView y, Stream stream) {
  const int64_t n = x.numel();
  if (n == 0) return;
  if (args.p == 0.0f) {
    if (x.raw() != y.raw()) {
      LOOM_CUDA_CHECK(cudaMemcpyAsync(y.raw(), x.raw(), static_cast<size_t>(x.nbytes()),
                                      cudaMemcpyDeviceToDevice, AsCudaStream(stream)));
    }
    return;
  }
  const double scale = 1.0 / (1.0 - static_cast<double>(args.p));
  LOOM_OPS_CUDA_SWITCH("Dropout", x.dtype(), T, {
    DropoutKernel<T><<<cuda::GridFor((n + 3) / 4), cuda::kBlock, 0, AsCudaStream(stream)>>>(
        x.data<T>(), y.data<T>(), n, args.seed, args.stream, args.p, static_cast<AccT<T>>(scale));
  });
  LOOM_CUDA_CHECK_LAUNCH();
}

void DropoutMaskCuda(const DropoutArgs& args, TensorView keep, Stream stream) {
  const int64_t n = keep.numel();
  if (n == 0) return;
  MaskKernel<<<cuda::GridFor((n + 3) / 4), cuda::kBlock, 0, AsCudaStream(stream)>>>(
      keep.data<uint8_t>(), n, args.seed, args.stream, args.p);
  LOOM_CUDA_CHECK_LAUNCH();
}

}  // namespace loom::ops::internal
