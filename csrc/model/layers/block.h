// One InterFormer layer l (docs/model.md §3 step 4): the interaction arch and the sequence arch,
// given the layer-l summaries computed by cross arch l (cross_arch.h; owned by the model so
// that parameters register in the reference's order).
//
//   interaction path:  Z = concat_tokens(X, S_sum) (feed_ssum) or X;  X' = Interaction_l(Z)
//   sequence path:     S' = Sequence_l(S, ctx, km),  ctx = X_sum (INT, N2S) or const_xsum
//
// The two paths read only the layer-l inputs (X, S, X_sum, S_sum) and write disjoint buffers
// (spec §6.4): each runs on its own ExecContext, so they can go to two CUDA streams. The same
// holds for the two backward paths; the caller joins their input gradients.
// Parameters, in order: layers.<l>.interaction.* then layers.<l>.sequence.* (absent in SOLE).
#ifndef LOOM_MODEL_LAYERS_BLOCK_H_
#define LOOM_MODEL_LAYERS_BLOCK_H_

#include <memory>
#include <string>

#include "csrc/model/layers/interaction_arch.h"
#include "csrc/model/layers/layer.h"
#include "csrc/model/layers/sequence_arch.h"

namespace loom::layers {

struct BlockConfig {
  InteractionArchConfig interaction;
  bool feed_ssum = true;     // S_sum joins the interaction input
  int64_t n_s = 0;           // S_sum rows (when feed_ssum)
  bool has_sequence = true;  // false in SOLE
  SequenceArchConfig sequence;
};

class InterFormerBlock {
 public:
  // x (B, N_x, d); s (B, T', d) (ignored without has_sequence).
  static StatusOr<std::unique_ptr<InterFormerBlock>> Create(
      const BlockConfig& config, const TensorSpec& x, const TensorSpec& s, ParameterStore* store,
      const std::string& prefix, Device device);

  // ssum: (B, n_s, d) when feed_ssum, else empty. Returns X' (B, N_x, d).
  ConstTensorView ForwardInteraction(const ExecContext& ctx, ConstTensorView x,
                                     ConstTensorView ssum);
  // xsum: (B, n_cls, d), or empty with const_xsum. Returns S' (B, T', d).
  // rows: packed positions for the MHA projections (mha.h), or empty.
  ConstTensorView ForwardSequence(const ExecContext& ctx, ConstTensorView s, ConstTensorView xsum,
                                  ConstTensorView key_mask,
                                  ConstTensorView rows = ConstTensorView());
  // grad_x (B, N_x, d) and grad_ssum (B, n_s, d; feed_ssum only) overwritten.
  void BackwardInteraction(const ExecContext& ctx, ConstTensorView grad_out, TensorView grad_x,
                           TensorView grad_ssum);
  // grad_s (B, T', d) and grad_xsum (B, n_cls, d; empty with const_xsum) overwritten.
  void BackwardSequence(const ExecContext& ctx, ConstTensorView grad_out, TensorView grad_s,
                        TensorView grad_xsum);

 private:
  InterFormerBlock() = default;
  BlockConfig config_;
  std::unique_ptr<InteractionArch> interaction_;
  std::unique_ptr<SequenceArch> sequence_;
  Tensor z_, grad_z_;
  int64_t nx_ = 0;
};

}  // namespace loom::layers

#endif  // LOOM_MODEL_LAYERS_BLOCK_H_
