#include "csrc/core/rng.h"

#include "csrc/core/dispatch.h"
#include "csrc/core/philox.h"

namespace loom {

void FillUniform(const ExecContext& ctx, TensorView out, uint64_t seed, uint64_t stream, double lo,
                 double hi) {
  CHECK(out.dtype() == DType::kF32 || out.dtype() == DType::kF64)
      << "FillUniform: " << out.spec().ToString();
  LOOM_DISPATCH(ctx, FillUniform, out, seed, stream, lo, hi);
}

void FillNormal(const ExecContext& ctx, TensorView out, uint64_t seed, uint64_t stream, double mean,
                double std) {
  CHECK(out.dtype() == DType::kF32 || out.dtype() == DType::kF64)
      << "FillNormal: " << out.spec().ToString();
  LOOM_DISPATCH(ctx, FillNormal, out, seed, stream, mean, std);
}

namespace internal {

// The affine maps use the same correctly rounded double operations as the CUDA kernels.
void FillUniformCpu(TensorView out, uint64_t seed, uint64_t stream, double lo, double hi) {
  const int64_t n = out.numel();
  const double scale = hi - lo;
  if (out.dtype() == DType::kF32) {
    float* p = out.data<float>();
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      p[i] = static_cast<float>(lo + scale * PhiloxUniform(seed, stream, static_cast<uint64_t>(i)));
    }
  } else {
    double* p = out.data<double>();
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      p[i] = lo + scale * PhiloxUniform(seed, stream, static_cast<uint64_t>(i));
    }
  }
}

void FillNormalCpu(TensorView out, uint64_t seed, uint64_t stream, double mean, double std) {
  const int64_t n = out.numel();
  if (out.dtype() == DType::kF32) {
    float* p = out.data<float>();
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      p[i] = static_cast<float>(mean + std * PhiloxNormal(seed, stream, static_cast<uint64_t>(i)));
    }
  } else {
    double* p = out.data<double>();
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      p[i] = mean + std * PhiloxNormal(seed, stream, static_cast<uint64_t>(i));
    }
  }
}

}  // namespace internal
}  // namespace loom
