#include "csrc/model/ops/rope.h"

#include <string>

#include "csrc/core/dispatch.h"
#include "csrc/model/ops/op_util.h"

namespace loom::ops {
namespace {

internal::RopeGeometry GeometryOf(const Shape& s) {
  internal::RopeGeometry g;
  g.outer = s[0];
  g.tokens = s[1];
  g.inner = s.rank() == 4 ? s[2] : 1;
  g.head_dim = s[s.rank() - 1];
  return g;
}

}  // namespace

Status ValidateRope(const RopeArgs& args, const TensorSpec& x) {
  const char* op = "Rope";
  LOOM_RETURN_IF_ERROR(internal::ExpectFloat(op, "x", x, /*allow_bf16=*/true));
  if (x.shape.rank() != 3 && x.shape.rank() != 4) {
    return InvalidArgumentError(std::string(op) + ": " + internal::Describe("x", x) +
                                " must be (B, T, H, hd) or (B·H, T, hd)");
  }
  const int64_t hd = x.shape[x.shape.rank() - 1];
  if (hd % 2 != 0 || hd > kRopeMaxHeadDim) {
    return InvalidArgumentError(std::string(op) + ": head dim " + std::to_string(hd) + " of " +
                                internal::Describe("x", x) + " must be even and at most " +
                                std::to_string(kRopeMaxHeadDim));
  }
  if (!(args.base > 0.0)) {
    return InvalidArgumentError(std::string(op) + ": base must be > 0, got " +
                                std::to_string(args.base));
  }
  if (args.position_offset < 0) {
    return InvalidArgumentError(std::string(op) + ": position_offset must be >= 0, got " +
                                std::to_string(args.position_offset));
  }
  return Status::Ok();
}

void RopeForward(const ExecContext& ctx, const RopeArgs& args, ConstTensorView x, TensorView y) {
  LOOM_OPS_CHECK_OK(ValidateRope(args, x.spec()));
  LOOM_OPS_CHECK_OK(internal::ExpectSameSpec("RopeForward", "x", x.spec(), "y", y.spec()));
  internal::CheckOnDevice("RopeForward", ctx.device, {{"x", x}, {"y", y}});
  LOOM_DISPATCH(ctx, Rope, args, GeometryOf(x.shape()), /*inverse=*/false, x, y);
}

void RopeBackward(const ExecContext& ctx, const RopeArgs& args, ConstTensorView grad_y,
                  TensorView grad_x) {
  LOOM_OPS_CHECK_OK(ValidateRope(args, grad_y.spec()));
  LOOM_OPS_CHECK_OK(
      internal::ExpectSameSpec("RopeBackward", "grad_y", grad_y.spec(), "grad_x", grad_x.spec()));
  internal::CheckOnDevice("RopeBackward", ctx.device, {{"grad_y", grad_y}, {"grad_x", grad_x}});
  LOOM_DISPATCH(ctx, Rope, args, GeometryOf(grad_y.shape()), /*inverse=*/true, grad_y, grad_x);
}

}  // namespace loom::ops
