// CPU Linear forward: the bias is broadcast into the output rows first, so BLAS adds the
// product onto it (beta = 1) and no separate bias pass is needed; the activation is one
// more element-wise pass (skipped for identity).
#include "csrc/model/ops/linear.h"

#include <cstring>

#include "csrc/model/ops/activation.h"
#include "csrc/model/ops/cpu_util.h"
#include "csrc/model/ops/gemm.h"
#include "csrc/model/ops/op_util.h"

namespace loom::ops::internal {
namespace {

template <typename T>
void BroadcastRows(const T* bias, T* out, int64_t rows, int64_t n) {
#pragma omp parallel for schedule(static) if (rows * n > cpu::kParallelGrain)
  for (int64_t r = 0; r < rows; ++r) std::memcpy(out + r * n, bias, sizeof(T) * n);
}

}  // namespace

void LinearForwardCpu(const LinearArgs& args, ConstTensorView x, ConstTensorView weight,
                      ConstTensorView bias, TensorView y, TensorView pre) {
  const int64_t rows = MatrixRows(x.shape()), k = MatrixCols(x.shape()), n = weight.dim(0);
  TensorView z = pre.empty() ? y : pre;
  GemmPlan plan;
  plan.trans_b = true;  // x (R, K) · Wᵀ (K, N)
  plan.m = rows;
  plan.n = n;
  plan.k = k;
  plan.lda = k;
  plan.ldb = k;
  plan.ldc = n;
  plan.beta = bias.empty() ? 0.0 : 1.0;
  if (!bias.empty()) {
    LOOM_OPS_CPU_SWITCH("LinearForward", x.dtype(), T,
                        BroadcastRows(bias.data<T>(), z.data<T>(), rows, n));
  }
  GemmCpu(plan, x, weight, z);
  if (args.activation != Activation::kIdentity) {
    ActivationForwardCpu(args.activation, z, y);
  } else if (z.raw() != y.raw()) {
    std::memcpy(y.raw(), z.raw(), static_cast<size_t>(y.nbytes()));
  }
}

}  // namespace loom::ops::internal
