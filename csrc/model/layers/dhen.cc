#include "csrc/model/layers/dhen.h"

#include "csrc/model/ops/elementwise.h"
#include "csrc/model/ops/gemm.h"
#include "csrc/model/ops/layer_norm.h"
#include "csrc/model/ops/op_util.h"
#include "csrc/model/ops/tokens.h"

namespace loom::layers {

using MC = proto::ModelConfig;

// ---------------------------------------------------------------------------------------------
// DOT

StatusOr<std::unique_ptr<DotModule>> DotModule::Create(const TensorSpec& input,
                                                       ParameterStore* store,
                                                       const std::string& prefix, Device device) {
  LOOM_RETURN_IF_ERROR(Check(input.shape.rank() == 3 && input.shape[1] >= 2, prefix,
                             "input " + input.ToString() + " must be (B, M >= 2, d)"));
  std::unique_ptr<DotModule> m(new DotModule());
  const int64_t b = input.shape[0];
  m->m_ = input.shape[1];
  m->d_ = input.shape[2];
  const int64_t pairs = m->m_ * (m->m_ - 1) / 2;
  const DType dt = input.dtype;
  LinearConfig lc{pairs, m->m_ * m->d_, true, ops::Activation::kIdentity, std::nullopt};
  LOOM_ASSIGN_OR_RETURN(m->dot_,
                        Linear::Create(lc, TensorSpec{Shape{b, pairs}, dt}, store, prefix, device));
  m->gram_ = NewBuffer(Shape{b, m->m_, m->m_}, dt, device);
  m->pairs_ = NewBuffer(Shape{b, pairs}, dt, device);
  m->grad_pairs_ = NewBuffer(Shape{b, pairs}, dt, device);
  m->grad_gram_ = NewBuffer(Shape{b, m->m_, m->m_}, dt, device);
  return m;
}

ConstTensorView DotModule::Forward(const ExecContext& ctx, ConstTensorView z) {
  b_ = z.dim(0);
  z_ = z;
  const int64_t mm = m_;
  TensorView gram = Rows(gram_, b_);
  ops::GemmArgs a;
  a.trans_b = true;  // G[b] = Z[b] Z[b]ᵀ
  ops::GemmBatched(ctx, a, z, z, gram);
  // The strict upper triangle, row by row: row i holds G[i, i+1 .. M−1].
  TensorView pairs = Rows(pairs_, b_);
  const ConstTensorView g3 = gram.Reshape(Shape{b_, mm * mm, 1});
  const TensorView p3 = pairs.Reshape(Shape{b_, mm * (mm - 1) / 2, 1});
  int64_t off = 0;
  for (int64_t i = 0; i + 1 < mm; ++i) {
    ops::CopyTokensArgs c;
    c.src_begin = i * mm + i + 1;
    c.dst_begin = off;
    c.count = mm - 1 - i;
    ops::CopyTokens(ctx, c, g3, p3);
    off += c.count;
  }
  return dot_->Forward(ctx, pairs).Reshape(Shape{b_, mm, d_});
}

void DotModule::Backward(const ExecContext& ctx, ConstTensorView grad_out, TensorView grad_z) {
  const int64_t mm = m_;
  TensorView grad_pairs = Rows(grad_pairs_, b_);
  dot_->Backward(ctx, grad_out.Reshape(Shape{b_, mm * d_}), grad_pairs);
  TensorView grad_gram = Rows(grad_gram_, b_);
  ZeroTensor(grad_gram, ctx.stream);
  const ConstTensorView p3 = grad_pairs.Reshape(Shape{b_, mm * (mm - 1) / 2, 1});
  const TensorView g3 = grad_gram.Reshape(Shape{b_, mm * mm, 1});
  int64_t off = 0;
  for (int64_t i = 0; i + 1 < mm; ++i) {
    ops::CopyTokensArgs c;
    c.src_begin = off;
    c.dst_begin = i * mm + i + 1;
    c.count = mm - 1 - i;
    ops::CopyTokens(ctx, c, p3, g3);
    off += c.count;
  }
  // grad_Z[b] = grad_G[b] Z[b] + grad_G[b]ᵀ Z[b].
  ops::GemmBatched(ctx, ops::GemmArgs{}, grad_gram, z_, grad_z);
  ops::GemmArgs t;
  t.trans_a = true;
  t.beta = 1.0;
  ops::GemmBatched(ctx, t, grad_gram, z_, grad_z);
}

// ---------------------------------------------------------------------------------------------
// DCN

StatusOr<std::unique_ptr<DcnModule>> DcnModule::Create(const DcnConfig& config,
                                                       const TensorSpec& input,
                                                       ParameterStore* store,
                                                       const std::string& prefix, Device device) {
  LOOM_RETURN_IF_ERROR(Check(input.shape.rank() == 3, prefix, "input must be (B, M, d)"));
  LOOM_RETURN_IF_ERROR(
      Check(config.layers >= 1 && config.rank >= 1, prefix, "dcn layers and rank must be >= 1"));
  std::unique_ptr<DcnModule> m(new DcnModule());
  m->config_ = config;
  const int64_t b = input.shape[0];
  m->md_ = input.shape[1] * input.shape[2];
  const DType dt = input.dtype;
  const TensorSpec flat{Shape{b, m->md_}, dt};
  for (int64_t c = 0; c < config.layers; ++c) {
    const std::string cp = JoinName(prefix, "cross." + std::to_string(c));
    LinearConfig down{m->md_, config.rank, false, ops::Activation::kIdentity, std::nullopt};
    LinearConfig up{config.rank, m->md_, true, ops::Activation::kIdentity, std::nullopt};
    LOOM_ASSIGN_OR_RETURN(auto dl, Linear::Create(down, flat, store, JoinName(cp, "down"), device));
    LOOM_ASSIGN_OR_RETURN(auto ul, Linear::Create(up, TensorSpec{Shape{b, config.rank}, dt}, store,
                                                  JoinName(cp, "up"), device));
    m->down_.push_back(std::move(dl));
    m->up_.push_back(std::move(ul));
    m->x_.push_back(NewBuffer(flat.shape, dt, device));
  }
  LinearConfig out{m->md_, m->md_, true, ops::Activation::kIdentity, std::nullopt};
  LOOM_ASSIGN_OR_RETURN(m->out_, Linear::Create(out, flat, store, JoinName(prefix, "out"), device));
  m->grad_x_ = NewBuffer(flat.shape, dt, device);
  m->grad_y_ = NewBuffer(flat.shape, dt, device);
  m->grad_h_ = NewBuffer(Shape{b, config.rank}, dt, device);
  m->grad_tmp_ = NewBuffer(flat.shape, dt, device);
  return m;
}

ConstTensorView DcnModule::Forward(const ExecContext& ctx, ConstTensorView z) {
  b_ = z.dim(0);
  z_shape_ = z.shape();
  z0_ = z.Reshape(Shape{b_, md_});
  ConstTensorView x = z0_;
  for (int64_t c = 0; c < config_.layers; ++c) {
    ConstTensorView h = down_[c]->Forward(ctx, x);
    ConstTensorView y = up_[c]->Forward(ctx, h);
    TensorView xn = Rows(x_[c], b_);
    ops::Mul(ctx, z0_, y, xn);
    ops::Add(ctx, xn, x, xn);
    x = xn;
  }
  return out_->Forward(ctx, x).Reshape(z_shape_);
}

void DcnModule::Backward(const ExecContext& ctx, ConstTensorView grad_out, TensorView grad_z) {
  TensorView gz0 = grad_z.Reshape(Shape{b_, md_});
  TensorView gx = Rows(grad_x_, b_), gy = Rows(grad_y_, b_), tmp = Rows(grad_tmp_, b_);
  TensorView gh = Rows(grad_h_, b_);
  out_->Backward(ctx, grad_out.Reshape(Shape{b_, md_}), gx);
  for (int64_t c = config_.layers - 1; c >= 0; --c) {
    // x_{c+1} = z0 ⊙ y_c + x_c: grad_z0 += gx ⊙ y_c, grad_y_c = gx ⊙ z0.
    const bool last = c == config_.layers - 1;
    ops::MulBackward(ctx, gx, z0_, up_[c]->output(), last ? gz0 : tmp, gy);
    if (!last) ops::Add(ctx, gz0, tmp, gz0);
    up_[c]->Backward(ctx, gy, gh);
    down_[c]->Backward(ctx, gh, tmp);
    ops::Add(ctx, gx, tmp, gx);  // gx is now grad_x_c
  }
  ops::Add(ctx, gz0, gx, gz0);  // x_0 = z0
}

// ---------------------------------------------------------------------------------------------
// DHEN layer

StatusOr<std::unique_ptr<DhenLayer>> DhenLayer::Create(const DhenConfig& config,
                                                       const TensorSpec& input,
                                                       ParameterStore* store,
                                                       const std::string& prefix, Device device) {
  LOOM_RETURN_IF_ERROR(Check(input.shape.rank() == 3, prefix, "input must be (B, M, d)"));
  std::unique_ptr<DhenLayer> l(new DhenLayer());
  l->config_ = config;
  const bool dot = config.backbone != MC::INTERACTION_BACKBONE_DCN;
  const bool dcn = config.backbone != MC::INTERACTION_BACKBONE_DOT;
  if (dot) {
    LOOM_ASSIGN_OR_RETURN(l->dot_,
                          DotModule::Create(input, store, JoinName(prefix, "dot"), device));
  }
  if (dcn) {
    LOOM_ASSIGN_OR_RETURN(
        l->dcn_, DcnModule::Create(config.dcn, input, store, JoinName(prefix, "dcn"), device));
  }
  const int64_t b = input.shape[0], m = input.shape[1], d = input.shape[2];
  const DType sdt = ops::ScalarDType(input.dtype);
  l->gamma_ = store->Add(JoinName(prefix, "norm.weight"), Shape{d}, model::InitRule::Ones());
  l->beta_ = store->Add(JoinName(prefix, "norm.bias"), Shape{d}, model::InitRule::Zeros());
  LOOM_RETURN_IF_ERROR(
      Check(sdt == store->dtype(), prefix, "LayerNorm parameters need the activation dtype"));
  l->acc_ = NewBuffer(input.shape, input.dtype, device);
  l->y_ = NewBuffer(input.shape, input.dtype, device);
  l->mean_ = NewBuffer(Shape{b, m}, sdt, device);
  l->rstd_ = NewBuffer(Shape{b, m}, sdt, device);
  l->grad_acc_ = NewBuffer(input.shape, input.dtype, device);
  l->grad_tmp_ = NewBuffer(input.shape, input.dtype, device);
  return l;
}

ConstTensorView DhenLayer::Forward(const ExecContext& ctx, ConstTensorView z) {
  b_ = z.dim(0);
  TensorView acc = Rows(acc_, b_);
  ConstTensorView sum = z;
  if (dot_) {
    ops::Add(ctx, sum, dot_->Forward(ctx, z), acc);
    sum = acc;
  }
  if (dcn_) {
    ops::Add(ctx, sum, dcn_->Forward(ctx, z), acc);
  }
  TensorView y = Rows(y_, b_);
  ops::LayerNormArgs ln;
  ln.epsilon = config_.layer_norm_eps;
  ops::LayerNormForward(ctx, ln, acc, gamma_->value, beta_->value, y, Rows(mean_, b_),
                        Rows(rstd_, b_));
  return y;
}

void DhenLayer::Backward(const ExecContext& ctx, ConstTensorView grad_out, TensorView grad_z) {
  TensorView grad_acc = Rows(grad_acc_, b_), tmp = Rows(grad_tmp_, b_);
  ops::LayerNormBackward(ctx, grad_out, CRows(acc_, b_), gamma_->value, CRows(mean_, b_),
                         CRows(rstd_, b_), grad_acc, gamma_->grad, beta_->grad);
  bool first = true;
  if (dot_) {
    dot_->Backward(ctx, grad_acc, grad_z);
    first = false;
  }
  if (dcn_) {
    dcn_->Backward(ctx, grad_acc, first ? grad_z : tmp);
    if (!first) ops::Add(ctx, grad_z, tmp, grad_z);
  }
  ops::Add(ctx, grad_z, grad_acc, grad_z);  // the residual Z
}

}  // namespace loom::layers
