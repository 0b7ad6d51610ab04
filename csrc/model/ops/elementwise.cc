#include "csrc/model/ops/elementwise.h"

#include "csrc/core/dispatch.h"
#include "csrc/model/ops/op_util.h"

namespace loom::ops {
namespace {

using internal::BinaryOp;

void Binary(const char* name, const ExecContext& ctx, BinaryOp op, double alpha, ConstTensorView a,
            double beta, ConstTensorView b, TensorView out) {
  LOOM_OPS_CHECK_OK(ValidateElementwise(a.spec(), b.spec()));
  LOOM_OPS_CHECK_OK(internal::ExpectSameSpec(name, "a", a.spec(), "out", out.spec()));
  internal::CheckOnDevice(name, ctx.device, {{"a", a}, {"b", b}, {"out", out}});
  LOOM_DISPATCH(ctx, Binary, op, alpha, a, beta, b, out);
}

}  // namespace

Status ValidateElementwise(const TensorSpec& a, const TensorSpec& b) {
  LOOM_RETURN_IF_ERROR(internal::ExpectFloat("Elementwise", "a", a, /*allow_bf16=*/true));
  return internal::ExpectSameSpec("Elementwise", "a", a, "b", b);
}

void Add(const ExecContext& ctx, ConstTensorView a, ConstTensorView b, TensorView out) {
  Binary("Add", ctx, BinaryOp::kAxpby, 1.0, a, 1.0, b, out);
}

void Axpby(const ExecContext& ctx, double alpha, ConstTensorView a, double beta, ConstTensorView b,
           TensorView out) {
  Binary("Axpby", ctx, BinaryOp::kAxpby, alpha, a, beta, b, out);
}

void Axpy(const ExecContext& ctx, double alpha, ConstTensorView x, TensorView y) {
  Binary("Axpy", ctx, BinaryOp::kAxpby, alpha, x, 1.0, y, y);
}

void Scale(const ExecContext& ctx, double alpha, ConstTensorView x, TensorView y) {
  Binary("Scale", ctx, BinaryOp::kAxpby, alpha, x, 0.0, x, y);
}

void Mul(const ExecContext& ctx, ConstTensorView a, ConstTensorView b, TensorView out) {
  Binary("Mul", ctx, BinaryOp::kMul, 1.0, a, 1.0, b, out);
}

void MulBackward(const ExecContext& ctx, ConstTensorView grad_out, ConstTensorView a,
                 ConstTensorView b, TensorView grad_a, TensorView grad_b) {
  LOOM_OPS_CHECK_OK(ValidateElementwise(a.spec(), b.spec()));
  LOOM_OPS_CHECK_OK(
      internal::ExpectSameSpec("MulBackward", "a", a.spec(), "grad_out", grad_out.spec()));
  if (!grad_a.empty()) Binary("MulBackward", ctx, BinaryOp::kMul, 1.0, grad_out, 1.0, b, grad_a);
  if (!grad_b.empty()) Binary("MulBackward", ctx, BinaryOp::kMul, 1.0, grad_out, 1.0, a, grad_b);
}

}  // namespace loom::ops
