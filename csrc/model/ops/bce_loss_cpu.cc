// CPU BCE-with-logits: per-sample terms in the element type, the batch sum in double over
// fixed chunks (cpu_util.h), so the loss does not depend on the thread count.
#include "csrc/model/ops/bce_loss.h"

#include "csrc/model/ops/activation_math.h"
#include "csrc/model/ops/cpu_util.h"
#include "csrc/model/ops/op_util.h"

namespace loom::ops::internal {
namespace {

template <typename T>
void ForwardT(const T* z, const T* y, const T* w, T* loss, int64_t b) {
  const double* sum = cpu::ChunkedColumnReduce(b, 1, [&](int64_t r0, int64_t r1, double* part) {
    double s = 0.0;
    for (int64_t i = r0; i < r1; ++i) {
      const T l = math::Softplus(z[i]) - y[i] * z[i];
      s += static_cast<double>(w ? w[i] * l : l);
    }
    part[0] = s;
  });
  *loss = static_cast<T>(b > 0 ? sum[0] / static_cast<double>(b) : 0.0);
}

template <typename T>
void BackwardT(double grad_scale, const T* z, const T* y, const T* w, T* grad, int64_t b) {
  const T scale = static_cast<T>(grad_scale / static_cast<double>(b > 0 ? b : 1));
#pragma omp parallel for simd schedule(static) if (b > cpu::kParallelGrain)
  for (int64_t i = 0; i < b; ++i) {
    const T g = (math::Sigmoid(z[i]) - y[i]) * scale;
    grad[i] = w ? w[i] * g : g;
  }
}

}  // namespace

void BceWithLogitsForwardCpu(ConstTensorView logits, ConstTensorView labels,
                             ConstTensorView weights, TensorView loss) {
  LOOM_OPS_CPU_SWITCH(
      "BceWithLogitsForward", logits.dtype(), T,
      ForwardT(logits.data<T>(), labels.data<T>(), weights.empty() ? nullptr : weights.data<T>(),
               loss.data<T>(), logits.numel()));
}

void BceWithLogitsBackwardCpu(double grad_scale, ConstTensorView logits, ConstTensorView labels,
                              ConstTensorView weights, TensorView grad_logits) {
  LOOM_OPS_CPU_SWITCH("BceWithLogitsBackward", logits.dtype(), T,
                      BackwardT(grad_scale, logits.data<T>(), labels.data<T>(),
                                weights.empty() ? nullptr : weights.data<T>(),
                                grad_logits.data<T>(), logits.numel()));
}

}  // namespace loom::ops::internal
