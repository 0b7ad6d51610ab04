#include "csrc/model/ops/layer_norm.h"

#include <string>

#include "csrc/core/dispatch.h"
#include "csrc/model/ops/op_util.h"

namespace loom::ops {
namespace {

Status CheckParam(const char* op, const char* name, const TensorSpec& x, const TensorSpec& p) {
  LOOM_RETURN_IF_ERROR(internal::ExpectDType(op, name, p, ScalarDType(x.dtype)));
  return internal::ExpectShape(op, name, p, Shape{MatrixCols(x.shape)});
}

Status CheckStats(const char* op, const char* name, const TensorSpec& x, const TensorSpec& s) {
  LOOM_RETURN_IF_ERROR(internal::ExpectDType(op, name, s, ScalarDType(x.dtype)));
  if (s.numel() != MatrixRows(x.shape)) {
    return InvalidArgumentError(std::string(op) + ": " + internal::Describe(name, s) +
                                " must hold one value per row of " + internal::Describe("x", x) +
                                " (" + std::to_string(MatrixRows(x.shape)) + ")");
  }
  return Status::Ok();
}

}  // namespace

Status ValidateLayerNorm(const LayerNormArgs& args, const TensorSpec& x, const TensorSpec& gamma) {
  const char* op = "LayerNorm";
  LOOM_RETURN_IF_ERROR(internal::ExpectFloat(op, "x", x, /*allow_bf16=*/true));
  LOOM_RETURN_IF_ERROR(internal::ExpectRankAtLeast(op, "x", x, 1));
  if (MatrixCols(x.shape) == 0) {
    return InvalidArgumentError(std::string(op) + ": " + internal::Describe("x", x) +
                                " has no channels to normalize");
  }
  if (!(args.epsilon > 0.0f)) {
    return InvalidArgumentError(std::string(op) + ": epsilon must be > 0, got " +
                                std::to_string(args.epsilon));
  }
  return CheckParam(op, "gamma", x, gamma);
}

void LayerNormForward(const ExecContext& ctx, const LayerNormArgs& args, ConstTensorView x,
                      ConstTensorView gamma, ConstTensorView beta, TensorView y, TensorView mean,
                      TensorView rstd) {
  const char* op = "LayerNormForward";
  LOOM_OPS_CHECK_OK(ValidateLayerNorm(args, x.spec(), gamma.spec()));
  LOOM_OPS_CHECK_OK(CheckParam(op, "beta", x.spec(), beta.spec()));
  LOOM_OPS_CHECK_OK(internal::ExpectSameSpec(op, "x", x.spec(), "y", y.spec()));
  LOOM_OPS_CHECK_OK(CheckStats(op, "mean", x.spec(), mean.spec()));
  LOOM_OPS_CHECK_OK(CheckStats(op, "rstd", x.spec(), rstd.spec()));
  internal::CheckOnDevice(
      op, ctx.device,
      {{"x", x}, {"gamma", gamma}, {"beta", beta}, {"y", y}, {"mean", mean}, {"rstd", rstd}});
  LOOM_DISPATCH(ctx, LayerNormForward, args, x, gamma, beta, y, mean, rstd);
}

void LayerNormBackward(const ExecContext& ctx, ConstTensorView grad_y, ConstTensorView x,
                       ConstTensorView gamma, ConstTensorView mean, ConstTensorView rstd,
                       TensorView grad_x, TensorView grad_gamma, TensorView grad_beta) {
  const char* op = "LayerNormBackward";
  LOOM_OPS_CHECK_OK(ValidateLayerNorm(LayerNormArgs{}, x.spec(), gamma.spec()));
  LOOM_OPS_CHECK_OK(internal::ExpectSameSpec(op, "x", x.spec(), "grad_y", grad_y.spec()));
  LOOM_OPS_CHECK_OK(internal::ExpectSameSpec(op, "x", x.spec(), "grad_x", grad_x.spec()));
  LOOM_OPS_CHECK_OK(CheckStats(op, "mean", x.spec(), mean.spec()));
  LOOM_OPS_CHECK_OK(CheckStats(op, "rstd", x.spec(), rstd.spec()));
  LOOM_OPS_CHECK_OK(CheckParam(op, "grad_gamma", x.spec(), grad_gamma.spec()));
  LOOM_OPS_CHECK_OK(CheckParam(op, "grad_beta", x.spec(), grad_beta.spec()));
  internal::CheckOnDevice(op, ctx.device,
                          {{"grad_y", grad_y},
                           {"x", x},
                           {"gamma", gamma},
                           {"mean", mean},
                           {"rstd", rstd},
                           {"grad_x", grad_x},
                           {"grad_gamma", grad_gamma},
                           {"grad_beta", grad_beta}});
  LOOM_DISPATCH(ctx, LayerNormBackward, grad_y, x, gamma, mean, rstd, grad_x, grad_gamma,
                grad_beta);
}

}  // namespace loom::ops
