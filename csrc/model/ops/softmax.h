// Softmax over the last dimension with optional masks, as attention and pooling use it:
//   z[r, c] = scale · x[r, c] + additive_mask[r mod P, c]          (additive_mask optional)
//   valid(r, c) = key_mask[r div (R / K), c] != 0                   (key_mask optional)
//   y[r, c] = valid ? exp(z[r, c] − max_valid z[r, :]) / Σ_valid exp(z[r, :] − max) : 0
// A row with no valid key, or whose valid z are all −inf, is all zeros ("a query whose keys
// are all masked outputs 0", docs/model.md §4.7).
// Shapes (R = rows: all leading dims of x folded; C = the last dim):
//   x, y, grad_x, grad_y : (..., C)                 dtype X
//   additive_mask        : (P, C) or (..., C) with P rows, R % P == 0; dtype ScalarDType(X).
//                          Row r uses row r mod P: a (Tq, Tk) bias shared by every batch and
//                          head when x is (B, H, Tq, Tk).
//   key_mask             : (K, C) or (..., C) with K rows, R % K == 0; u8, nonzero = valid.
//                          Row r uses row r / (R / K): a (B, Tk) key-padding mask for x of
//                          (B, H, Tq, Tk) or (B, Tq, Tk).
// Backward (from the saved output y; masks are not needed since masked y are 0):
//   grad_x[r, :] = scale · y[r, :] ⊙ (grad_y[r, :] − Σ_c grad_y[r, c] · y[r, c])   (=)
// The row max/sum are exact reductions in a fixed order (double on CPU, fp32 on CUDA).
// y may alias x; grad_x may alias grad_y. Dtypes X: CPU f32, f64; CUDA f32, f64, bf16.
#ifndef LOOM_MODEL_OPS_SOFTMAX_H_
#define LOOM_MODEL_OPS_SOFTMAX_H_

#include "csrc/core/device.h"
#include "csrc/core/status.h"
#include "csrc/core/tensor.h"

namespace loom::ops {

struct SoftmaxArgs {
  float scale = 1.0f;  // e.g. 1/sqrt(hd) for attention scores
};

// Masks given as empty specs (rank 0) are absent.
Status ValidateSoftmax(const SoftmaxArgs& args, const TensorSpec& x,
                       const TensorSpec& additive_mask, const TensorSpec& key_mask);

// additive_mask and key_mask may be empty views (absent).
void SoftmaxForward(const ExecContext& ctx, const SoftmaxArgs& args, ConstTensorView x,
                    ConstTensorView additive_mask, ConstTensorView key_mask, TensorView y);
void SoftmaxBackward(const ExecContext& ctx, const SoftmaxArgs& args, ConstTensorView grad_y,
                     ConstTensorView y, TensorView grad_x);

namespace internal {
void SoftmaxForwardCpu(const SoftmaxArgs& args, ConstTensorView x, ConstTensorView additive_mask,
                       ConstTensorView key_mask, TensorView y);
void SoftmaxForwardCuda(const SoftmaxArgs& args, ConstTensorView x, ConstTensorView additive_mask,
                        ConstTensorView key_mask, TensorView y, Stream stream);
void SoftmaxBackwardCpu(const SoftmaxArgs& args, ConstTensorView grad_y, ConstTensorView y,
                        TensorView grad_x);
void SoftmaxBackwardCuda(const SoftmaxArgs& args, ConstTensorView grad_y, ConstTensorView y,
                         TensorView grad_x, Stream stream);
}  // namespace internal

}  // namespace loom::ops

#endif  // LOOM_MODEL_OPS_SOFTMAX_H_
