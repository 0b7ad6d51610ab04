#include "csrc/model/ops/bce_loss.h"

#include <string>

#include "csrc/core/dispatch.h"
#include "csrc/model/ops/op_util.h"

namespace loom::ops {
namespace {

Status CheckBatchVector(const char* op, const char* name, const TensorSpec& logits,
                        const TensorSpec& v) {
  LOOM_RETURN_IF_ERROR(internal::ExpectDType(op, name, v, logits.dtype));
  const bool ok = (v.shape.rank() == 1 || (v.shape.rank() == 2 && v.shape[1] == 1)) &&
                  v.numel() == logits.numel();
  if (!ok) {
    return InvalidArgumentError(
        std::string(op) + ": " + internal::Describe(name, v) +
        " must be (B) or (B, 1) with B = " + std::to_string(logits.numel()));
  }
  return Status::Ok();
}

}  // namespace

Status ValidateBceWithLogits(const TensorSpec& logits, const TensorSpec& labels,
                             const TensorSpec& weights) {
  const char* op = "BceWithLogits";
  LOOM_RETURN_IF_ERROR(internal::ExpectFloat(op, "logits", logits, /*allow_bf16=*/false));
  LOOM_RETURN_IF_ERROR(CheckBatchVector(op, "logits", logits, logits));
  LOOM_RETURN_IF_ERROR(CheckBatchVector(op, "labels", logits, labels));
  if (weights.shape.rank() != 0) {
    LOOM_RETURN_IF_ERROR(CheckBatchVector(op, "weights", logits, weights));
  }
  return Status::Ok();
}

void BceWithLogitsForward(const ExecContext& ctx, ConstTensorView logits, ConstTensorView labels,
                          ConstTensorView weights, TensorView loss) {
  const char* op = "BceWithLogitsForward";
  LOOM_OPS_CHECK_OK(ValidateBceWithLogits(logits.spec(), labels.spec(),
                                          weights.empty() ? TensorSpec{} : weights.spec()));
  LOOM_OPS_CHECK_OK(internal::ExpectDType(op, "loss", loss.spec(), logits.dtype()));
  CHECK_EQ(loss.numel(), 1) << op << ": loss " << loss.spec().ToString()
                            << " must hold one element";
  internal::CheckOnDevice(
      op, ctx.device,
      {{"logits", logits}, {"labels", labels}, {"weights", weights}, {"loss", loss}});
  LOOM_DISPATCH(ctx, BceWithLogitsForward, logits, labels, weights, loss);
}

void BceWithLogitsBackward(const ExecContext& ctx, double grad_scale, ConstTensorView logits,
                           ConstTensorView labels, ConstTensorView weights,
                           TensorView grad_logits) {
  const char* op = "BceWithLogitsBackward";
  LOOM_OPS_CHECK_OK(ValidateBceWithLogits(logits.spec(), labels.spec(),
                                          weights.empty() ? TensorSpec{} : weights.spec()));
  LOOM_OPS_CHECK_OK(
      internal::ExpectSameSpec(op, "logits", logits.spec(), "grad_logits", grad_logits.spec()));
  internal::CheckOnDevice(
      op, ctx.device,
      {{"logits", logits}, {"labels", labels}, {"weights", weights}, {"grad_logits", grad_logits}});
  LOOM_DISPATCH(ctx, BceWithLogitsBackward, grad_scale, logits, labels, weights, grad_logits);
}

}  // namespace loom::ops
