// Layer normalization over the last dimension:
//   mean[r] = Σ_c x[r, c] / C        var[r] = Σ_c (x[r, c] − mean[r])² / C   (biased)
//   rstd[r] = 1 / sqrt(var[r] + epsilon)
//   y[r, :] = (x[r, :] − mean[r]) · rstd[r] · gamma + beta
// Shapes (R = rows: every leading dim of x folded, e.g. B·T; C = channels, the last dim):
//   x, y, grad_x, grad_y : (..., C)            dtype X
//   gamma, beta, grad_gamma, grad_beta : (C)   dtype S
//   mean, rstd : (R) (any shape with R elements), dtype S; written by Forward, read by Backward
// where S = ScalarDType(X) (op_util.h): f64 for f64 activations, f32 for f32 and bf16.
// Backward, with x̂ = (x − mean)·rstd and g = grad_y ⊙ gamma:
//   grad_x     = rstd · (g − mean_c(g) − x̂ · mean_c(g ⊙ x̂))       overwritten (=)
//   grad_gamma += Σ_r grad_y ⊙ x̂                                   accumulated (+=)
//   grad_beta  += Σ_r grad_y                                       accumulated (+=)
// Row statistics are computed two-pass (mean, then squared deviations), in double on the
// CPU and fp32 on CUDA. The column sums for gamma/beta are deterministic (fixed chunks, no
// atomics; docs/numerics.md). y may alias x; grad_x may alias grad_y.
// Dtypes X: CPU f32, f64; CUDA f32, f64, bf16.
#ifndef LOOM_MODEL_OPS_LAYER_NORM_H_
#define LOOM_MODEL_OPS_LAYER_NORM_H_

#include "csrc/core/device.h"
#include "csrc/core/status.h"
#include "csrc/core/tensor.h"

namespace loom::ops {

struct LayerNormArgs {
  float epsilon = 1e-5f;
};

// InvalidArgument unless x is a float tensor of rank >= 1 with C > 0 and gamma is (C) of
// ScalarDType(x). Layers call this at plan time; the step functions CHECK it again.
Status ValidateLayerNorm(const LayerNormArgs& args, const TensorSpec& x, const TensorSpec& gamma);

void LayerNormForward(const ExecContext& ctx, const LayerNormArgs& args, ConstTensorView x,
                      ConstTensorView gamma, ConstTensorView beta, TensorView y, TensorView mean,
                      TensorView rstd);
void LayerNormBackward(const ExecContext& ctx, ConstTensorView grad_y, ConstTensorView x,
                       ConstTensorView gamma, ConstTensorView mean, ConstTensorView rstd,
                       TensorView grad_x, TensorView grad_gamma, TensorView grad_beta);

namespace internal {  // Same semantics; called only from layer_norm.cc.
void LayerNormForwardCpu(const LayerNormArgs& args, ConstTensorView x, ConstTensorView gamma,
                         ConstTensorView beta, TensorView y, TensorView mean, TensorView rstd);
void LayerNormForwardCuda(const LayerNormArgs& args, ConstTensorView x, ConstTensorView gamma,
                          ConstTensorView beta, TensorView y, TensorView mean, TensorView rstd,
                          Stream stream);
void LayerNormBackwardCpu(ConstTensorView grad_y, ConstTensorView x, ConstTensorView gamma,
                          ConstTensorView mean, ConstTensorView rstd, TensorView grad_x,
                          TensorView grad_gamma, TensorView grad_beta);
void LayerNormBackwardCuda(ConstTensorView grad_y, ConstTensorView x, ConstTensorView gamma,
                           ConstTensorView mean, ConstTensorView rstd, TensorView grad_x,
                           TensorView grad_gamma, TensorView grad_beta, Stream stream);
}  // namespace internal

}  // namespace loom::ops

#endif  // LOOM_MODEL_OPS_LAYER_NORM_H_
