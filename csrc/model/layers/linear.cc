#include "csrc/model/layers/linear.h"

#include "csrc/core/philox.h"
#include "csrc/core/rng.h"
#include "csrc/model/ops/dropout.h"
#include "csrc/model/ops/linear.h"

namespace loom::layers {
namespace {

Shape WithLastDim(const Shape& s, int64_t last) {
  std::vector<int64_t> dims = s.dims();
  dims.back() = last;
  return Shape(dims);
}

}  // namespace

StatusOr<std::unique_ptr<Linear>> Linear::Create(const LinearConfig& config,
                                                 const TensorSpec& input, ParameterStore* store,
                                                 const std::string& prefix, Device device) {
  LOOM_RETURN_IF_ERROR(Check(config.in >= 1 && config.out >= 1, prefix,
                             "Linear sizes must be >= 1, got in=" + std::to_string(config.in) +
                                 " out=" + std::to_string(config.out)));
  LOOM_RETURN_IF_ERROR(
      Check(input.shape.rank() >= 1 && input.shape.dim(-1) == config.in, prefix,
            "input " + input.ToString() + " must end in " + std::to_string(config.in)));
  LOOM_RETURN_IF_ERROR(Check(input.dtype == store->dtype(), prefix,
                             "input dtype differs from the parameter store's"));
  std::unique_ptr<Linear> l(new Linear());
  l->config_ = config;
  l->weight_ = store->Add(JoinName(prefix, "weight"), Shape{config.out, config.in},
                          config.weight_init ? *config.weight_init : WeightInit(config.in));
  if (config.bias) {
    l->bias_ = store->Add(JoinName(prefix, "bias"), Shape{config.out}, model::InitRule::Zeros());
  }
  const Shape out_shape = WithLastDim(input.shape, config.out);
  l->y_ = NewBuffer(out_shape, input.dtype, device);
  if (config.activation == ops::Activation::kSilu) {
    l->z_ = NewBuffer(out_shape, input.dtype, device);
  }
  if (config.activation != ops::Activation::kIdentity) {
    l->grad_z_ = NewBuffer(out_shape, input.dtype, device);
  }
  return l;
}

ConstTensorView Linear::Forward(const ExecContext& ctx, ConstTensorView x) {
  const int64_t b = x.dim(0);
  x_ = x;
  y_view_ = Rows(y_, b);
  TensorView z = z_.defined() ? Rows(z_, b) : TensorView();
  ops::LinearArgs args;
  args.activation = config_.activation;
  ops::LinearForward(ctx, args, x, weight_->value,
                     bias_ ? ConstTensorView(bias_->value) : ConstTensorView(), y_view_, z);
  return y_view_;
}

void Linear::Backward(const ExecContext& ctx, ConstTensorView grad_y, TensorView grad_x) {
  const int64_t b = x_.dim(0);
  CHECK(grad_y.shape() == y_view_.shape())
      << weight_->name << ": grad_y " << grad_y.shape().ToString() << " vs y "
      << y_view_.shape().ToString();
  ConstTensorView grad_z = grad_y;
  if (config_.activation != ops::Activation::kIdentity) {
    TensorView gz = Rows(grad_z_, b);
    if (config_.activation == ops::Activation::kSilu) {
      ops::ActivationBackward(ctx, config_.activation, ops::ActivationSaved::kInput, grad_y,
                              Rows(z_, b), gz);
    } else {
      ops::ActivationBackward(ctx, config_.activation, ops::ActivationSaved::kOutput, grad_y,
                              y_view_, gz);
    }
    grad_z = gz;
  }
  ops::LinearBackward(ctx, grad_z, x_, weight_->value, grad_x, weight_->grad,
                      bias_ ? bias_->grad : TensorView());
}

// ---------------------------------------------------------------------------------------------

StatusOr<std::unique_ptr<Mlp>> Mlp::Create(const MlpConfig& config, const TensorSpec& input,
                                           ParameterStore* store, const std::string& prefix,
                                           Device device) {
  const size_t n = config.widths.size();
  LOOM_RETURN_IF_ERROR(Check(n >= 1 && config.names.size() == n, prefix,
                             "an Mlp needs >= 1 layer and one name per layer"));
  LOOM_RETURN_IF_ERROR(Check(config.weight_init.empty() || config.weight_init.size() == n, prefix,
                             "weight_init needs one entry per layer"));
  LOOM_RETURN_IF_ERROR(Check(config.dropout >= 0.0 && config.dropout < 1.0, prefix,
                             "dropout must be in [0, 1), got " + std::to_string(config.dropout)));
  std::unique_ptr<Mlp> mlp(new Mlp());
  mlp->config_ = config;
  TensorSpec spec = input;
  int64_t in = config.in;
  for (size_t i = 0; i < n; ++i) {
    LinearConfig lc;
    lc.in = in;
    lc.out = config.widths[i];
    lc.activation = i + 1 < n ? config.hidden_activation : config.last_activation;
    if (!config.weight_init.empty()) lc.weight_init = config.weight_init[i];
    LOOM_ASSIGN_OR_RETURN(
        auto layer, Linear::Create(lc, spec, store, JoinName(prefix, config.names[i]), device));
    spec.shape = WithLastDim(spec.shape, lc.out);
    if (i + 1 < n) {
      mlp->grad_hidden_.push_back(NewBuffer(spec.shape, spec.dtype, device));
      if (config.dropout > 0.0) {
        mlp->dropped_.push_back(NewBuffer(spec.shape, spec.dtype, device));
      }
    }
    mlp->layers_.push_back(std::move(layer));
    in = lc.out;
  }
  return mlp;
}

ops::DropoutArgs Mlp::DropoutArgs(size_t layer) const {
  ops::DropoutArgs args;
  args.p = static_cast<float>(config_.dropout);
  args.seed = seed_;
  args.stream = MakeStream(kRngDropout, site_base_ + layer, step_);
  return args;
}

void Mlp::SetDropout(bool training, uint64_t seed, uint64_t site_base, uint64_t step) {
  training_ = training;
  seed_ = seed;
  site_base_ = site_base;
  step_ = step;
}

ConstTensorView Mlp::Forward(const ExecContext& ctx, ConstTensorView x) {
  const int64_t b = x.dim(0);
  ConstTensorView h = x;
  for (size_t i = 0; i < layers_.size(); ++i) {
    h = layers_[i]->Forward(ctx, h);
    if (i + 1 < layers_.size() && DropoutActive()) {
      TensorView out = Rows(dropped_[i], b);
      ops::DropoutForward(ctx, DropoutArgs(i), h, out);
      h = out;
    }
  }
  return h;
}

void Mlp::Backward(const ExecContext& ctx, ConstTensorView grad_y, TensorView grad_x) {
  const int64_t b = grad_y.dim(0);
  ConstTensorView g = grad_y;
  for (size_t i = layers_.size(); i-- > 0;) {
    if (i + 1 < layers_.size() && DropoutActive()) {
      // g (in grad_hidden_[i]) is the gradient of the dropout output; turn it, in place, into
      // that of the activation output (the mask is regenerated from the same Philox stream).
      TensorView gh = Rows(grad_hidden_[i], b);
      ops::DropoutBackward(ctx, DropoutArgs(i), g, gh);
      g = gh;
    }
    TensorView gin = i == 0 ? grad_x : Rows(grad_hidden_[i - 1], b);
    layers_[i]->Backward(ctx, g, gin);
    g = gin;
  }
}

}  // namespace loom::layers
