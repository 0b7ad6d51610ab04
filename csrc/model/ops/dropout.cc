#include "csrc/model/ops/dropout.h"

#include <string>

#include "csrc/core/dispatch.h"
#include "csrc/model/ops/op_util.h"

namespace loom::ops {

Status ValidateDropout(const DropoutArgs& args, const TensorSpec& x) {
  if (!(args.p >= 0.0f && args.p < 1.0f)) {
    return InvalidArgumentError("Dropout: p must be in [0, 1), got " + std::to_string(args.p));
  }
  return internal::ExpectFloat("Dropout", "x", x, /*allow_bf16=*/true);
}

void DropoutForward(const ExecContext& ctx, const DropoutArgs& args, ConstTensorView x,
                    TensorView y) {
  LOOM_OPS_CHECK_OK(ValidateDropout(args, x.spec()));
  LOOM_OPS_CHECK_OK(internal::ExpectSameSpec("DropoutForward", "x", x.spec(), "y", y.spec()));
  internal::CheckOnDevice("DropoutForward", ctx.device, {{"x", x}, {"y", y}});
  LOOM_DISPATCH(ctx, Dropout, args, x, y);
}

void DropoutBackward(const ExecContext& ctx, const DropoutArgs& args, ConstTensorView grad_y,
                     TensorView grad_x) {
  LOOM_OPS_CHECK_OK(ValidateDropout(args, grad_y.spec()));
  LOOM_OPS_CHECK_OK(internal::ExpectSameSpec("DropoutBackward", "grad_y", grad_y.spec(), "grad_x",
                                             grad_x.spec()));
  internal::CheckOnDevice("DropoutBackward", ctx.device, {{"grad_y", grad_y}, {"grad_x", grad_x}});
  LOOM_DISPATCH(ctx, Dropout, args, grad_y, grad_x);
}

void DropoutMask(const ExecContext& ctx, const DropoutArgs& args, TensorView keep) {
  LOOM_OPS_CHECK_OK(ValidateDropout(args, TensorSpec{keep.shape(), DType::kF32}));
  LOOM_OPS_CHECK_OK(internal::ExpectDType("DropoutMask", "keep", keep.spec(), DType::kU8));
  internal::CheckOnDevice("DropoutMask", ctx.device, {{"keep", keep}});
  LOOM_DISPATCH(ctx, DropoutMask, args, keep);
}

}  // namespace loom::ops
