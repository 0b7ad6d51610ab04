#include "csrc/model/layers/head.h"

namespace loom::layers {

StatusOr<std::unique_ptr<Head>> Head::Create(const HeadConfig& config, const TensorSpec& input,
                                             ParameterStore* store, const std::string& prefix,
                                             Device device) {
  LOOM_RETURN_IF_ERROR(Check(input.shape.rank() == 2, prefix, "input must be (B, head_in)"));
  std::unique_ptr<Head> h(new Head());
  MlpConfig mc;
  mc.in = input.shape[1];
  for (size_t i = 0; i < config.widths.size(); ++i) {
    mc.widths.push_back(config.widths[i]);
    mc.names.push_back("fc" + std::to_string(i));
  }
  mc.widths.push_back(1);
  mc.names.push_back("out");
  mc.hidden_activation = ops::Activation::kSilu;
  mc.last_activation = ops::Activation::kIdentity;
  mc.dropout = config.dropout;
  LOOM_ASSIGN_OR_RETURN(h->mlp_, Mlp::Create(mc, input, store, prefix, device));
  return h;
}

ConstTensorView Head::Forward(const ExecContext& ctx, ConstTensorView h0) {
  const int64_t b = h0.dim(0);
  return mlp_->Forward(ctx, h0).Reshape(Shape{b});
}

void Head::Backward(const ExecContext& ctx, ConstTensorView grad_logits, TensorView grad_h0) {
  const int64_t b = grad_logits.dim(0);
  mlp_->Backward(ctx, grad_logits.Reshape(Shape{b, 1}), grad_h0);
}

}  // namespace loom::layers
