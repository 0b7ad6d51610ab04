// Fully connected layer math with a fused epilogue, PyTorch weight layout:
//   z = x Wᵀ + b          y = act(z)           (act from activation.h)
// Shapes (R = rows: every leading dim of x folded, e.g. B·T for x (B, T, K)):
//   x (..., K)      W (N, K)      b (N) or empty      y, pre (..., N), leading dims of x
// `pre` (optional, may be empty) receives z: keep it for backward when act is silu (the only
// activation whose derivative needs the input); for the others y is enough
// (ActivationBackward with ActivationSaved::kOutput).
//
// LinearBackward is the affine part, given grad_z = ∂L/∂z (R, N) (for act ≠ identity, first
// run ActivationBackward, which may write grad_z over grad_y in place):
//   grad_x (R, K) = grad_z W               overwritten (=); skipped when empty
//   grad_W (N, K) += grad_zᵀ x             accumulated (+=); skipped when empty
//   grad_b (N)    += Σ_r grad_z[r, :]      accumulated (+=); skipped when empty
// The bias sum is a deterministic column reduction (chunked by rows, fixed order, double
// partials on the CPU, fp32 two-pass on CUDA; docs/numerics.md).
//
// Dtypes: x, W, b, y, pre, grads all share one dtype. CPU f32, f64; CUDA f32, f64, bf16
// (fp32 accumulation; on CUDA the bias(+relu) epilogue runs inside cuBLASLt when it has an
// algorithm for the shapes, otherwise bias is pre-broadcast into the output before cuBLAS).
// y and pre must not alias x or W; y may equal pre only when act is identity.
#ifndef LOOM_MODEL_OPS_LINEAR_H_
#define LOOM_MODEL_OPS_LINEAR_H_

#include "csrc/core/device.h"
#include "csrc/core/status.h"
#include "csrc/core/tensor.h"
#include "csrc/model/ops/activation.h"

namespace loom::ops {

struct LinearArgs {
  Activation activation = Activation::kIdentity;
};

// Checks the table above for the forward; `bias` and `pre` specs may be empty (TensorSpec{}
// with rank 0) to mean "absent".
Status ValidateLinear(const LinearArgs& args, const TensorSpec& x, const TensorSpec& weight,
                      const TensorSpec& bias, const TensorSpec& y);

void LinearForward(const ExecContext& ctx, const LinearArgs& args, ConstTensorView x,
                   ConstTensorView weight, ConstTensorView bias, TensorView y, TensorView pre);
void LinearBackward(const ExecContext& ctx, ConstTensorView grad_z, ConstTensorView x,
                    ConstTensorView weight, TensorView grad_x, TensorView grad_weight,
                    TensorView grad_bias);

namespace internal {
// Forward on validated views; pre may be empty.
void LinearForwardCpu(const LinearArgs& args, ConstTensorView x, ConstTensorView weight,
                      ConstTensorView bias, TensorView y, TensorView pre);
void LinearForwardCuda(const LinearArgs& args, ConstTensorView x, ConstTensorView weight,
                       ConstTensorView bias, TensorView y, TensorView pre, Stream stream);
}  // namespace internal

}  // namespace loom::ops

#endif  // LOOM_MODEL_OPS_LINEAR_H_
