#include "csrc/model/layers/mha.h"

#include "csrc/model/layers/row_gather.h"
#include "csrc/model/ops/attention.h"
#include "csrc/model/ops/elementwise.h"
#include "csrc/model/ops/linear.h"
#include "csrc/model/ops/reduce.h"
#include "csrc/model/ops/rope.h"
#include "csrc/model/ops/tokens.h"

namespace loom::layers {

StatusOr<std::unique_ptr<MultiHeadAttention>> MultiHeadAttention::Create(const MhaConfig& config,
                                                                         const TensorSpec& input,
                                                                         ParameterStore* store,
                                                                         const std::string& prefix,
                                                                         Device device) {
  LOOM_RETURN_IF_ERROR(
      Check(input.shape.rank() == 3 && input.shape[2] == config.d, prefix,
            "input " + input.ToString() + " must be (B, T, d=" + std::to_string(config.d) + ")"));
  LOOM_RETURN_IF_ERROR(Check(
      config.heads >= 1 && config.d % config.heads == 0, prefix,
      "heads " + std::to_string(config.heads) + " must divide d " + std::to_string(config.d)));
  std::unique_ptr<MultiHeadAttention> m(new MultiHeadAttention());
  m->config_ = config;
  m->hd_ = config.d / config.heads;
  LOOM_RETURN_IF_ERROR(Check(!config.rope || m->hd_ % 2 == 0, prefix,
                             "RoPE needs an even head_dim, got " + std::to_string(m->hd_)));
  const int64_t b = input.shape[0], t = input.shape[1], d = config.d;
  const bool learned = config.num_queries > 0;
  const int64_t tq = learned ? config.num_queries : t;
  const DType dt = input.dtype;
  const LinearConfig lc{d, d, true, ops::Activation::kIdentity, std::nullopt};
  // Registration order q, k, v, o (weight then bias each), as the reference.
  auto add = [&](const char* name) {
    const std::string p = JoinName(prefix, name);
    m->stacked_w_.push_back(store->Add(p + ".weight", Shape{d, d}, WeightInit(d)));
    m->stacked_b_.push_back(store->Add(p + ".bias", Shape{d}, model::InitRule::Zeros()));
  };
  if (learned) {
    LOOM_ASSIGN_OR_RETURN(m->q_, Linear::Create(lc, TensorSpec{Shape{config.num_queries, d}, dt},
                                                store, JoinName(prefix, "q"), device));
  } else {
    add("q");
  }
  add("k");
  add("v");
  LOOM_ASSIGN_OR_RETURN(m->o_, Linear::Create(lc, TensorSpec{Shape{b * tq, d}, dt}, store,
                                              JoinName(prefix, "o"), device));
  ops::AttentionArgs aargs;
  LOOM_RETURN_IF_ERROR(ops::ValidateAttention(aargs, device,
                                              TensorSpec{Shape{b, tq, config.heads, m->hd_}, dt},
                                              TensorSpec{Shape{b, t, config.heads, m->hd_}, dt},
                                              TensorSpec{Shape{b, t, config.heads, m->hd_}, dt},
                                              TensorSpec{Shape{b, t}, DType::kU8})
                           .WithContext(prefix));
  const int64_t p = static_cast<int64_t>(m->stacked_w_.size());
  m->w_stack_ = NewBuffer(Shape{p * d, d}, dt, device);
  m->b_stack_ = NewBuffer(Shape{p * d}, dt, device);
  m->gw_stack_ = NewBuffer(Shape{p * d, d}, dt, device);
  m->gb_stack_ = NewBuffer(Shape{p * d}, dt, device);
  m->proj_ = NewBuffer(Shape{b * t, p * d}, dt, device);
  m->grad_proj_ = NewBuffer(Shape{b * t, p * d}, dt, device);
  m->x_packed_ = NewBuffer(Shape{b * t, d}, dt, device);
  m->grad_x_packed_ = NewBuffer(Shape{b * t, d}, dt, device);
  // Zero-initialized: rows a packed forward does not write keep finite values.
  m->q_buf_ = Tensor::Zeros(Shape{b * tq, d}, dt, device);
  m->k_buf_ = Tensor::Zeros(Shape{b * t, d}, dt, device);
  m->v_buf_ = Tensor::Zeros(Shape{b * t, d}, dt, device);
  if (learned) m->grad_qsum_ = NewBuffer(Shape{config.num_queries, d}, dt, device);
  const TensorSpec lse = ops::AttentionLseSpec(TensorSpec{Shape{b, tq, config.heads, m->hd_}, dt});
  m->att_ = NewBuffer(Shape{b * tq, d}, dt, device);
  m->lse_ = NewBuffer(lse.shape, lse.dtype, device);
  m->att_packed_ = NewBuffer(Shape{b * tq, d}, dt, device);
  m->out_ = NewBuffer(Shape{b * tq, d}, dt, device);
  m->grad_out_packed_ = NewBuffer(Shape{b * tq, d}, dt, device);
  m->grad_att_ = NewBuffer(Shape{b * tq, d}, dt, device);
  m->grad_q_ = NewBuffer(Shape{b * tq, d}, dt, device);
  m->grad_k_ = NewBuffer(Shape{b * t, d}, dt, device);
  m->grad_v_ = NewBuffer(Shape{b * t, d}, dt, device);
  return m;
}

void MultiHeadAttention::ProjectStacked(const ExecContext& ctx, ConstTensorView x) {
  const int64_t d = config_.d, n = ProjRows();
  const int64_t p = static_cast<int64_t>(stacked_w_.size());
  // Stack the current weights: (P, d, d) and (P, d, 1) as token concatenations.
  std::vector<ConstTensorView> ws, bs;
  for (int64_t i = 0; i < p; ++i) {
    ws.push_back(stacked_w_[i]->value.Reshape(Shape{1, d, d}));
    bs.push_back(stacked_b_[i]->value.Reshape(Shape{1, d, 1}));
  }
  ops::ConcatTokens(ctx, ws, w_stack_.view().Reshape(Shape{1, p * d, d}));
  ops::ConcatTokens(ctx, bs, b_stack_.view().Reshape(Shape{1, p * d, 1}));
  const ConstTensorView x2 = x.Reshape(Shape{b_ * t_, d});
  if (packed()) {
    TensorView xp = Rows(x_packed_, n);
    GatherRows(ctx, x2, rows_, 0, xp);
    x_proj_ = xp;
  } else {
    x_proj_ = x2;
  }
  TensorView proj = Rows(proj_, n);
  ops::LinearForward(ctx, ops::LinearArgs{}, x_proj_, w_stack_.view(), b_stack_.view(), proj,
                     TensorView());
  std::vector<TensorView> outs;
  if (p == 3) outs.push_back(Rows(q_buf_, b_ * t_));
  outs.push_back(Rows(k_buf_, b_ * t_));
  outs.push_back(Rows(v_buf_, b_ * t_));
  if (packed()) {
    for (int64_t i = 0; i < p; ++i) ScatterRows(ctx, proj, i * d, rows_, outs[i]);
  } else {
    // Split the columns into contiguous q, k, v (the layout the attention op reads).
    for (TensorView& o : outs) o = o.Reshape(Shape{n, d, 1});
    ops::SplitTokens(ctx, proj.Reshape(Shape{n, p * d, 1}), outs);
  }
}

void MultiHeadAttention::BackwardStacked(const ExecContext& ctx,
                                         const std::vector<ConstTensorView>& grads,
                                         TensorView grad_x) {
  const int64_t d = config_.d, n = ProjRows();
  const int64_t p = static_cast<int64_t>(stacked_w_.size());
  TensorView gproj = Rows(grad_proj_, n);
  if (packed()) {
    for (int64_t i = 0; i < p; ++i) {
      GatherRows(ctx, grads[i].Reshape(Shape{b_ * t_, d}), rows_, i * d, gproj);
    }
  } else {
    std::vector<ConstTensorView> parts;
    for (const ConstTensorView& g : grads) parts.push_back(g.Reshape(Shape{n, d, 1}));
    ops::ConcatTokens(ctx, parts, gproj.Reshape(Shape{n, p * d, 1}));
  }
  ZeroTensor(gw_stack_.view(), ctx.stream);
  ZeroTensor(gb_stack_.view(), ctx.stream);
  TensorView gx = packed() ? Rows(grad_x_packed_, n) : grad_x.Reshape(Shape{n, d});
  ops::LinearBackward(ctx, gproj, x_proj_, w_stack_.view(), gx, gw_stack_.view(), gb_stack_.view());
  if (packed()) {
    ZeroTensor(grad_x, ctx.stream);
    ScatterRows(ctx, gx, 0, rows_, grad_x.Reshape(Shape{b_ * t_, d}));
  }
  for (int64_t i = 0; i < p; ++i) {
    ops::CopyTokensArgs a;
    a.src_begin = i * d;
    a.count = d;
    a.accumulate = true;
    ops::CopyTokens(ctx, a, gw_stack_.cview().Reshape(Shape{1, p * d, d}),
                    stacked_w_[i]->grad.Reshape(Shape{1, d, d}));
    ops::CopyTokens(ctx, a, gb_stack_.cview().Reshape(Shape{1, p * d, 1}),
                    stacked_b_[i]->grad.Reshape(Shape{1, d, 1}));
  }
}

ConstTensorView MultiHeadAttention::Attend(const ExecContext& ctx) {
  const int64_t b = b_, d = config_.d;
  TensorView att = Rows(att_, b * tq_);
  ops::AttentionForward(ctx, ops::AttentionArgs{}, CRows(q_buf_, b * tq_).Reshape(Heads(b, tq_)),
                        CRows(k_buf_, b * t_).Reshape(Heads(b, t_)),
                        CRows(v_buf_, b * t_).Reshape(Heads(b, t_)), key_mask_,
                        att.Reshape(Heads(b, tq_)), Rows(lse_, b));
  if (packed() && config_.num_queries == 0) {
    // The output projection on the listed positions; the others' output is 0.
    const int64_t n = rows_.dim(0);
    TensorView ap = Rows(att_packed_, n);
    GatherRows(ctx, att, rows_, 0, ap);
    const ConstTensorView y = o_->Forward(ctx, ap);
    TensorView out = Rows(out_, b * tq_);
    ZeroTensor(out, ctx.stream);
    ScatterRows(ctx, y, 0, rows_, out);
    return out.Reshape(Shape{b, tq_, d});
  }
  return o_->Forward(ctx, att).Reshape(Shape{b, tq_, d});
}

ConstTensorView MultiHeadAttention::Forward(const ExecContext& ctx, ConstTensorView x,
                                            ConstTensorView key_mask, ConstTensorView rows) {
  CHECK_EQ(config_.num_queries, 0) << "Forward is the self-attention form";
  b_ = x.dim(0);
  t_ = tq_ = x.dim(1);
  key_mask_ = key_mask;
  x_ = x;
  rows_ = rows;
  ProjectStacked(ctx, x);
  if (config_.rope) {
    ops::RopeArgs r;
    r.base = config_.rope_base;
    TensorView q = Rows(q_buf_, b_ * t_).Reshape(Heads(b_, t_));
    TensorView k = Rows(k_buf_, b_ * t_).Reshape(Heads(b_, t_));
    ops::RopeForward(ctx, r, q, q);
    ops::RopeForward(ctx, r, k, k);
  }
  return Attend(ctx);
}

ConstTensorView MultiHeadAttention::ForwardQueries(const ExecContext& ctx, ConstTensorView queries,
                                                   ConstTensorView x, ConstTensorView key_mask,
                                                   ConstTensorView rows) {
  CHECK_GT(config_.num_queries, 0) << "ForwardQueries is the learned-query form";
  b_ = x.dim(0);
  t_ = x.dim(1);
  tq_ = config_.num_queries;
  key_mask_ = key_mask;
  x_ = x;
  rows_ = rows;
  ConstTensorView q1 = q_->Forward(ctx, queries);  // (Nq, d), once for the batch
  // Broadcast over the batch: the backward of a sum over dim 0.
  ops::SumDimArgs s;
  s.dim = 0;
  ops::SumDimBackward(ctx, s, q1, Rows(q_buf_, b_ * tq_).Reshape(Shape{b_, tq_, config_.d}));
  ProjectStacked(ctx, x);
  return Attend(ctx);
}

void MultiHeadAttention::Backward(const ExecContext& ctx, ConstTensorView grad_out,
                                  TensorView grad_x, TensorView grad_queries) {
  const int64_t b = b_, d = config_.d;
  TensorView grad_att = Rows(grad_att_, b * tq_);
  const ConstTensorView go = grad_out.Reshape(Shape{b * tq_, d});
  if (packed() && config_.num_queries == 0) {
    const int64_t n = rows_.dim(0);
    TensorView gop = Rows(grad_out_packed_, n), gap = Rows(grad_x_packed_, n);
    GatherRows(ctx, go, rows_, 0, gop);
    o_->Backward(ctx, gop, gap);
    ZeroTensor(grad_att, ctx.stream);  // unlisted queries: no gradient
    ScatterRows(ctx, gap, 0, rows_, grad_att);
  } else {
    o_->Backward(ctx, go, grad_att);
  }
  TensorView gq = Rows(grad_q_, b * tq_), gk = Rows(grad_k_, b * t_), gv = Rows(grad_v_, b * t_);
  ops::AttentionBackward(ctx, ops::AttentionArgs{}, CRows(q_buf_, b * tq_).Reshape(Heads(b, tq_)),
                         CRows(k_buf_, b * t_).Reshape(Heads(b, t_)),
                         CRows(v_buf_, b * t_).Reshape(Heads(b, t_)), key_mask_,
                         CRows(att_, b * tq_).Reshape(Heads(b, tq_)), CRows(lse_, b),
                         grad_att.Reshape(Heads(b, tq_)), gq.Reshape(Heads(b, tq_)),
                         gk.Reshape(Heads(b, t_)), gv.Reshape(Heads(b, t_)));
  if (config_.rope) {
    ops::RopeArgs r;
    r.base = config_.rope_base;
    ops::RopeBackward(ctx, r, gq.Reshape(Heads(b, tq_)), gq.Reshape(Heads(b, tq_)));
    ops::RopeBackward(ctx, r, gk.Reshape(Heads(b, t_)), gk.Reshape(Heads(b, t_)));
  }
  if (config_.num_queries > 0) {
    BackwardStacked(ctx, {gk, gv}, grad_x);
    TensorView gsum = grad_qsum_.view();
    ops::SumDimArgs s;
    s.dim = 0;
    ops::SumDim(ctx, s, gq.Reshape(Shape{b, tq_, d}), gsum);
    q_->Backward(ctx, gsum, grad_queries);
  } else {
    BackwardStacked(ctx, {gq, gk, gv}, grad_x);
  }
}

// ---------------------------------------------------------------------------------------------

StatusOr<std::unique_ptr<Pma>> Pma::Create(int64_t num_queries, int64_t heads,
                                           const TensorSpec& input, ParameterStore* store,
                                           const std::string& prefix, Device device) {
  LOOM_RETURN_IF_ERROR(Check(num_queries >= 1, prefix, "num_queries must be >= 1"));
  LOOM_RETURN_IF_ERROR(Check(input.shape.rank() == 3, prefix, "input must be (B, T, d)"));
  std::unique_ptr<Pma> p(new Pma());
  const int64_t d = input.shape[2];
  p->query_ =
      store->Add(JoinName(prefix, "query"), Shape{num_queries, d}, model::InitRule::Normal(0.02));
  MhaConfig mc;
  mc.d = d;
  mc.heads = heads;
  mc.rope = false;
  mc.num_queries = num_queries;
  LOOM_ASSIGN_OR_RETURN(
      p->attn_, MultiHeadAttention::Create(mc, input, store, JoinName(prefix, "attn"), device));
  p->grad_query_ = NewBuffer(Shape{num_queries, d}, input.dtype, device);
  return p;
}

ConstTensorView Pma::Forward(const ExecContext& ctx, ConstTensorView s, ConstTensorView key_mask,
                             ConstTensorView rows) {
  return attn_->ForwardQueries(ctx, query_->value, s, key_mask, rows);
}

void Pma::Backward(const ExecContext& ctx, ConstTensorView grad_out, TensorView grad_s) {
  attn_->Backward(ctx, grad_out, grad_s, grad_query_.view());
  ops::Axpy(ctx, 1.0, grad_query_.view(), query_->grad);
}

}  // namespace loom::layers
