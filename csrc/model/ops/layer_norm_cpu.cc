// CPU layer norm. Forward: one row per iteration, OpenMP over rows, statistics in double.
// Backward: rows are processed in fixed chunks (cpu_util.h); a chunk computes grad_x of its
// rows and accumulates its own partial gamma/beta sums, so x and grad_y are read once.
#include "csrc/model/ops/layer_norm.h"

#include <cmath>

#include "csrc/model/ops/cpu_util.h"
#include "csrc/model/ops/op_util.h"

namespace loom::ops::internal {
namespace {

template <typename T>
void ForwardT(const T* x, const T* gamma, const T* beta, T* y, T* mean_out, T* rstd_out,
              int64_t rows, int64_t c, double eps) {
#pragma omp parallel for schedule(static) if (rows * c > cpu::kParallelGrain)
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * c;
    double sum = 0.0;
#pragma omp simd reduction(+ : sum)
    for (int64_t j = 0; j < c; ++j) sum += static_cast<double>(xr[j]);
    const double mean = sum / static_cast<double>(c);
    double sq = 0.0;
#pragma omp simd reduction(+ : sq)
    for (int64_t j = 0; j < c; ++j) {
      const double d = static_cast<double>(xr[j]) - mean;
      sq += d * d;
    }
    const double rstd = 1.0 / std::sqrt(sq / static_cast<double>(c) + eps);
    const T m = static_cast<T>(mean), rs = static_cast<T>(rstd);
    T* yr = y + r * c;
#pragma omp simd
    for (int64_t j = 0; j < c; ++j) yr[j] = (xr[j] - m) * rs * gamma[j] + beta[j];
    mean_out[r] = m;
    rstd_out[r] = rs;
  }
}

template <typename T>
void BackwardT(const T* grad_y, const T* x, const T* gamma, const T* mean, const T* rstd, T* grad_x,
               T* grad_gamma, T* grad_beta, int64_t rows, int64_t c) {
  const T inv_c = static_cast<T>(1.0 / static_cast<double>(c));
  const double* sums =
      cpu::ChunkedColumnReduce(rows, 2 * c, [&](int64_t r0, int64_t r1, double* part) {
        double* part_gamma = part;
        double* part_beta = part + c;
        for (int64_t r = r0; r < r1; ++r) {
          const T* xr = x + r * c;
          const T* gr = grad_y + r * c;
          const T m = mean[r], rs = rstd[r];
          double sum_g = 0.0, sum_gx = 0.0;  // Σ g, Σ g·x̂ with g = grad_y·gamma
#pragma omp simd reduction(+ : sum_g, sum_gx)
          for (int64_t j = 0; j < c; ++j) {
            const T xhat = (xr[j] - m) * rs;
            const T g = gr[j] * gamma[j];
            sum_g += static_cast<double>(g);
            sum_gx += static_cast<double>(g * xhat);
            part_gamma[j] += static_cast<double>(gr[j] * xhat);
            part_beta[j] += static_cast<double>(gr[j]);
          }
          const T mean_g = static_cast<T>(sum_g) * inv_c, mean_gx = static_cast<T>(sum_gx) * inv_c;
          T* gxr = grad_x + r * c;
#pragma omp simd
          for (int64_t j = 0; j < c; ++j) {
            const T xhat = (xr[j] - m) * rs;
            gxr[j] = rs * (gr[j] * gamma[j] - mean_g - xhat * mean_gx);
          }
        }
      });
  for (int64_t j = 0; j < c; ++j) {
    grad_gamma[j] = static_cast<T>(static_cast<double>(grad_gamma[j]) + sums[j]);
    grad_beta[j] = static_cast<T>(static_cast<double>(grad_beta[j]) + sums[c + j]);
  }
}

}  // namespace

void LayerNormForwardCpu(const LayerNormArgs& args, ConstTensorView x, ConstTensorView gamma,
                         ConstTensorView beta, TensorView y, TensorView mean, TensorView rstd) {
  const int64_t rows = MatrixRows(x.shape()), c = MatrixCols(x.shape());
  LOOM_OPS_CPU_SWITCH("LayerNormForward", x.dtype(), T,
                      ForwardT(x.data<T>(), gamma.data<T>(), beta.data<T>(), y.data<T>(),
                               mean.data<T>(), rstd.data<T>(), rows, c, args.epsilon));
}

void LayerNormBackwardCpu(ConstTensorView grad_y, ConstTensorView x, ConstTensorView gamma,
                          ConstTensorView mean, ConstTensorView rstd, TensorView grad_x,
                          TensorView grad_gamma, TensorView grad_beta) {
  const int64_t rows = MatrixRows(x.shape()), c = MatrixCols(x.shape());
  LOOM_OPS_CPU_SWITCH(
      "LayerNormBackward", x.dtype(), T,
      BackwardT(grad_y.data<T>(), x.data<T>(), gamma.data<T>(), mean.data<T>(), rstd.data<T>(),
                grad_x.data<T>(), grad_gamma.data<T>(), grad_beta.data<T>(), rows, c));
}

}  // namespace loom::ops::internal
