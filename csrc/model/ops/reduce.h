// Reductions the layers need.
//
// SumDim: sum over one dimension. x is viewed as (O, N, I): N = x.dim(dim), O the product of
// the dims before it, I the product of the dims after it; y has x's shape without `dim`:
//   y[o, i] = Σ_n x[o, n, i]                 (args.accumulate: y[o, i] += Σ_n x[o, n, i])
// SumDimBackward (the broadcast): grad_x[o, n, i] = grad_y[o, i], overwritten (=).
// Sums run in a fixed order independent of the thread count (CPU: chunks of N with double
// partials; CUDA: a two-pass reduction with fp32 partials): deterministic, no atomics.
// accumulate is how parameter gradients (+=) such as a bias gradient use it.
//
// MaskedMeanTokens: mean over the valid tokens of each row (SOLE mode's sequence tokens):
//   x (B, T, D)   mask (B, T) u8 (nonzero = valid)   y (B, D)
//   y[b, :] = Σ_t mask[b,t] · x[b, t, :] / max(Σ_t mask[b,t], 1)   (0 for a row with no valid
//   token)
// MaskedMeanTokensBackward: grad_x[b, t, :] = mask[b,t] · grad_y[b, :] / max(count_b, 1) (=).
//
// Dtypes: CPU f32, f64; CUDA f32, f64, bf16 (fp32 accumulation).
#ifndef LOOM_MODEL_OPS_REDUCE_H_
#define LOOM_MODEL_OPS_REDUCE_H_

#include "csrc/core/device.h"
#include "csrc/core/status.h"
#include "csrc/core/tensor.h"

namespace loom::ops {

struct SumDimArgs {
  int dim = 0;              // negative counts from the end
  bool accumulate = false;  // y += instead of y =
};

Status ValidateSumDim(const SumDimArgs& args, const TensorSpec& x, const TensorSpec& y);
void SumDim(const ExecContext& ctx, const SumDimArgs& args, ConstTensorView x, TensorView y);
void SumDimBackward(const ExecContext& ctx, const SumDimArgs& args, ConstTensorView grad_y,
                    TensorView grad_x);

Status ValidateMaskedMeanTokens(const TensorSpec& x, const TensorSpec& mask, const TensorSpec& y);
void MaskedMeanTokens(const ExecContext& ctx, ConstTensorView x, ConstTensorView mask,
                      TensorView y);
void MaskedMeanTokensBackward(const ExecContext& ctx, ConstTensorView grad_y, ConstTensorView mask,
                              TensorView grad_x);

namespace internal {
// x as (outer, n, inner); y as (outer, inner).
void SumDimCpu(int64_t outer, int64_t n, int64_t inner, bool accumulate, ConstTensorView x,
               TensorView y);
void SumDimCuda(int64_t outer, int64_t n, int64_t inner, bool accumulate, ConstTensorView x,
                TensorView y, Stream stream);
void SumDimBackwardCpu(int64_t outer, int64_t n, int64_t inner, ConstTensorView grad_y,
                       TensorView grad_x);
void SumDimBackwardCuda(int64_t outer, int64_t n, int64_t inner, ConstTensorView grad_y,
                        TensorView grad_x, Stream stream);
void MaskedMeanTokensCpu(ConstTensorView x, ConstTensorView mask, TensorView y);
void MaskedMeanTokensCuda(ConstTensorView x, ConstTensorView mask, TensorView y, Stream stream);
void MaskedMeanTokensBackwardCpu(ConstTensorView grad_y, ConstTensorView mask, TensorView grad_x);
void MaskedMeanTokensBackwardCuda(ConstTensorView grad_y, ConstTensorView mask, TensorView grad_x,
                                  Stream stream);
}  // namespace internal

}  // namespace loom::ops

#endif  // LOOM_MODEL_OPS_REDUCE_H_
