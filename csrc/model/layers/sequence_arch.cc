#include "csrc/model/layers/sequence_arch.h"

#include "csrc/model/ops/elementwise.h"
#include "csrc/model/ops/layer_norm.h"
#include "csrc/model/ops/op_util.h"
#include "csrc/model/ops/reduce.h"

namespace loom::layers {

StatusOr<std::unique_ptr<SequenceArch>> SequenceArch::Create(const SequenceArchConfig& config,
                                                             const TensorSpec& input,
                                                             ParameterStore* store,
                                                             const std::string& prefix,
                                                             Device device) {
  LOOM_RETURN_IF_ERROR(Check(input.shape.rank() == 3 && input.shape[2] == config.pffn.d, prefix,
                             "input " + input.ToString() + " must be (B, T', d)"));
  std::unique_ptr<SequenceArch> a(new SequenceArch());
  a->config_ = config;
  const int64_t b = input.shape[0], t = input.shape[1], d = config.pffn.d;
  const int64_t n_cls = config.pffn.n_cls;
  const DType dt = input.dtype;
  LOOM_ASSIGN_OR_RETURN(a->pffn_,
                        Pffn::Create(config.pffn, input, store, JoinName(prefix, "pffn"), device));
  MhaConfig mc;
  mc.d = d;
  mc.heads = config.heads;
  mc.rope = config.rope;
  mc.rope_base = config.rope_base;
  LOOM_ASSIGN_OR_RETURN(
      a->mha_, MultiHeadAttention::Create(mc, input, store, JoinName(prefix, "attn"), device));
  if (a->pre_ln()) {
    LOOM_RETURN_IF_ERROR(Check(ops::ScalarDType(dt) == dt, prefix,
                               "LayerNorm parameters need the activation dtype"));
    a->ln1_gamma_ =
        store->Add(JoinName(prefix, "pffn_norm.weight"), Shape{d}, model::InitRule::Ones());
    a->ln1_beta_ =
        store->Add(JoinName(prefix, "pffn_norm.bias"), Shape{d}, model::InitRule::Zeros());
    a->ln2_gamma_ =
        store->Add(JoinName(prefix, "attn_norm.weight"), Shape{d}, model::InitRule::Ones());
    a->ln2_beta_ =
        store->Add(JoinName(prefix, "attn_norm.bias"), Shape{d}, model::InitRule::Zeros());
    a->n1_ = NewBuffer(input.shape, dt, device);
    a->n2_ = NewBuffer(input.shape, dt, device);
    a->s1_ = NewBuffer(input.shape, dt, device);
    a->mean1_ = NewBuffer(Shape{b, t}, dt, device);
    a->rstd1_ = NewBuffer(Shape{b, t}, dt, device);
    a->mean2_ = NewBuffer(Shape{b, t}, dt, device);
    a->rstd2_ = NewBuffer(Shape{b, t}, dt, device);
    a->out_ = NewBuffer(input.shape, dt, device);
    a->grad_s1_ = NewBuffer(input.shape, dt, device);
  }
  if (config.const_xsum) {
    a->const_xsum_ =
        store->Add(JoinName(prefix, "const_xsum"), Shape{n_cls, d}, model::InitRule::Normal(0.02));
    a->ctx_bcast_ = NewBuffer(Shape{b, n_cls, d}, dt, device);
    a->grad_ctx_ = NewBuffer(Shape{b, n_cls, d}, dt, device);
  }
  a->grad_n_ = NewBuffer(input.shape, dt, device);
  a->grad_p_ = NewBuffer(input.shape, dt, device);
  return a;
}

ConstTensorView SequenceArch::Forward(const ExecContext& ctx, ConstTensorView s,
                                      ConstTensorView ctx_tokens, ConstTensorView key_mask,
                                      ConstTensorView rows) {
  b_ = s.dim(0);
  s_ = s;
  if (config_.const_xsum) {
    CHECK(ctx_tokens.empty()) << "SequenceArch: const_xsum takes no context input";
    TensorView c = Rows(ctx_bcast_, b_);
    ops::SumDimArgs sd;
    sd.dim = 0;
    ops::SumDimBackward(ctx, sd, const_xsum_->value, c);  // broadcast over the batch
    ctx_ = c;
  } else {
    ctx_ = ctx_tokens;
  }
  if (!pre_ln()) {
    ConstTensorView p = pffn_->Forward(ctx, ctx_, s);
    return mha_->Forward(ctx, p, key_mask, rows);
  }
  ops::LayerNormArgs ln;
  ln.epsilon = config_.layer_norm_eps;
  TensorView n1 = Rows(n1_, b_), s1 = Rows(s1_, b_), n2 = Rows(n2_, b_), out = Rows(out_, b_);
  ops::LayerNormForward(ctx, ln, s, ln1_gamma_->value, ln1_beta_->value, n1, Rows(mean1_, b_),
                        Rows(rstd1_, b_));
  ops::Add(ctx, s, pffn_->Forward(ctx, ctx_, n1), s1);
  ops::LayerNormForward(ctx, ln, s1, ln2_gamma_->value, ln2_beta_->value, n2, Rows(mean2_, b_),
                        Rows(rstd2_, b_));
  ops::Add(ctx, s1, mha_->Forward(ctx, n2, key_mask, rows), out);
  return out;
}

void SequenceArch::Backward(const ExecContext& ctx, ConstTensorView grad_out, TensorView grad_s,
                            TensorView grad_ctx) {
  TensorView gctx = grad_ctx;
  if (config_.const_xsum) {
    CHECK(grad_ctx.empty()) << "SequenceArch: const_xsum has no context gradient output";
    gctx = Rows(grad_ctx_, b_);
  }
  TensorView gn = Rows(grad_n_, b_), gp = Rows(grad_p_, b_);
  if (!pre_ln()) {
    mha_->Backward(ctx, grad_out, gp);
    pffn_->Backward(ctx, gp, gctx, grad_s);
  } else {
    TensorView gs1 = Rows(grad_s1_, b_);
    // S' = S1 + MHA(LN2(S1)).
    mha_->Backward(ctx, grad_out, gn);
    ops::LayerNormBackward(ctx, gn, CRows(s1_, b_), ln2_gamma_->value, CRows(mean2_, b_),
                           CRows(rstd2_, b_), gs1, ln2_gamma_->grad, ln2_beta_->grad);
    ops::Add(ctx, gs1, grad_out, gs1);
    // S1 = S + PFFN(ctx, LN1(S)).
    pffn_->Backward(ctx, gs1, gctx, gn);
    ops::LayerNormBackward(ctx, gn, s_, ln1_gamma_->value, CRows(mean1_, b_), CRows(rstd1_, b_),
                           grad_s, ln1_gamma_->grad, ln1_beta_->grad);
    ops::Add(ctx, grad_s, gs1, grad_s);
  }
  if (config_.const_xsum) {
    ops::SumDimArgs sd;
    sd.dim = 0;
    sd.accumulate = true;
    ops::SumDim(ctx, sd, gctx, const_xsum_->grad);
  }
}

}  // namespace loom::layers
