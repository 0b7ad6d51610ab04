// CPU reductions. Every sum runs in double in an order fixed by the shapes alone.
#include "csrc/model/ops/reduce.h"

#include <cstring>

#include "csrc/model/ops/cpu_util.h"
#include "csrc/model/ops/op_util.h"

namespace loom::ops::internal {
namespace {

template <typename T>
void Put(T* dst, double sum, bool accumulate) {
  *dst = accumulate ? static_cast<T>(static_cast<double>(*dst) + sum) : static_cast<T>(sum);
}

template <typename T>
void SumDimT(int64_t outer, int64_t n, int64_t inner, bool accumulate, const T* x, T* y) {
  if (inner == 1) {  // contiguous rows of n
#pragma omp parallel for schedule(static) if (outer * n > cpu::kParallelGrain)
    for (int64_t o = 0; o < outer; ++o) {
      const T* row = x + o * n;
      double sum = 0.0;
#pragma omp simd reduction(+ : sum)
      for (int64_t k = 0; k < n; ++k) sum += static_cast<double>(row[k]);
      Put(y + o, sum, accumulate);
    }
    return;
  }
  if (outer > 1 && n * inner <= cpu::kParallelGrain) {  // many small blocks: one per thread
#pragma omp parallel for schedule(static) if (outer * n * inner > cpu::kParallelGrain)
    for (int64_t o = 0; o < outer; ++o) {
      const T* block = x + o * n * inner;
      for (int64_t i = 0; i < inner; ++i) {
        double sum = 0.0;
        for (int64_t k = 0; k < n; ++k) sum += static_cast<double>(block[k * inner + i]);
        Put(y + o * inner + i, sum, accumulate);
      }
    }
    return;
  }
  for (int64_t o = 0; o < outer; ++o) {  // a (n, inner) column reduction per o, in parallel
    const double* sums = cpu::ColumnSums(x + o * n * inner, n, inner);
    T* out = y + o * inner;
    for (int64_t i = 0; i < inner; ++i) Put(out + i, sums[i], accumulate);
  }
}

template <typename T>
void BroadcastT(int64_t outer, int64_t n, int64_t inner, const T* grad_y, T* grad_x) {
#pragma omp parallel for schedule(static) if (outer * n * inner > cpu::kParallelGrain)
  for (int64_t r = 0; r < outer * n; ++r) {
    const int64_t o = r / n;
    std::memcpy(grad_x + r * inner, grad_y + o * inner, sizeof(T) * inner);
  }
}

int64_t Count(const uint8_t* mask, int64_t t) {
  int64_t count = 0;
  for (int64_t i = 0; i < t; ++i) count += mask[i] != 0;
  return count;
}

template <typename T>
void MaskedMeanT(const T* x, const uint8_t* mask, T* y, int64_t b, int64_t t, int64_t d) {
#pragma omp parallel for schedule(static) if (b * t * d > cpu::kParallelGrain)
  for (int64_t i = 0; i < b; ++i) {
    double* acc = cpu::ScratchDoubles(static_cast<size_t>(d));  // this thread's buffer
    std::memset(acc, 0, sizeof(double) * d);
    const uint8_t* m = mask + i * t;
    const int64_t count = Count(m, t);
    for (int64_t j = 0; j < t; ++j) {
      if (!m[j]) continue;
      const T* row = x + (i * t + j) * d;
#pragma omp simd
      for (int64_t e = 0; e < d; ++e) acc[e] += static_cast<double>(row[e]);
    }
    const double denom = static_cast<double>(count > 0 ? count : 1);
    T* out = y + i * d;
    for (int64_t e = 0; e < d; ++e) out[e] = static_cast<T>(acc[e] / denom);
  }
}

template <typename T>
void MaskedMeanBackwardT(const T* grad_y, const uint8_t* mask, T* grad_x, int64_t b, int64_t t,
                         int64_t d) {
#pragma omp parallel for schedule(static) if (b * t * d > cpu::kParallelGrain)
  for (int64_t i = 0; i < b; ++i) {
    const uint8_t* m = mask + i * t;
    const int64_t count = Count(m, t);
    const double denom = static_cast<double>(count > 0 ? count : 1);
    const T* g = grad_y + i * d;
    for (int64_t j = 0; j < t; ++j) {
      T* out = grad_x + (i * t + j) * d;
      if (!m[j]) {
        std::memset(out, 0, sizeof(T) * d);
        continue;
      }
      for (int64_t e = 0; e < d; ++e) out[e] = static_cast<T>(static_cast<double>(g[e]) / denom);
    }
  }
}

}  // namespace

void SumDimCpu(int64_t outer, int64_t n, int64_t inner, bool accumulate, ConstTensorView x,
               TensorView y) {
  LOOM_OPS_CPU_SWITCH("SumDim", x.dtype(), T,
                      SumDimT(outer, n, inner, accumulate, x.data<T>(), y.data<T>()));
}

void SumDimBackwardCpu(int64_t outer, int64_t n, int64_t inner, ConstTensorView grad_y,
                       TensorView grad_x) {
  LOOM_OPS_CPU_SWITCH("SumDimBackward", grad_y.dtype(), T,
                      BroadcastT(outer, n, inner, grad_y.data<T>(), grad_x.data<T>()));
}

void MaskedMeanTokensCpu(ConstTensorView x, ConstTensorView mask, TensorView y) {
  LOOM_OPS_CPU_SWITCH(
      "MaskedMeanTokens", x.dtype(), T,
      MaskedMeanT(x.data<T>(), mask.data<uint8_t>(), y.data<T>(), x.dim(0), x.dim(1), x.dim(2)));
}

void MaskedMeanTokensBackwardCpu(ConstTensorView grad_y, ConstTensorView mask, TensorView grad_x) {
  LOOM_OPS_CPU_SWITCH("MaskedMeanTokensBackward", grad_y.dtype(), T,
                      MaskedMeanBackwardT(grad_y.data<T>(), mask.data<uint8_t>(), grad_x.data<T>(),
                                          grad_x.dim(0), grad_x.dim(1), grad_x.dim(2)));
}

}  // namespace loom::ops::internal
