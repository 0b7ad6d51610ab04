// CUDA twins of the Philox fills in rng.cc: same formulas, explicitly rounded operations.
#include "csrc/core/rng.h"

#include "csrc/core/cuda_check.cuh"
#include "csrc/core/philox.h"

namespace loom::internal {
namespace {

template <typename T>
__global__ void FillUniformKernel(T* out, int64_t n, uint64_t seed, uint64_t stream, double lo,
                                  double scale) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const double u = PhiloxUniform(seed, stream, static_cast<uint64_t>(i));
    out[i] = static_cast<T>(__dadd_rn(lo, __dmul_rn(scale, u)));
  }
}

template <typename T>
__global__ void FillNormalKernel(T* out, int64_t n, uint64_t seed, uint64_t stream, double mean,
                                 double std) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const double z = PhiloxNormal(seed, stream, static_cast<uint64_t>(i));
    out[i] = static_cast<T>(__dadd_rn(mean, __dmul_rn(std, z)));
  }
}

int GridFor(int64_t n) {
  const int64_t blocks = (n + 255) / 256;
  return static_cast<int>(blocks < 65536 ? (blocks > 0 ? blocks : 1) : 65536);
}

}  // namespace

void FillUniformCuda(TensorView out, uint64_t seed, uint64_t stream, double lo, double hi,
                     Stream cuda_stream) {
  const int64_t n = out.numel();
  if (n == 0) return;
  if (out.dtype() == DType::kF32) {
    FillUniformKernel<<<GridFor(n), 256, 0, AsCudaStream(cuda_stream)>>>(out.data<float>(), n, seed,
                                                                         stream, lo, hi - lo);
  } else {
    FillUniformKernel<<<GridFor(n), 256, 0, AsCudaStream(cuda_stream)>>>(out.data<double>(), n,
                                                                         seed, stream, lo, hi - lo);
  }
  LOOM_CUDA_CHECK_LAUNCH();
}

void FillNormalCuda(TensorView out, uint64_t seed, uint64_t stream, double mean, double std,
                    Stream cuda_stream) {
  const int64_t n = out.numel();
  if (n == 0) return;
  if (out.dtype() == DType::kF32) {
    FillNormalKernel<<<GridFor(n), 256, 0, AsCudaStream(cuda_stream)>>>(out.data<float>(), n, seed,
                                                                        stream, mean, std);
  } else {
    FillNormalKernel<<<GridFor(n), 256, 0, AsCudaStream(cuda_stream)>>>(out.data<double>(), n, seed,
                                                                        stream, mean, std);
  }
  LOOM_CUDA_CHECK_LAUNCH();
}

}  // namespace loom::internal
