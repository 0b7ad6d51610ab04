// Element-wise activations y = f(x) and their backward, for tensors of any shape:
//   identity  f(x) = x                       f' = 1
//   relu      f(x) = max(x, 0)               f' = [x > 0]          (0 at x = 0)
//   silu      f(x) = x · σ(x)                f' = σ(x) · (1 + x · (1 − σ(x)))
//   sigmoid   f(x) = σ(x) = 1 / (1 + e^−x)   f' = y · (1 − y)
//   tanh      f(x) = tanh(x)                 f' = 1 − y²
// σ(x) = 1/(1 + e^−x) is exact to a few ulp for every x (e^−x may overflow to +inf, giving
// σ = 0 where the true value is below 1e-38 in f32 / 1e-308 in f64); never NaN for finite x.
//
// Backward: grad_x = grad_y ⊙ f'(·), overwritten (=). f' is computed from the saved tensor
// named by `saved`:
//   ActivationSaved::kInput   the forward input x: every activation.
//   ActivationSaved::kOutput  the forward output y: identity, relu, sigmoid, tanh (not silu,
//                             whose derivative is not a function of y). Saving y lets a
//                             layer keep one tensor (the next layer's input) instead of two.
//
// Shapes: x, y, grad_y, grad_x, saved all have one shape and dtype. In place is allowed:
// y may be x, and grad_x may be grad_y (element i is read before element i is written).
// Dtypes: CPU f32, f64; CUDA f32, f64, bf16 (computed in fp32).
#ifndef LOOM_MODEL_OPS_ACTIVATION_H_
#define LOOM_MODEL_OPS_ACTIVATION_H_

#include "csrc/core/device.h"
#include "csrc/core/status.h"
#include "csrc/core/tensor.h"

namespace loom::ops {

enum class Activation : int { kIdentity = 0, kRelu = 1, kSilu = 2, kSigmoid = 3, kTanh = 4 };
enum class ActivationSaved : int { kInput = 0, kOutput = 1 };

// "identity", "relu", "silu", "sigmoid", "tanh".
const char* ActivationName(Activation act);
// Whether ActivationBackward can work from the forward output (all but silu).
bool ActivationBackwardFromOutputSupported(Activation act);

Status ValidateActivation(Activation act, const TensorSpec& x);
Status ValidateActivationBackward(Activation act, ActivationSaved saved, const TensorSpec& x);

void ActivationForward(const ExecContext& ctx, Activation act, ConstTensorView x, TensorView y);
void ActivationBackward(const ExecContext& ctx, Activation act, ActivationSaved saved,
                        ConstTensorView grad_y, ConstTensorView saved_tensor, TensorView grad_x);

namespace internal {  // Same semantics; called from activation.cc and linear_*.
void ActivationForwardCpu(Activation act, ConstTensorView x, TensorView y);
void ActivationForwardCuda(Activation act, ConstTensorView x, TensorView y, Stream stream);
void ActivationBackwardCpu(Activation act, ActivationSaved saved, ConstTensorView grad_y,
                           ConstTensorView saved_tensor, TensorView grad_x);
void ActivationBackwardCuda(Activation act, ActivationSaved saved, ConstTensorView grad_y,
                            ConstTensorView saved_tensor, TensorView grad_x, Stream stream);
}  // namespace internal

}  // namespace loom::ops

#endif  // LOOM_MODEL_OPS_ACTIVATION_H_
