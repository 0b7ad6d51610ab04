// CPU softmax: OpenMP over rows; per row, max over the valid keys, exponentials in the
// element type, the normalizing sum in double.
#include "csrc/model/ops/softmax.h"

#include <cmath>
#include <limits>

#include "csrc/model/ops/activation_math.h"
#include "csrc/model/ops/cpu_util.h"
#include "csrc/model/ops/op_util.h"

namespace loom::ops::internal {
namespace {

// One row, branch-free so every pass vectorizes. Masked keys get z = −inf, whose exponential
// is exactly 0. kAdd / kKeep select the mask terms at compile time.
template <bool kAdd, bool kKeep, typename T>
void Row(const T* xr, const T* ar, const uint8_t* kr, T* yr, int64_t c, T scale) {
  const T neg_inf = -std::numeric_limits<T>::infinity();
  // z in y (y may alias x: element j is read before it is written).
  T max = neg_inf;
#pragma omp simd reduction(max : max)
  for (int64_t j = 0; j < c; ++j) {
    T z = scale * xr[j];
    if constexpr (kAdd) z += ar[j];
    if constexpr (kKeep) z = kr[j] ? z : neg_inf;
    yr[j] = z;
    max = z > max ? z : max;
  }
  if (max == neg_inf) {  // no valid key
    for (int64_t j = 0; j < c; ++j) yr[j] = T(0);
    return;
  }
  double sum = 0.0;
#pragma omp simd reduction(+ : sum)
  for (int64_t j = 0; j < c; ++j) {
    const T e = math::Exp(yr[j] - max);  // exp(−inf) = 0
    yr[j] = e;
    sum += static_cast<double>(e);
  }
  const T inv = static_cast<T>(1.0 / sum);
#pragma omp simd
  for (int64_t j = 0; j < c; ++j) yr[j] *= inv;
}

template <bool kAdd, bool kKeep, typename T>
void Rows(const T* x, const T* add, int64_t add_rows, const uint8_t* keep, int64_t rows_per_keep,
          T* y, int64_t rows, int64_t c, T scale) {
#pragma omp parallel for schedule(static) if (rows * c > cpu::kParallelGrain)
  for (int64_t r = 0; r < rows; ++r) {
    Row<kAdd, kKeep>(x + r * c, kAdd ? add + (r % add_rows) * c : nullptr,
                     kKeep ? keep + (r / rows_per_keep) * c : nullptr, y + r * c, c, scale);
  }
}

template <typename T>
void ForwardT(const T* x, const T* add, int64_t add_rows, const uint8_t* keep,
              int64_t rows_per_keep, T* y, int64_t rows, int64_t c, T scale) {
  if (add && keep) {
    Rows<true, true>(x, add, add_rows, keep, rows_per_keep, y, rows, c, scale);
  } else if (add) {
    Rows<true, false>(x, add, add_rows, keep, rows_per_keep, y, rows, c, scale);
  } else if (keep) {
    Rows<false, true>(x, add, add_rows, keep, rows_per_keep, y, rows, c, scale);
  } else {
    Rows<false, false>(x, add, add_rows, keep, rows_per_keep, y, rows, c, scale);
  }
}

template <typename T>
void BackwardT(const T* grad_y, const T* y, T* grad_x, int64_t rows, int64_t c, T scale) {
#pragma omp parallel for schedule(static) if (rows * c > cpu::kParallelGrain)
  for (int64_t r = 0; r < rows; ++r) {
    const T* gr = grad_y + r * c;
    const T* yr = y + r * c;
    double dot = 0.0;
#pragma omp simd reduction(+ : dot)
    for (int64_t j = 0; j < c; ++j) dot += static_cast<double>(gr[j]) * yr[j];
    const T d = static_cast<T>(dot);
    T* gxr = grad_x + r * c;
#pragma omp simd
    for (int64_t j = 0; j < c; ++j) gxr[j] = scale * yr[j] * (gr[j] - d);
  }
}

}  // namespace

void SoftmaxForwardCpu(const SoftmaxArgs& args, ConstTensorView x, ConstTensorView additive_mask,
                       ConstTensorView key_mask, TensorView y) {
  const int64_t rows = MatrixRows(x.shape()), c = MatrixCols(x.shape());
  const int64_t add_rows = additive_mask.empty() ? 1 : MatrixRows(additive_mask.shape());
  const int64_t keep_rows = key_mask.empty() ? 1 : MatrixRows(key_mask.shape());
  const uint8_t* keep = key_mask.empty() ? nullptr : key_mask.data<uint8_t>();
  LOOM_OPS_CPU_SWITCH("SoftmaxForward", x.dtype(), T, {
    const T* add = additive_mask.empty() ? nullptr : additive_mask.data<T>();
    ForwardT(x.data<T>(), add, add_rows, keep, rows / keep_rows, y.data<T>(), rows, c,
             static_cast<T>(args.scale));
  });
}

void SoftmaxBackwardCpu(const SoftmaxArgs& args, ConstTensorView grad_y, ConstTensorView y,
                        TensorView grad_x) {
  const int64_t rows = MatrixRows(y.shape()), c = MatrixCols(y.shape());
  LOOM_OPS_CPU_SWITCH("SoftmaxBackward", y.dtype(), T,
                      BackwardT(grad_y.data<T>(), y.data<T>(), grad_x.data<T>(), rows, c,
                                static_cast<T>(args.scale)));
}

}  // namespace loom::ops::internal
