#include "csrc/model/ops/softmax.h"

#include <string>

#include "csrc/core/dispatch.h"
#include "csrc/model/ops/op_util.h"

namespace loom::ops {
namespace {

Status CheckMask(const char* op, const char* name, const TensorSpec& x, const TensorSpec& mask,
                 DType dtype) {
  LOOM_RETURN_IF_ERROR(internal::ExpectDType(op, name, mask, dtype));
  LOOM_RETURN_IF_ERROR(internal::ExpectRankAtLeast(op, name, mask, 1));
  const int64_t rows = MatrixRows(x.shape), mask_rows = MatrixRows(mask.shape);
  if (MatrixCols(mask.shape) != MatrixCols(x.shape) || mask_rows == 0 || rows % mask_rows != 0) {
    return InvalidArgumentError(std::string(op) + ": " + internal::Describe(name, mask) +
                                " must have the last dim of " + internal::Describe("x", x) +
                                " and a number of rows dividing its " + std::to_string(rows));
  }
  return Status::Ok();
}

}  // namespace

Status ValidateSoftmax(const SoftmaxArgs& args, const TensorSpec& x,
                       const TensorSpec& additive_mask, const TensorSpec& key_mask) {
  const char* op = "Softmax";
  LOOM_RETURN_IF_ERROR(internal::ExpectFloat(op, "x", x, /*allow_bf16=*/true));
  LOOM_RETURN_IF_ERROR(internal::ExpectRankAtLeast(op, "x", x, 1));
  if (!(args.scale == args.scale)) return InvalidArgumentError("Softmax: scale is NaN");
  if (additive_mask.shape.rank() != 0) {
    LOOM_RETURN_IF_ERROR(CheckMask(op, "additive_mask", x, additive_mask, ScalarDType(x.dtype)));
  }
  if (key_mask.shape.rank() != 0) {
    LOOM_RETURN_IF_ERROR(CheckMask(op, "key_mask", x, key_mask, DType::kU8));
  }
  return Status::Ok();
}

void SoftmaxForward(const ExecContext& ctx, const SoftmaxArgs& args, ConstTensorView x,
                    ConstTensorView additive_mask, ConstTensorView key_mask, TensorView y) {
  const char* op = "SoftmaxForward";
  LOOM_OPS_CHECK_OK(ValidateSoftmax(args, x.spec(),
                                    additive_mask.empty() ? TensorSpec{} : additive_mask.spec(),
                                    key_mask.empty() ? TensorSpec{} : key_mask.spec()));
  LOOM_OPS_CHECK_OK(internal::ExpectSameSpec(op, "x", x.spec(), "y", y.spec()));
  internal::CheckOnDevice(
      op, ctx.device,
      {{"x", x}, {"additive_mask", additive_mask}, {"key_mask", key_mask}, {"y", y}});
  LOOM_DISPATCH(ctx, SoftmaxForward, args, x, additive_mask, key_mask, y);
}

void SoftmaxBackward(const ExecContext& ctx, const SoftmaxArgs& args, ConstTensorView grad_y,
                     ConstTensorView y, TensorView grad_x) {
  const char* op = "SoftmaxBackward";
  LOOM_OPS_CHECK_OK(ValidateSoftmax(args, y.spec(), TensorSpec{}, TensorSpec{}));
  LOOM_OPS_CHECK_OK(internal::ExpectSameSpec(op, "y", y.spec(), "grad_y", grad_y.spec()));
  LOOM_OPS_CHECK_OK(internal::ExpectSameSpec(op, "y", y.spec(), "grad_x", grad_x.spec()));
  internal::CheckOnDevice(op, ctx.device, {{"grad_y", grad_y}, {"y", y}, {"grad_x", grad_x}});
  LOOM_DISPATCH(ctx, SoftmaxBackward, args, grad_y, y, grad_x);
}

}  // namespace loom::ops
