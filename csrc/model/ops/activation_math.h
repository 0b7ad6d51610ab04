// Scalar math shared by the CPU and CUDA backends (host and device): activations, their
// derivatives, a stable sigmoid and softplus. A is float or double. No CUDA header here.
#ifndef LOOM_MODEL_OPS_ACTIVATION_MATH_H_
#define LOOM_MODEL_OPS_ACTIVATION_MATH_H_

#include <math.h>

#include "csrc/core/macros.h"
#include "csrc/model/ops/activation.h"

namespace loom::ops::math {

LOOM_HOST_DEVICE LOOM_INLINE float Exp(float x) { return expf(x); }
LOOM_HOST_DEVICE LOOM_INLINE double Exp(double x) { return exp(x); }
LOOM_HOST_DEVICE LOOM_INLINE float Log1p(float x) { return log1pf(x); }
LOOM_HOST_DEVICE LOOM_INLINE double Log1p(double x) { return log1p(x); }
LOOM_HOST_DEVICE LOOM_INLINE float Tanh(float x) { return tanhf(x); }
LOOM_HOST_DEVICE LOOM_INLINE double Tanh(double x) { return tanh(x); }

// σ(x) = 1 / (1 + e^−x). Stable as written under IEEE arithmetic: for x << 0, e^−x overflows
// to +inf and σ = 1/inf = 0 (the exact value is below 1e-38 there), and otherwise both the
// sum and the quotient are correctly rounded, so the relative error is a few ulp for every x.
// Branch-free: no data-dependent branch (random signs would mispredict half the time).
template <typename A>
LOOM_HOST_DEVICE LOOM_INLINE A Sigmoid(A x) {
  return A(1) / (A(1) + Exp(-x));
}

// log(1 + e^x) = max(x, 0) + log1p(e^−|x|).
template <typename A>
LOOM_HOST_DEVICE LOOM_INLINE A Softplus(A x) {
  const A ax = x < A(0) ? -x : x;
  return (x > A(0) ? x : A(0)) + Log1p(Exp(-ax));
}

template <Activation kAct, typename A>
LOOM_HOST_DEVICE LOOM_INLINE A ActForward(A x) {
  if constexpr (kAct == Activation::kIdentity) {
    return x;
  } else if constexpr (kAct == Activation::kRelu) {
    return x > A(0) ? x : A(0);
  } else if constexpr (kAct == Activation::kSilu) {
    return x / (A(1) + Exp(-x));  // x·σ(x) with one rounding less; −0 for x << 0
  } else if constexpr (kAct == Activation::kSigmoid) {
    return Sigmoid(x);
  } else {
    return Tanh(x);
  }
}

// f'(x) from the forward input x.
template <Activation kAct, typename A>
LOOM_HOST_DEVICE LOOM_INLINE A ActGradFromInput(A x) {
  if constexpr (kAct == Activation::kIdentity) {
    return A(1);
  } else if constexpr (kAct == Activation::kRelu) {
    return x > A(0) ? A(1) : A(0);
  } else if constexpr (kAct == Activation::kSilu) {
    const A s = Sigmoid(x);
    return s * (A(1) + x * (A(1) - s));
  } else if constexpr (kAct == Activation::kSigmoid) {
    const A s = Sigmoid(x);
    return s * (A(1) - s);
  } else {
    const A t = Tanh(x);
    return A(1) - t * t;
  }
}

// f'(x) from the forward output y (not defined for silu).
template <Activation kAct, typename A>
LOOM_HOST_DEVICE LOOM_INLINE A ActGradFromOutput(A y) {
  if constexpr (kAct == Activation::kIdentity) {
    return A(1);
  } else if constexpr (kAct == Activation::kRelu) {
    return y > A(0) ? A(1) : A(0);
  } else if constexpr (kAct == Activation::kSigmoid) {
    return y * (A(1) - y);
  } else {
    static_assert(kAct == Activation::kTanh, "silu has no output-based derivative");
    return A(1) - y * y;
  }
}

}  // namespace loom::ops::math

// Binds the compile-time constant `kAct` to the runtime Activation `act` and runs the body.
#define LOOM_OPS_ACTIVATION_SWITCH(act, kAct, ...)                                   \
  do {                                                                               \
    switch (act) {                                                                   \
      case ::loom::ops::Activation::kIdentity: {                                     \
        constexpr ::loom::ops::Activation kAct = ::loom::ops::Activation::kIdentity; \
        __VA_ARGS__;                                                                 \
        break;                                                                       \
      }                                                                              \
      case ::loom::ops::Activation::kRelu: {                                         \
        constexpr ::loom::ops::Activation kAct = ::loom::ops::Activation::kRelu;     \
        __VA_ARGS__;                                                                 \
        break;                                                                       \
      }                                                                              \
      case ::loom::ops::Activation::kSilu: {                                         \
        constexpr ::loom::ops::Activation kAct = ::loom::ops::Activation::kSilu;     \
        __VA_ARGS__;                                                                 \
        break;                                                                       \
      }                                                                              \
      case ::loom::ops::Activation::kSigmoid: {                                      \
        constexpr ::loom::ops::Activation kAct = ::loom::ops::Activation::kSigmoid;  \
        __VA_ARGS__;                                                                 \
        break;                                                                       \
      }                                                                              \
      case ::loom::ops::Activation::kTanh: {                                         \
        constexpr ::loom::ops::Activation kAct = ::loom::ops::Activation::kTanh;     \
        __VA_ARGS__;                                                                 \
        break;                                                                       \
      }                                                                              \
    }                                                                                \
  } while (0)

#endif  // LOOM_MODEL_OPS_ACTIVATION_MATH_H_
