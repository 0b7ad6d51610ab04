// Copies along the token axis of (B, N, D) tensors: concatenation, split, slices.
//
//   CopyTokens:   dst[b, dst_begin + j, :] = src[b, src_begin + j, :]   for j < count
//                 (args.accumulate: += instead of =, float dtypes only)
//   ConcatTokens: out = [in_0 ‖ in_1 ‖ …] along N     in_i (B, N_i, D), out (B, Σ N_i, D)
//   SplitTokens:  the inverse, out_i = in[:, offset_i : offset_i + N_i, :]; also the backward
//                 of ConcatTokens (and ConcatTokens is the backward of SplitTokens).
// The backward of a slice (CopyTokens) is CopyTokens back into a zeroed or accumulating
// gradient. Concatenation along the LAST axis (concat_features) is the same op on views
// reshaped to (R, d_i, 1), e.g. x (B, T, d) -> (B·T, d, 1).
//
// Dtypes: any (plain copies move bytes: u8 key masks concatenate too); accumulate needs
// f32/f64 (CPU) or f32/f64/bf16 (CUDA). src and dst must not overlap.
#ifndef LOOM_MODEL_OPS_TOKENS_H_
#define LOOM_MODEL_OPS_TOKENS_H_

#include <vector>

#include "csrc/core/device.h"
#include "csrc/core/status.h"
#include "csrc/core/tensor.h"

namespace loom::ops {

struct CopyTokensArgs {
  int64_t src_begin = 0;
  int64_t dst_begin = 0;
  int64_t count = 0;
  bool accumulate = false;
};

Status ValidateCopyTokens(const CopyTokensArgs& args, const TensorSpec& src, const TensorSpec& dst);
Status ValidateConcatTokens(const std::vector<TensorSpec>& parts, const TensorSpec& whole);

void CopyTokens(const ExecContext& ctx, const CopyTokensArgs& args, ConstTensorView src,
                TensorView dst);
// CopyTokens with its arguments spelled out; nothing at all when count is 0.
inline void CopyTokenRange(const ExecContext& ctx, ConstTensorView src, int64_t src_begin,
                           TensorView dst, int64_t dst_begin, int64_t count,
                           bool accumulate = false) {
  if (count == 0) return;
  CopyTokensArgs a;
  a.src_begin = src_begin;
  a.dst_begin = dst_begin;
  a.count = count;
  a.accumulate = accumulate;
  CopyTokens(ctx, a, src, dst);
}
void ConcatTokens(const ExecContext& ctx, const std::vector<ConstTensorView>& inputs,
                  TensorView out);
void SplitTokens(const ExecContext& ctx, ConstTensorView in,
                 const std::vector<TensorView>& outputs);

namespace internal {
void CopyTokensCpu(const CopyTokensArgs& args, ConstTensorView src, TensorView dst);
void CopyTokensCuda(const CopyTokensArgs& args, ConstTensorView src, TensorView dst, Stream stream);
}  // namespace internal

}  // namespace loom::ops

#endif  // LOOM_MODEL_OPS_TOKENS_H_
