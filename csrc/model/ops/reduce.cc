#include "csrc/model/ops/reduce.h"

#include <string>
#include <vector>

#include "csrc/core/dispatch.h"
#include "csrc/model/ops/op_util.h"

namespace loom::ops {
namespace {

struct Split3 {
  int dim;
  int64_t outer, n, inner;
};

Status SplitAt(const char* op, const TensorSpec& x, int dim, Split3* out) {
  const int rank = x.shape.rank();
  const int d = dim < 0 ? dim + rank : dim;
  if (d < 0 || d >= rank) {
    return InvalidArgumentError(std::string(op) + ": dim " + std::to_string(dim) +
                                " is out of range for " + internal::Describe("x", x));
  }
  out->dim = d;
  out->outer = 1;
  out->inner = 1;
  for (int i = 0; i < d; ++i) out->outer *= x.shape[i];
  for (int i = d + 1; i < rank; ++i) out->inner *= x.shape[i];
  out->n = x.shape[d];
  return Status::Ok();
}

Shape Without(const Shape& s, int dim) {
  std::vector<int64_t> dims = s.dims();
  dims.erase(dims.begin() + dim);
  return Shape(dims);
}

Status PlanSumDim(const char* op, const SumDimArgs& args, const TensorSpec& x, const TensorSpec& y,
                  Split3* split) {
  LOOM_RETURN_IF_ERROR(internal::ExpectFloat(op, "x", x, /*allow_bf16=*/true));
  LOOM_RETURN_IF_ERROR(internal::ExpectRankAtLeast(op, "x", x, 1));
  LOOM_RETURN_IF_ERROR(SplitAt(op, x, args.dim, split));
  LOOM_RETURN_IF_ERROR(internal::ExpectDType(op, "y", y, x.dtype));
  return internal::ExpectShape(op, "y", y, Without(x.shape, split->dim));
}

Status CheckTokens(const char* op, const TensorSpec& x, const TensorSpec& mask,
                   const TensorSpec& y) {
  LOOM_RETURN_IF_ERROR(internal::ExpectFloat(op, "x", x, /*allow_bf16=*/true));
  LOOM_RETURN_IF_ERROR(internal::ExpectRank(op, "x", x, 3));
  LOOM_RETURN_IF_ERROR(internal::ExpectDType(op, "mask", mask, DType::kU8));
  LOOM_RETURN_IF_ERROR(internal::ExpectShape(op, "mask", mask, Shape{x.shape[0], x.shape[1]}));
  LOOM_RETURN_IF_ERROR(internal::ExpectDType(op, "y", y, x.dtype));
  return internal::ExpectShape(op, "y", y, Shape{x.shape[0], x.shape[2]});
}

}  // namespace

Status ValidateSumDim(const SumDimArgs& args, const TensorSpec& x, const TensorSpec& y) {
  Split3 split;
  return PlanSumDim("SumDim", args, x, y, &split);
}

void SumDim(const ExecContext& ctx, const SumDimArgs& args, ConstTensorView x, TensorView y) {
  Split3 s;
  LOOM_OPS_CHECK_OK(PlanSumDim("SumDim", args, x.spec(), y.spec(), &s));
  internal::CheckOnDevice("SumDim", ctx.device, {{"x", x}, {"y", y}});
  LOOM_DISPATCH(ctx, SumDim, s.outer, s.n, s.inner, args.accumulate, x, y);
}

void SumDimBackward(const ExecContext& ctx, const SumDimArgs& args, ConstTensorView grad_y,
                    TensorView grad_x) {
  Split3 s;
  LOOM_OPS_CHECK_OK(PlanSumDim("SumDimBackward", args, grad_x.spec(), grad_y.spec(), &s));
  internal::CheckOnDevice("SumDimBackward", ctx.device, {{"grad_y", grad_y}, {"grad_x", grad_x}});
  LOOM_DISPATCH(ctx, SumDimBackward, s.outer, s.n, s.inner, grad_y, grad_x);
}

Status ValidateMaskedMeanTokens(const TensorSpec& x, const TensorSpec& mask, const TensorSpec& y) {
  return CheckTokens("MaskedMeanTokens", x, mask, y);
}

void MaskedMeanTokens(const ExecContext& ctx, ConstTensorView x, ConstTensorView mask,
                      TensorView y) {
  LOOM_OPS_CHECK_OK(CheckTokens("MaskedMeanTokens", x.spec(), mask.spec(), y.spec()));
  internal::CheckOnDevice("MaskedMeanTokens", ctx.device, {{"x", x}, {"mask", mask}, {"y", y}});
  LOOM_DISPATCH(ctx, MaskedMeanTokens, x, mask, y);
}

void MaskedMeanTokensBackward(const ExecContext& ctx, ConstTensorView grad_y, ConstTensorView mask,
                              TensorView grad_x) {
  const char* op = "MaskedMeanTokensBackward";
  LOOM_OPS_CHECK_OK(CheckTokens(op, grad_x.spec(), mask.spec(), grad_y.spec()));
  internal::CheckOnDevice(op, ctx.device, {{"grad_y", grad_y}, {"mask", mask}, {"grad_x", grad_x}});
  LOOM_DISPATCH(ctx, MaskedMeanTokensBackward, grad_y, mask, grad_x);
}

}  // namespace loom::ops
