// Element-wise arithmetic on tensors of one shape and dtype (any rank):
//   Add:    out = a + b
//   Axpby:  out = alpha·a + beta·b
//   Axpy:   y += alpha·x                  (accumulating gradients, residual backward)
//   Scale:  y = alpha·x
//   Mul:    out = a ⊙ b                   (Hadamard product)
//   MulBackward: grad_a = grad_out ⊙ b,  grad_b = grad_out ⊙ a   (both overwritten (=);
//           either may be empty to skip it)
// Outputs may alias inputs (each element is read before it is written), except that grad_a
// and grad_b of MulBackward must not alias a, b or each other.
// alpha/beta are rounded to the element type's accumulator (fp32 for f32/bf16) first.
// Dtypes: CPU f32, f64; CUDA f32, f64, bf16 (computed in fp32).
#ifndef LOOM_MODEL_OPS_ELEMENTWISE_H_
#define LOOM_MODEL_OPS_ELEMENTWISE_H_

#include "csrc/core/device.h"
#include "csrc/core/status.h"
#include "csrc/core/tensor.h"

namespace loom::ops {

// a, b: same shape and dtype, a float dtype.
Status ValidateElementwise(const TensorSpec& a, const TensorSpec& b);

void Add(const ExecContext& ctx, ConstTensorView a, ConstTensorView b, TensorView out);
void Axpby(const ExecContext& ctx, double alpha, ConstTensorView a, double beta, ConstTensorView b,
           TensorView out);
void Axpy(const ExecContext& ctx, double alpha, ConstTensorView x, TensorView y);
void Scale(const ExecContext& ctx, double alpha, ConstTensorView x, TensorView y);
void Mul(const ExecContext& ctx, ConstTensorView a, ConstTensorView b, TensorView out);
void MulBackward(const ExecContext& ctx, ConstTensorView grad_out, ConstTensorView a,
                 ConstTensorView b, TensorView grad_a, TensorView grad_b);

namespace internal {
enum class BinaryOp { kAxpby, kMul };
// out = alpha·a + beta·b (kAxpby) or a ⊙ b (kMul; alpha, beta unused).
void BinaryCpu(BinaryOp op, double alpha, ConstTensorView a, double beta, ConstTensorView b,
               TensorView out);
void BinaryCuda(BinaryOp op, double alpha, ConstTensorView a, double beta, ConstTensorView b,
                TensorView out, Stream stream);
}  // namespace internal

}  // namespace loom::ops

#endif  // LOOM_MODEL_OPS_ELEMENTWISE_H_
