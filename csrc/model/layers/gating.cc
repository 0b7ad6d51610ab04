#include "csrc/model/layers/gating.h"

#include "csrc/model/ops/elementwise.h"

namespace loom::layers {

using MC = proto::ModelConfig;

StatusOr<std::unique_ptr<Gating>> Gating::Create(const GatingConfig& config,
                                                 const TensorSpec& input, ParameterStore* store,
                                                 const std::string& prefix, Device device) {
  LOOM_RETURN_IF_ERROR(
      Check(input.shape.rank() >= 1 && input.shape.dim(-1) == config.d, prefix,
            "input " + input.ToString() + " must end in d=" + std::to_string(config.d)));
  LOOM_RETURN_IF_ERROR(Check(config.hidden >= 0, prefix, "hidden must be >= 0"));
  std::unique_ptr<Gating> g(new Gating());
  g->config_ = config;
  const bool glu = config.form == MC::GATING_FORM_GLU;
  MlpConfig mc;
  mc.in = config.d;
  if (config.hidden > 0) {
    mc.widths = {config.hidden, config.d};
    mc.names = {"fc1", "fc2"};
  } else {
    mc.widths = {config.d};
    mc.names = {"fc1"};
  }
  mc.hidden_activation = ops::Activation::kSilu;
  mc.last_activation = glu ? ops::Activation::kSigmoid : ops::Activation::kIdentity;
  LOOM_ASSIGN_OR_RETURN(g->g_, Mlp::Create(mc, input, store, prefix, device));
  if (!glu) {
    switch (config.literal_activation) {
      case MC::GATING_ACTIVATION_SIGMOID:
        g->outer_ = ops::Activation::kSigmoid;
        break;
      case MC::GATING_ACTIVATION_TANH:
        g->outer_ = ops::Activation::kTanh;
        break;
      default:
        g->outer_ = ops::Activation::kIdentity;
        break;
    }
    g->y_ = NewBuffer(input.shape, input.dtype, device);
    g->grad_y_ = NewBuffer(input.shape, input.dtype, device);
  }
  g->out_ = NewBuffer(input.shape, input.dtype, device);
  g->grad_u_ = NewBuffer(input.shape, input.dtype, device);
  g->grad_z2_ = NewBuffer(input.shape, input.dtype, device);
  return g;
}

ConstTensorView Gating::Forward(const ExecContext& ctx, ConstTensorView z) {
  const int64_t b = z.dim(0);
  z_ = z;
  ConstTensorView u = g_->Forward(ctx, z);  // GLU: sigmoid(g(Z)); LITERAL: g(Z)
  TensorView out = Rows(out_, b);
  if (config_.form == MC::GATING_FORM_GLU) {
    ops::Mul(ctx, z, u, out);
  } else {
    TensorView y = Rows(y_, b);
    ops::Mul(ctx, z, u, y);
    ops::ActivationForward(ctx, outer_, y, out);
  }
  return out;
}

void Gating::Backward(const ExecContext& ctx, ConstTensorView grad_out, TensorView grad_z) {
  const int64_t b = z_.dim(0);
  ConstTensorView u = g_->layer(g_->num_layers() - 1).output();
  TensorView grad_u = Rows(grad_u_, b);
  ConstTensorView grad_prod = grad_out;  // gradient of Z ⊙ u
  if (config_.form != MC::GATING_FORM_GLU) {
    TensorView gy = Rows(grad_y_, b);
    if (outer_ == ops::Activation::kIdentity) {
      grad_prod = grad_out;
    } else {
      ops::ActivationBackward(ctx, outer_, ops::ActivationSaved::kOutput, grad_out, Rows(out_, b),
                              gy);
      grad_prod = gy;
    }
  }
  // grad_z = grad_prod ⊙ u; grad_u = grad_prod ⊙ Z.
  ops::MulBackward(ctx, grad_prod, z_, u, grad_z, grad_u);
  TensorView gz2 = Rows(grad_z2_, b);
  g_->Backward(ctx, grad_u, gz2);
  ops::Add(ctx, grad_z, gz2, grad_z);
}

}  // namespace loom::layers
