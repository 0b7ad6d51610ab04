// CPU activations: one pass, OpenMP over elements, the derivative chosen at compile time.
#include "csrc/model/ops/activation.h"

#include "csrc/model/ops/activation_math.h"
#include "csrc/model/ops/cpu_util.h"
#include "csrc/model/ops/op_util.h"

namespace loom::ops::internal {
namespace {

template <Activation kAct, typename T>
void Forward(const T* x, T* y, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n > cpu::kParallelGrain)
  for (int64_t i = 0; i < n; ++i) y[i] = math::ActForward<kAct>(x[i]);
}

template <Activation kAct, bool kFromOutput, typename T>
void Backward(const T* grad_y, const T* saved, T* grad_x, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n > cpu::kParallelGrain)
  for (int64_t i = 0; i < n; ++i) {
    T d;
    if constexpr (kFromOutput) {
      d = math::ActGradFromOutput<kAct>(saved[i]);
    } else {
      d = math::ActGradFromInput<kAct>(saved[i]);
    }
    grad_x[i] = grad_y[i] * d;
  }
}

template <Activation kAct, typename T>
void BackwardDispatch(bool from_output, const T* grad_y, const T* saved, T* grad_x, int64_t n) {
  if constexpr (kAct == Activation::kSilu) {
    CHECK(!from_output) << "ActivationBackward: silu needs the saved input";
    Backward<kAct, false>(grad_y, saved, grad_x, n);
  } else {
    if (from_output) {
      Backward<kAct, true>(grad_y, saved, grad_x, n);
    } else {
      Backward<kAct, false>(grad_y, saved, grad_x, n);
    }
  }
}

}  // namespace

void ActivationForwardCpu(Activation act, ConstTensorView x, TensorView y) {
  const int64_t n = x.numel();
  LOOM_OPS_CPU_SWITCH("ActivationForward", x.dtype(), T, {
    LOOM_OPS_ACTIVATION_SWITCH(act, kAct, Forward<kAct, T>(x.data<T>(), y.data<T>(), n));
  });
}

void ActivationBackwardCpu(Activation act, ActivationSaved saved, ConstTensorView grad_y,
                           ConstTensorView saved_tensor, TensorView grad_x) {
  const int64_t n = grad_y.numel();
  LOOM_OPS_CPU_SWITCH("ActivationBackward", grad_y.dtype(), T, {
    LOOM_OPS_ACTIVATION_SWITCH(act, kAct, {
      BackwardDispatch<kAct, T>(saved == ActivationSaved::kOutput, grad_y.data<T>(),
                                saved_tensor.data<T>(), grad_x.data<T>(), n);
    });
  });
}

}  // namespace loom::ops::internal
