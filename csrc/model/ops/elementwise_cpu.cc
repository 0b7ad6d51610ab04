// CPU element-wise arithmetic: one OpenMP-parallel, vectorizable pass.
#include "csrc/model/ops/elementwise.h"

#include "csrc/model/ops/cpu_util.h"
#include "csrc/model/ops/op_util.h"

namespace loom::ops::internal {
namespace {

template <typename T>
void AxpbyT(T alpha, const T* a, T beta, const T* b, T* out, int64_t n) {
  if (beta == T(0)) {  // Scale: b is not read (out may alias it, and NaN must not leak)
#pragma omp parallel for simd schedule(static) if (n > cpu::kParallelGrain)
    for (int64_t i = 0; i < n; ++i) out[i] = alpha * a[i];
  } else if (alpha == T(1) && beta == T(1)) {
#pragma omp parallel for simd schedule(static) if (n > cpu::kParallelGrain)
    for (int64_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
  } else {
#pragma omp parallel for simd schedule(static) if (n > cpu::kParallelGrain)
    for (int64_t i = 0; i < n; ++i) out[i] = alpha * a[i] + beta * b[i];
  }
}

template <typename T>
void MulT(const T* a, const T* b, T* out, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n > cpu::kParallelGrain)
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] * b[i];
}

}  // namespace

void BinaryCpu(BinaryOp op, double alpha, ConstTensorView a, double beta, ConstTensorView b,
               TensorView out) {
  const int64_t n = out.numel();
  LOOM_OPS_CPU_SWITCH("Elementwise", a.dtype(), T, {
    if (op == BinaryOp::kMul) {
      MulT(a.data<T>(), b.data<T>(), out.data<T>(), n);
    } else {
      AxpbyT(static_cast<T>(alpha), a.data<T>(), static_cast<T>(beta), b.data<T>(), out.data<T>(),
             n);
    }
  });
}

}  // namespace loom::ops::internal
