#include "csrc/model/layers/interaction_arch.h"

namespace loom::layers {

StatusOr<std::unique_ptr<InteractionArch>> InteractionArch::Create(
    const InteractionArchConfig& config, const TensorSpec& input, ParameterStore* store,
    const std::string& prefix, Device device) {
  LOOM_RETURN_IF_ERROR(Check(input.shape.rank() == 3, prefix, "input must be (B, M, d)"));
  LOOM_RETURN_IF_ERROR(
      Check(config.dhen_layers >= 1 && config.out_tokens >= 1 && config.mlp_hidden >= 1, prefix,
            "dhen_layers, out_tokens and mlp_hidden must be >= 1"));
  std::unique_ptr<InteractionArch> a(new InteractionArch());
  for (int64_t j = 0; j < config.dhen_layers; ++j) {
    LOOM_ASSIGN_OR_RETURN(auto layer,
                          DhenLayer::Create(config.dhen, input, store,
                                            JoinName(prefix, "dhen." + std::to_string(j)), device));
    a->dhen_.push_back(std::move(layer));
  }
  const int64_t b = input.shape[0], m = input.shape[1], d = input.shape[2];
  LOOM_ASSIGN_OR_RETURN(a->token_mix_,
                        TokenLinear::Create(TokenLinearConfig{m, config.out_tokens}, input, store,
                                            JoinName(prefix, "token_mix"), device));
  MlpConfig mc;
  mc.in = d;
  mc.widths = {config.mlp_hidden, d};
  mc.names = {"fc1", "fc2"};
  mc.hidden_activation = ops::Activation::kSilu;
  const TensorSpec mixed{Shape{b, config.out_tokens, d}, input.dtype};
  LOOM_ASSIGN_OR_RETURN(a->mlp_, Mlp::Create(mc, mixed, store, JoinName(prefix, "mlp"), device));
  a->grad_mix_ = NewBuffer(mixed.shape, input.dtype, device);
  a->grad_a_ = NewBuffer(input.shape, input.dtype, device);
  a->grad_b_ = NewBuffer(input.shape, input.dtype, device);
  return a;
}

ConstTensorView InteractionArch::Forward(const ExecContext& ctx, ConstTensorView z) {
  ConstTensorView h = z;
  for (auto& layer : dhen_) h = layer->Forward(ctx, h);
  return mlp_->Forward(ctx, token_mix_->Forward(ctx, h));
}

void InteractionArch::Backward(const ExecContext& ctx, ConstTensorView grad_out,
                               TensorView grad_z) {
  const int64_t b = grad_out.dim(0);
  TensorView grad_mix = Rows(grad_mix_, b);
  mlp_->Backward(ctx, grad_out, grad_mix);
  // The gradient of dhen[j]'s output lives in buf[j % 2]; dhen[0] writes grad_z.
  const TensorView buf[2] = {Rows(grad_a_, b), Rows(grad_b_, b)};
  const int64_t n = static_cast<int64_t>(dhen_.size());
  token_mix_->Backward(ctx, grad_mix, buf[(n - 1) % 2]);
  for (int64_t j = n - 1; j >= 0; --j) {
    dhen_[j]->Backward(ctx, buf[j % 2], j == 0 ? grad_z : buf[(j - 1) % 2]);
  }
}

}  // namespace loom::layers
