#include "csrc/model/ops/activation.h"

#include <string>

#include "csrc/core/dispatch.h"
#include "csrc/model/ops/op_util.h"

namespace loom::ops {

const char* ActivationName(Activation act) {
  switch (act) {
    case Activation::kIdentity:
      return "identity";
    case Activation::kRelu:
      return "relu";
    case Activation::kSilu:
      return "silu";
    case Activation::kSigmoid:
      return "sigmoid";
    case Activation::kTanh:
      return "tanh";
  }
  return "?";
}

bool ActivationBackwardFromOutputSupported(Activation act) { return act != Activation::kSilu; }

Status ValidateActivation(Activation act, const TensorSpec& x) {
  const int a = static_cast<int>(act);
  if (a < 0 || a > static_cast<int>(Activation::kTanh)) {
    return InvalidArgumentError("Activation: unknown activation " + std::to_string(a));
  }
  return internal::ExpectFloat("Activation", "x", x, /*allow_bf16=*/true);
}

Status ValidateActivationBackward(Activation act, ActivationSaved saved, const TensorSpec& x) {
  LOOM_RETURN_IF_ERROR(ValidateActivation(act, x));
  if (saved == ActivationSaved::kOutput && !ActivationBackwardFromOutputSupported(act)) {
    return InvalidArgumentError(std::string("ActivationBackward: ") + ActivationName(act) +
                                " needs the saved input (its derivative is not a function of "
                                "the output)");
  }
  return Status::Ok();
}

void ActivationForward(const ExecContext& ctx, Activation act, ConstTensorView x, TensorView y) {
  LOOM_OPS_CHECK_OK(ValidateActivation(act, x.spec()));
  LOOM_OPS_CHECK_OK(internal::ExpectSameSpec("ActivationForward", "x", x.spec(), "y", y.spec()));
  internal::CheckOnDevice("ActivationForward", ctx.device, {{"x", x}, {"y", y}});
  LOOM_DISPATCH(ctx, ActivationForward, act, x, y);
}

void ActivationBackward(const ExecContext& ctx, Activation act, ActivationSaved saved,
                        ConstTensorView grad_y, ConstTensorView saved_tensor, TensorView grad_x) {
  const char* op = "ActivationBackward";
  LOOM_OPS_CHECK_OK(ValidateActivationBackward(act, saved, grad_y.spec()));
  LOOM_OPS_CHECK_OK(
      internal::ExpectSameSpec(op, "grad_y", grad_y.spec(), "saved", saved_tensor.spec()));
  LOOM_OPS_CHECK_OK(internal::ExpectSameSpec(op, "grad_y", grad_y.spec(), "grad_x", grad_x.spec()));
  internal::CheckOnDevice(op, ctx.device,
                          {{"grad_y", grad_y}, {"saved", saved_tensor}, {"grad_x", grad_x}});
  LOOM_DISPATCH(ctx, ActivationBackward, act, saved, grad_y, saved_tensor, grad_x);
}

}  // namespace loom::ops
