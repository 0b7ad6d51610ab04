#include "csrc/model/layers/cross_arch.h"

#include "csrc/model/ops/reduce.h"
#include "csrc/model/ops/tokens.h"

namespace loom::layers {

using ops::CopyTokenRange;

StatusOr<std::unique_ptr<CrossArch>> CrossArch::Create(const CrossArchConfig& config,
                                                       const TensorSpec& x, const TensorSpec& s,
                                                       ParameterStore* store,
                                                       const std::string& prefix, Device device) {
  std::unique_ptr<CrossArch> a(new CrossArch());
  a->config_ = config;
  const DType dt = x.dtype;
  if (config.has_x) {
    LOOM_RETURN_IF_ERROR(Check(x.shape.rank() == 3, prefix, "X must be (B, N_x, d)"));
    const int64_t b = x.shape[0], d = x.shape[2];
    LOOM_ASSIGN_OR_RETURN(a->x_lce_,
                          TokenLinear::Create(TokenLinearConfig{x.shape[1], config.n_cls}, x, store,
                                              JoinName(prefix, "x_lce"), device));
    const TensorSpec xs{Shape{b, config.n_cls, d}, dt};
    LOOM_ASSIGN_OR_RETURN(
        a->x_gate_, Gating::Create(config.gating, xs, store, JoinName(prefix, "x_gate"), device));
    a->x_grad_lce_ = NewBuffer(xs.shape, dt, device);
  }
  if (config.has_s) {
    LOOM_RETURN_IF_ERROR(Check(s.shape.rank() == 3, prefix, "S must be (B, T', d)"));
    const int64_t b = s.shape[0], t = s.shape[1], d = s.shape[2];
    LOOM_RETURN_IF_ERROR(Check(config.recent >= 0 && config.recent <= t, prefix,
                               "num_recent_tokens " + std::to_string(config.recent) +
                                   " must be <= T' = " + std::to_string(t)));
    LOOM_RETURN_IF_ERROR(
        Check(config.cls_in_s >= 0 && config.cls_in_s <= t, prefix, "CLS count exceeds T'"));
    LOOM_ASSIGN_OR_RETURN(a->pma_, Pma::Create(config.n_pma, config.heads, s, store,
                                               JoinName(prefix, "pma"), device));
    const TensorSpec ss{Shape{b, a->n_s(), d}, dt};
    LOOM_ASSIGN_OR_RETURN(
        a->s_gate_, Gating::Create(config.gating, ss, store, JoinName(prefix, "s_gate"), device));
    a->cat_ = NewBuffer(ss.shape, dt, device);
    a->grad_cat_ = NewBuffer(ss.shape, dt, device);
    a->grad_pma_ = NewBuffer(Shape{b, config.n_pma, d}, dt, device);
    if (config.recent > 0) {
      a->recent_ = NewBuffer(Shape{b, config.recent, d}, dt, device);
      a->grad_recent_ = NewBuffer(Shape{b, config.recent, d}, dt, device);
      if (config.recent_zero_padding) {
        a->recent_mask_ = NewBuffer(Shape{b, config.recent, 1}, DType::kU8, device);
        a->recent_masked_ = NewBuffer(Shape{b, config.recent, d}, dt, device);
        a->grad_recent_masked_ = NewBuffer(Shape{b, config.recent, d}, dt, device);
      }
    }
  }
  return a;
}

ConstTensorView CrossArch::XSummary(const ExecContext& ctx, ConstTensorView x) {
  CHECK(config_.has_x);
  return x_gate_->Forward(ctx, x_lce_->Forward(ctx, x));
}

void CrossArch::XSummaryBackward(const ExecContext& ctx, ConstTensorView grad_xsum,
                                 TensorView grad_x) {
  TensorView g = Rows(x_grad_lce_, grad_xsum.dim(0));
  x_gate_->Backward(ctx, grad_xsum, g);
  x_lce_->Backward(ctx, g, grad_x);
}

ConstTensorView CrossArch::SSummary(const ExecContext& ctx, ConstTensorView s,
                                    ConstTensorView key_mask, ConstTensorView rows) {
  CHECK(config_.has_s);
  b_ = s.dim(0);
  t_ = s.dim(1);
  const int64_t c = config_.cls_in_s, np = config_.n_pma, k = config_.recent;
  const int64_t d = s.dim(2);
  TensorView cat = Rows(cat_, b_);
  CopyTokenRange(ctx, s, 0, cat, 0, c);  // the CLS positions
  CopyTokenRange(ctx, pma_->Forward(ctx, s, key_mask, rows), 0, cat, c, np);
  if (k > 0) {
    TensorView recent = Rows(recent_, b_);
    CopyTokenRange(ctx, s, t_ - k, recent, 0, k);
    if (config_.recent_zero_padding) {
      // recent ⊙ mask: a masked mean over a single token is x (mask 1) or 0 (mask 0).
      TensorView mask = Rows(recent_mask_, b_);
      CopyTokenRange(ctx, key_mask.Reshape(Shape{b_, t_, 1}), t_ - k, mask, 0, k);
      TensorView masked = Rows(recent_masked_, b_);
      ops::MaskedMeanTokens(ctx, recent.Reshape(Shape{b_ * k, 1, d}),
                            mask.Reshape(Shape{b_ * k, 1}), masked.Reshape(Shape{b_ * k, d}));
      recent = masked;
    }
    CopyTokenRange(ctx, recent, 0, cat, c + np, k);
  }
  return s_gate_->Forward(ctx, cat);
}

void CrossArch::SSummaryBackward(const ExecContext& ctx, ConstTensorView grad_ssum,
                                 TensorView grad_s) {
  const int64_t c = config_.cls_in_s, np = config_.n_pma, k = config_.recent;
  const int64_t d = grad_s.dim(2);
  TensorView grad_cat = Rows(grad_cat_, b_);
  s_gate_->Backward(ctx, grad_ssum, grad_cat);
  TensorView grad_pma = Rows(grad_pma_, b_);
  CopyTokenRange(ctx, grad_cat, c, grad_pma, 0, np);
  pma_->Backward(ctx, grad_pma, grad_s);  // overwrites all T' positions
  CopyTokenRange(ctx, grad_cat, 0, grad_s, 0, c, /*accumulate=*/true);
  if (k > 0) {
    TensorView gr = Rows(grad_recent_, b_);
    CopyTokenRange(ctx, grad_cat, c + np, gr, 0, k);
    if (config_.recent_zero_padding) {
      TensorView gm = Rows(grad_recent_masked_, b_);
      ops::MaskedMeanTokensBackward(ctx, gr.Reshape(Shape{b_ * k, d}),
                                    CRows(recent_mask_, b_).Reshape(Shape{b_ * k, 1}),
                                    gm.Reshape(Shape{b_ * k, 1, d}));
      gr = gm;
    }
    CopyTokenRange(ctx, gr, 0, grad_s, t_ - k, k, /*accumulate=*/true);
  }
}

}  // namespace loom::layers
