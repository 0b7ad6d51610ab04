#include "csrc/model/layers/block.h"

#include "csrc/model/ops/tokens.h"

namespace loom::layers {

StatusOr<std::unique_ptr<InterFormerBlock>> InterFormerBlock::Create(
    const BlockConfig& config, const TensorSpec& x, const TensorSpec& s, ParameterStore* store,
    const std::string& prefix, Device device) {
  LOOM_RETURN_IF_ERROR(Check(x.shape.rank() == 3, prefix, "X must be (B, N_x, d)"));
  std::unique_ptr<InterFormerBlock> blk(new InterFormerBlock());
  blk->config_ = config;
  const int64_t b = x.shape[0], d = x.shape[2];
  blk->nx_ = x.shape[1];
  TensorSpec z = x;
  if (config.feed_ssum) {
    z.shape = Shape{b, blk->nx_ + config.n_s, d};
    blk->z_ = NewBuffer(z.shape, x.dtype, device);
    blk->grad_z_ = NewBuffer(z.shape, x.dtype, device);
  }
  LOOM_ASSIGN_OR_RETURN(blk->interaction_,
                        InteractionArch::Create(config.interaction, z, store,
                                                JoinName(prefix, "interaction"), device));
  if (config.has_sequence) {
    LOOM_ASSIGN_OR_RETURN(
        blk->sequence_,
        SequenceArch::Create(config.sequence, s, store, JoinName(prefix, "sequence"), device));
  }
  return blk;
}

ConstTensorView InterFormerBlock::ForwardInteraction(const ExecContext& ctx, ConstTensorView x,
                                                     ConstTensorView ssum) {
  if (!config_.feed_ssum) return interaction_->Forward(ctx, x);
  TensorView z = Rows(z_, x.dim(0));
  ops::ConcatTokens(ctx, {x, ssum}, z);
  return interaction_->Forward(ctx, z);
}

ConstTensorView InterFormerBlock::ForwardSequence(const ExecContext& ctx, ConstTensorView s,
                                                  ConstTensorView xsum, ConstTensorView key_mask,
                                                  ConstTensorView rows) {
  CHECK(sequence_ != nullptr);
  return sequence_->Forward(ctx, s, xsum, key_mask, rows);
}

void InterFormerBlock::BackwardInteraction(const ExecContext& ctx, ConstTensorView grad_out,
                                           TensorView grad_x, TensorView grad_ssum) {
  if (!config_.feed_ssum) {
    interaction_->Backward(ctx, grad_out, grad_x);
    return;
  }
  TensorView gz = Rows(grad_z_, grad_out.dim(0));
  interaction_->Backward(ctx, grad_out, gz);
  ops::SplitTokens(ctx, gz, {grad_x, grad_ssum});
}

void InterFormerBlock::BackwardSequence(const ExecContext& ctx, ConstTensorView grad_out,
                                        TensorView grad_s, TensorView grad_xsum) {
  CHECK(sequence_ != nullptr);
  sequence_->Backward(ctx, grad_out, grad_s, grad_xsum);
}

}  // namespace loom::layers
