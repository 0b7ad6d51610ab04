#include "csrc/model/ops/linear.h"

#include <string>

#include "csrc/core/dispatch.h"
#include "csrc/model/ops/gemm.h"
#include "csrc/model/ops/op_util.h"
#include "csrc/model/ops/reduce.h"

namespace loom::ops {
namespace {

using internal::Describe;

// The (R, N) shape of y for x (..., K) and W (N, K): x's leading dims, then N.
Shape OutputShape(const Shape& x, int64_t n) {
  std::vector<int64_t> dims = x.dims();
  dims.back() = n;
  return Shape(dims);
}

}  // namespace

Status ValidateLinear(const LinearArgs& args, const TensorSpec& x, const TensorSpec& weight,
                      const TensorSpec& bias, const TensorSpec& y) {
  const char* op = "Linear";
  LOOM_RETURN_IF_ERROR(ValidateActivation(args.activation, x));
  LOOM_RETURN_IF_ERROR(internal::ExpectRankAtLeast(op, "x", x, 1));
  LOOM_RETURN_IF_ERROR(internal::ExpectRank(op, "weight", weight, 2));
  LOOM_RETURN_IF_ERROR(internal::ExpectDType(op, "weight", weight, x.dtype));
  const int64_t k = MatrixCols(x.shape), n = weight.shape[0];
  if (weight.shape[1] != k) {
    return InvalidArgumentError(std::string(op) + ": " + Describe("weight", weight) +
                                " must be (N, " + std::to_string(k) + ") for the last dim of " +
                                Describe("x", x));
  }
  if (bias.shape.rank() != 0) {
    LOOM_RETURN_IF_ERROR(internal::ExpectDType(op, "bias", bias, x.dtype));
    LOOM_RETURN_IF_ERROR(internal::ExpectShape(op, "bias", bias, Shape{n}));
  }
  LOOM_RETURN_IF_ERROR(internal::ExpectDType(op, "y", y, x.dtype));
  return internal::ExpectShape(op, "y", y, OutputShape(x.shape, n));
}

void LinearForward(const ExecContext& ctx, const LinearArgs& args, ConstTensorView x,
                   ConstTensorView weight, ConstTensorView bias, TensorView y, TensorView pre) {
  const char* op = "LinearForward";
  LOOM_OPS_CHECK_OK(ValidateLinear(args, x.spec(), weight.spec(),
                                   bias.empty() ? TensorSpec{} : bias.spec(), y.spec()));
  if (!pre.empty()) {
    LOOM_OPS_CHECK_OK(internal::ExpectSameSpec(op, "y", y.spec(), "pre", pre.spec()));
    CHECK(pre.raw() != y.raw() || args.activation == Activation::kIdentity)
        << op << ": pre and y must be different buffers for " << ActivationName(args.activation);
  }
  internal::CheckOnDevice(op, ctx.device,
                          {{"x", x}, {"weight", weight}, {"bias", bias}, {"y", y}, {"pre", pre}});
  LOOM_DISPATCH(ctx, LinearForward, args, x, weight, bias, y, pre);
}

void LinearBackward(const ExecContext& ctx, ConstTensorView grad_z, ConstTensorView x,
                    ConstTensorView weight, TensorView grad_x, TensorView grad_weight,
                    TensorView grad_bias) {
  const char* op = "LinearBackward";
  LOOM_OPS_CHECK_OK(ValidateLinear(LinearArgs{}, x.spec(), weight.spec(),
                                   grad_bias.empty() ? TensorSpec{} : grad_bias.spec(),
                                   grad_z.spec()));
  if (!grad_x.empty()) {
    LOOM_OPS_CHECK_OK(internal::ExpectSameSpec(op, "x", x.spec(), "grad_x", grad_x.spec()));
  }
  if (!grad_weight.empty()) {
    LOOM_OPS_CHECK_OK(
        internal::ExpectSameSpec(op, "weight", weight.spec(), "grad_weight", grad_weight.spec()));
  }
  const int64_t rows = MatrixRows(x.shape()), k = MatrixCols(x.shape()), n = weight.dim(0);
  const ConstTensorView gz2 = grad_z.Reshape(Shape{rows, n});
  const ConstTensorView x2 = x.Reshape(Shape{rows, k});
  if (!grad_x.empty()) {  // grad_x (R, K) = grad_z (R, N) · W (N, K)
    Gemm(ctx, GemmArgs{}, gz2, weight, grad_x.Reshape(Shape{rows, k}));
  }
  if (!grad_weight.empty()) {  // grad_W (N, K) += grad_zᵀ (N, R) · x (R, K)
    GemmArgs args;
    args.trans_a = true;
    args.beta = 1.0;
    Gemm(ctx, args, gz2, x2, grad_weight);
  }
  if (!grad_bias.empty()) {  // grad_b (N) += Σ_r grad_z[r, :]
    SumDim(ctx, SumDimArgs{/*dim=*/0, /*accumulate=*/true}, gz2, grad_bias);
  }
}

}  // namespace loom::ops
