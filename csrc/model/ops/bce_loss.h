// Binary cross-entropy on logits, mean over the batch (docs/model.md §1):
//   ℓ_b   = softplus(z_b) − y_b · z_b = max(z_b, 0) − y_b · z_b + log1p(e^−|z_b|)
//   loss  = (1/B) · Σ_b w_b · ℓ_b                      (w_b = 1 without weights)
//   grad_z_b = grad_scale · w_b · (σ(z_b) − y_b) / B   overwritten (=)
// Stable for any z (no exp of a positive number). Labels may be soft (any value in [0, 1]).
// With weights the sum is still divided by B (not by Σ w): weights rescale samples, they do
// not renormalize the batch. grad_scale is ∂(objective)/∂loss (1 for plain training; a loss
// scale or 1/R for averaging across ranks otherwise).
// Shapes: logits (B) or (B, 1); labels and weights (B) or (B, 1), same dtype as logits;
//   loss: one element (shape (1) or ()), same dtype.
// The batch sum is deterministic (fixed order: double partials over fixed chunks on the CPU,
// a single block with double accumulators on CUDA).
// Dtypes: CPU f32, f64; CUDA f32, f64.
#ifndef LOOM_MODEL_OPS_BCE_LOSS_H_
#define LOOM_MODEL_OPS_BCE_LOSS_H_

#include "csrc/core/device.h"
#include "csrc/core/status.h"
#include "csrc/core/tensor.h"

namespace loom::ops {

// weights may be an empty spec (rank 0): no weights.
Status ValidateBceWithLogits(const TensorSpec& logits, const TensorSpec& labels,
                             const TensorSpec& weights);

// weights may be an empty view.
void BceWithLogitsForward(const ExecContext& ctx, ConstTensorView logits, ConstTensorView labels,
                          ConstTensorView weights, TensorView loss);
void BceWithLogitsBackward(const ExecContext& ctx, double grad_scale, ConstTensorView logits,
                           ConstTensorView labels, ConstTensorView weights, TensorView grad_logits);

namespace internal {
void BceWithLogitsForwardCpu(ConstTensorView logits, ConstTensorView labels,
                             ConstTensorView weights, TensorView loss);
void BceWithLogitsForwardCuda(ConstTensorView logits, ConstTensorView labels,
                              ConstTensorView weights, TensorView loss, Stream stream);
void BceWithLogitsBackwardCpu(double grad_scale, ConstTensorView logits, ConstTensorView labels,
                              ConstTensorView weights, TensorView grad_logits);
void BceWithLogitsBackwardCuda(double grad_scale, ConstTensorView logits, ConstTensorView labels,
                               ConstTensorView weights, TensorView grad_logits, Stream stream);
}  // namespace internal

}  // namespace loom::ops

#endif  // LOOM_MODEL_OPS_BCE_LOSS_H_
