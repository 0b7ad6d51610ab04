#include "csrc/model/layers/pffn.h"

#include <cmath>

#include "csrc/model/ops/gemm.h"

namespace loom::layers {

StatusOr<std::unique_ptr<Pffn>> Pffn::Create(const PffnConfig& config, const TensorSpec& input,
                                             ParameterStore* store, const std::string& prefix,
                                             Device device) {
  LOOM_RETURN_IF_ERROR(
      Check(input.shape.rank() == 3 && input.shape[2] == config.d, prefix,
            "input " + input.ToString() + " must be (B, T, d=" + std::to_string(config.d) + ")"));
  LOOM_RETURN_IF_ERROR(Check(config.n_cls >= 1, prefix, "n_cls must be >= 1"));
  std::unique_ptr<Pffn> p(new Pffn());
  p->config_ = config;
  const int64_t b = input.shape[0], t = input.shape[1], d = config.d;
  const DType dt = input.dtype;
  if (p->low_rank()) {
    // Registered as "<prefix>.weight" (a bias-free Linear named by the prefix itself).
    LinearConfig lc{d, config.n_cls, false, ops::Activation::kIdentity, std::nullopt};
    LOOM_ASSIGN_OR_RETURN(p->wp_, Linear::Create(lc, input, store, prefix, device));
    p->grad_c_ = NewBuffer(Shape{b, t, config.n_cls}, dt, device);
  } else {
    LOOM_RETURN_IF_ERROR(
        Check(config.hypernet_hidden >= 1, prefix, "hypernet hidden width must be >= 1"));
    MlpConfig mc;
    mc.in = config.n_cls * d;
    mc.widths = {config.hypernet_hidden, d * d};
    mc.names = {"fc1", "fc2"};
    mc.hidden_activation = ops::Activation::kSilu;
    mc.weight_init = {
        std::nullopt,
        model::InitRule::Uniform(1.0 / std::sqrt(static_cast<double>(config.hypernet_hidden * d)))};
    LOOM_ASSIGN_OR_RETURN(p->hyper_, Mlp::Create(mc, TensorSpec{Shape{b, config.n_cls * d}, dt},
                                                 store, prefix, device));
    p->grad_wf_ = NewBuffer(Shape{b, d * d}, dt, device);
  }
  p->p_ = NewBuffer(input.shape, dt, device);
  return p;
}

ConstTensorView Pffn::Forward(const ExecContext& ctx, ConstTensorView ctx_tokens,
                              ConstTensorView u) {
  b_ = u.dim(0);
  t_ = u.dim(1);
  ctx_ = ctx_tokens;
  u_ = u;
  const int64_t d = config_.d;
  TensorView p = Rows(p_, b_);
  if (low_rank()) {
    ConstTensorView c = wp_->Forward(ctx, u);                  // (B, T, n_cls)
    ops::GemmBatched(ctx, ops::GemmArgs{}, c, ctx_tokens, p);  // P[b] = C[b] ctx[b]
  } else {
    ConstTensorView wf =
        hyper_->Forward(ctx, ctx_tokens.Reshape(Shape{b_, config_.n_cls * d}));  // (B, d·d)
    ops::GemmArgs a;
    a.trans_b = true;  // P[b] = U[b] Wf[b]ᵀ
    ops::GemmBatched(ctx, a, u, wf.Reshape(Shape{b_, d, d}), p);
  }
  return p;
}

void Pffn::Backward(const ExecContext& ctx, ConstTensorView grad_p, TensorView grad_ctx,
                    TensorView grad_u) {
  const int64_t d = config_.d;
  if (low_rank()) {
    ConstTensorView c = wp_->output();
    TensorView grad_c = Rows(grad_c_, b_);
    ops::GemmArgs a;
    a.trans_b = true;  // grad_C[b] = grad_P[b] ctx[b]ᵀ
    ops::GemmBatched(ctx, a, grad_p, ctx_, grad_c);
    ops::GemmArgs t;
    t.trans_a = true;  // grad_ctx[b] = C[b]ᵀ grad_P[b]
    ops::GemmBatched(ctx, t, c, grad_p, grad_ctx);
    wp_->Backward(ctx, grad_c, grad_u);
  } else {
    ConstTensorView wf = hyper_->layer(1).output().Reshape(Shape{b_, d, d});
    ops::GemmBatched(ctx, ops::GemmArgs{}, grad_p, wf, grad_u);  // grad_U[b] = grad_P[b] Wf[b]
    TensorView grad_wf = Rows(grad_wf_, b_);
    ops::GemmArgs t;
    t.trans_a = true;  // grad_Wf[b] = grad_P[b]ᵀ U[b]
    ops::GemmBatched(ctx, t, grad_p, u_, grad_wf.Reshape(Shape{b_, d, d}));
    hyper_->Backward(ctx, grad_wf, grad_ctx.Reshape(Shape{b_, config_.n_cls * d}));
  }
}

}  // namespace loom::layers
