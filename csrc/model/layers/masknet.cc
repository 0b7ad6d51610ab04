#include "csrc/model/layers/masknet.h"

#include "csrc/model/layers/row_gather.h"
#include "csrc/model/ops/elementwise.h"
#include "csrc/model/ops/tokens.h"

namespace loom::layers {

StatusOr<std::unique_ptr<MaskNet>> MaskNet::Create(const MaskNetConfig& config,
                                                   const TensorSpec& input, ParameterStore* store,
                                                   const std::string& prefix, Device device) {
  LOOM_RETURN_IF_ERROR(Check(input.shape.rank() == 3 && input.shape[2] == config.d, prefix,
                             "sequence input " + input.ToString() +
                                 " must be (B, T, d=" + std::to_string(config.d) + ")"));
  LOOM_RETURN_IF_ERROR(
      Check(config.k >= 1 && config.expansion >= 1, prefix, "k and expansion must be >= 1"));
  LOOM_RETURN_IF_ERROR(Check(
      config.activation == ops::Activation::kRelu || config.activation == ops::Activation::kSilu,
      prefix, "activation must be relu or silu"));
  std::unique_ptr<MaskNet> m(new MaskNet());
  m->config_ = config;
  // Position-wise: every buffer is (B·T, ·), and a forward uses its first n rows.
  const int64_t bt = input.shape[0] * input.shape[1], kd = config.k * config.d;
  const DType dt = input.dtype;
  const TensorSpec cat{Shape{bt, kd}, dt};
  LinearConfig c1{kd, kd * config.expansion, true, config.activation, std::nullopt};
  LOOM_ASSIGN_OR_RETURN(m->mask1_,
                        Linear::Create(c1, cat, store, JoinName(prefix, "mask1"), device));
  LinearConfig c2{kd * config.expansion, kd, true,
                  config.sigmoid_mask ? ops::Activation::kSigmoid : ops::Activation::kIdentity,
                  std::nullopt};
  LOOM_ASSIGN_OR_RETURN(m->mask2_,
                        Linear::Create(c2, TensorSpec{Shape{bt, kd * config.expansion}, dt}, store,
                                       JoinName(prefix, "mask2"), device));
  LinearConfig c3{kd, config.d, true, ops::Activation::kIdentity, std::nullopt};
  LOOM_ASSIGN_OR_RETURN(m->lce_, Linear::Create(c3, cat, store, JoinName(prefix, "lce"), device));
  m->s_cat_ = NewBuffer(cat.shape, dt, device);
  m->prod_ = NewBuffer(cat.shape, dt, device);
  m->grad_prod_ = NewBuffer(cat.shape, dt, device);
  m->grad_mask_ = NewBuffer(cat.shape, dt, device);
  m->grad_hid_ = NewBuffer(Shape{bt, kd * config.expansion}, dt, device);
  m->grad_cat_a_ = NewBuffer(cat.shape, dt, device);
  m->grad_cat_b_ = NewBuffer(cat.shape, dt, device);
  return m;
}

ConstTensorView MaskNet::Forward(const ExecContext& ctx, const std::vector<ConstTensorView>& seqs,
                                 ConstTensorView rows) {
  CHECK_EQ(static_cast<int64_t>(seqs.size()), config_.k);
  b_ = seqs[0].dim(0);
  t_ = seqs[0].dim(1);
  rows_ = rows;
  const bool packed = rows.rank() == 1;  // an (n) index list, n may be 0
  n_ = packed ? rows.dim(0) : b_ * t_;
  const int64_t d = config_.d, kd = config_.k * d;
  TensorView s_cat = Rows(s_cat_, n_);
  if (packed) {
    // concat_features of the listed positions: each sequence fills its column block.
    for (int64_t j = 0; j < config_.k; ++j) {
      GatherRows(ctx, seqs[j].Reshape(Shape{b_ * t_, d}), rows, j * d, s_cat);
    }
  } else {
    // concat_features: the token op on (B·T, d, 1) views.
    std::vector<ConstTensorView> parts;
    for (const ConstTensorView& s : seqs) parts.push_back(s.Reshape(Shape{b_ * t_, d, 1}));
    ops::ConcatTokens(ctx, parts, s_cat.Reshape(Shape{b_ * t_, kd, 1}));
  }
  ConstTensorView hid = mask1_->Forward(ctx, s_cat);
  ConstTensorView mask = mask2_->Forward(ctx, hid);
  TensorView prod = Rows(prod_, n_);
  ops::Mul(ctx, s_cat, mask, prod);
  ConstTensorView out = lce_->Forward(ctx, prod);
  return packed ? out : out.Reshape(Shape{b_, t_, d});
}

void MaskNet::Backward(const ExecContext& ctx, ConstTensorView grad_s,
                       const std::vector<TensorView>& grad_seqs) {
  const int64_t d = config_.d, kd = config_.k * d;
  const bool packed = rows_.rank() == 1;
  TensorView grad_prod = Rows(grad_prod_, n_);
  lce_->Backward(ctx, grad_s.Reshape(Shape{n_, d}), grad_prod);
  TensorView ga = Rows(grad_cat_a_, n_), grad_mask = Rows(grad_mask_, n_);
  ops::MulBackward(ctx, grad_prod, Rows(s_cat_, n_), mask2_->output(), ga, grad_mask);
  TensorView grad_hid = Rows(grad_hid_, n_);
  mask2_->Backward(ctx, grad_mask, grad_hid);
  TensorView gb = Rows(grad_cat_b_, n_);
  mask1_->Backward(ctx, grad_hid, gb);
  ops::Add(ctx, ga, gb, ga);
  if (packed) {
    for (int64_t j = 0; j < config_.k; ++j) {
      ZeroTensor(grad_seqs[j], ctx.stream);
      ScatterRows(ctx, ga, j * d, rows_, grad_seqs[j].Reshape(Shape{b_ * t_, d}));
    }
    return;
  }
  std::vector<TensorView> parts;
  for (const TensorView& g : grad_seqs) parts.push_back(g.Reshape(Shape{b_ * t_, d, 1}));
  ops::SplitTokens(ctx, ga.Reshape(Shape{b_ * t_, kd, 1}), parts);
}

}  // namespace loom::layers
