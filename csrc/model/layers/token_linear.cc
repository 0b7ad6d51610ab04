#include "csrc/model/layers/token_linear.h"

#include "csrc/model/ops/gemm.h"

namespace loom::layers {

StatusOr<std::unique_ptr<TokenLinear>> TokenLinear::Create(const TokenLinearConfig& config,
                                                           const TensorSpec& input,
                                                           ParameterStore* store,
                                                           const std::string& prefix,
                                                           Device device) {
  LOOM_RETURN_IF_ERROR(
      Check(config.in_tokens >= 1 && config.out_tokens >= 1, prefix, "token counts must be >= 1"));
  LOOM_RETURN_IF_ERROR(Check(
      input.shape.rank() == 3 && input.shape[1] == config.in_tokens, prefix,
      "input " + input.ToString() + " must be (B, " + std::to_string(config.in_tokens) + ", d)"));
  std::unique_ptr<TokenLinear> l(new TokenLinear());
  l->config_ = config;
  l->weight_ = store->Add(JoinName(prefix, "weight"), Shape{config.out_tokens, config.in_tokens},
                          WeightInit(config.in_tokens));
  const int64_t b = input.shape[0], d = input.shape[2];
  l->y_ = NewBuffer(Shape{b, config.out_tokens, d}, input.dtype, device);
  return l;
}

ConstTensorView TokenLinear::Forward(const ExecContext& ctx, ConstTensorView x) {
  x_ = x;
  TensorView y = Rows(y_, x.dim(0));
  // Y[b] = W · X[b]: W is a broadcast (rank-2) operand.
  ops::GemmBatched(ctx, ops::GemmArgs{}, weight_->value, x, y);
  return y;
}

void TokenLinear::Backward(const ExecContext& ctx, ConstTensorView grad_y, TensorView grad_x) {
  if (!grad_x.empty()) {
    ops::GemmArgs a;
    a.trans_a = true;  // grad_X[b] = Wᵀ grad_Y[b]
    ops::GemmBatched(ctx, a, weight_->value, grad_y, grad_x);
  }
  ops::GemmArgs a;
  a.trans_b = true;  // grad_W += Σ_b grad_Y[b] X[b]ᵀ   (N_out, N_in), fixed summation order
  a.beta = 1.0;
  ops::GemmBatchedSum(ctx, a, grad_y, x_, weight_->grad);
}

}  // namespace loom::layers
