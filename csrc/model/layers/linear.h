// Linear and MLP layers (docs/model.md §1: PyTorch layout, y = act(x Wᵀ + b), applied to the
// last axis, every leading axis folded into rows).
//
// Linear
//   Parameters (in this order): "<prefix>.weight" (out, in), init W = U(1/√in) unless
//   LinearConfig::weight_init says otherwise; "<prefix>.bias" (out), zeros (if bias).
//   Forward(x (..., in)) -> y (..., out)         leading dims: those of x (dim 0 <= the planned
//                                                maximum; the rest exactly as planned)
//   Backward(grad_y (..., out), grad_x (..., in)) grad_W +=, grad_b +=, grad_x = (skipped when
//                                                grad_x is empty)
//   Buffers: y; z = x Wᵀ + b when the activation is SiLU (its derivative needs the input);
//   grad_z when the activation is not the identity.
//
// Mlp: Linear layers applied in sequence, activation `hidden_activation` after every layer
// but the last, `last_activation` after the last; optional dropout after every hidden
// activation (training only). Parameter names "<prefix>.<names[i]>.weight/.bias".
#ifndef LOOM_MODEL_LAYERS_LINEAR_H_
#define LOOM_MODEL_LAYERS_LINEAR_H_

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "csrc/model/layers/layer.h"
#include "csrc/model/ops/activation.h"
#include "csrc/model/ops/dropout.h"

namespace loom::layers {

struct LinearConfig {
  int64_t in = 0;
  int64_t out = 0;
  bool bias = true;
  ops::Activation activation = ops::Activation::kIdentity;
  std::optional<model::InitRule> weight_init;  // default: U(1/√in)
};

class Linear {
 public:
  // input: the planned input spec (..., in); dim 0 is the maximum.
  static StatusOr<std::unique_ptr<Linear>> Create(const LinearConfig& config,
                                                  const TensorSpec& input, ParameterStore* store,
                                                  const std::string& prefix, Device device);

  ConstTensorView Forward(const ExecContext& ctx, ConstTensorView x);
  void Backward(const ExecContext& ctx, ConstTensorView grad_y, TensorView grad_x);

  const LinearConfig& config() const { return config_; }
  Parameter* weight() const { return weight_; }
  Parameter* bias() const { return bias_; }
  // The output of the last Forward.
  ConstTensorView output() const { return y_view_; }
  // The same, writable: a caller may transform it in place when the activation is the
  // identity (Backward then never reads it).
  TensorView mutable_output() const { return y_view_; }

 private:
  Linear() = default;
  LinearConfig config_;
  Parameter* weight_ = nullptr;
  Parameter* bias_ = nullptr;
  Tensor y_, z_, grad_z_;
  ConstTensorView x_;  // input of the last Forward
  TensorView y_view_;  // its output
};

struct MlpConfig {
  int64_t in = 0;
  std::vector<int64_t> widths;     // output width of each layer (>= 1 layer)
  std::vector<std::string> names;  // one parameter-name component per layer
  ops::Activation hidden_activation = ops::Activation::kSilu;
  ops::Activation last_activation = ops::Activation::kIdentity;
  // Per-layer weight init overrides (empty or one entry per layer; nullopt = default W).
  std::vector<std::optional<model::InitRule>> weight_init;
  double dropout = 0.0;  // after every hidden activation, training only
};

class Mlp {
 public:
  static StatusOr<std::unique_ptr<Mlp>> Create(const MlpConfig& config, const TensorSpec& input,
                                               ParameterStore* store, const std::string& prefix,
                                               Device device);

  // Dropout state for the next Forward: active only when `training` and dropout > 0; masks
  // are drawn from Philox (seed, MakeStream(kRngDropout, site_base + i, step)).
  void SetDropout(bool training, uint64_t seed, uint64_t site_base, uint64_t step);

  ConstTensorView Forward(const ExecContext& ctx, ConstTensorView x);
  void Backward(const ExecContext& ctx, ConstTensorView grad_y, TensorView grad_x);

  int num_layers() const { return static_cast<int>(layers_.size()); }
  Linear& layer(int i) { return *layers_[i]; }

 private:
  Mlp() = default;
  bool DropoutActive() const { return training_ && config_.dropout > 0.0; }

  MlpConfig config_;
  std::vector<std::unique_ptr<Linear>> layers_;
  ops::DropoutArgs DropoutArgs(size_t layer) const;

  std::vector<Tensor> dropped_;      // dropout output per hidden layer
  std::vector<Tensor> grad_hidden_;  // gradient of each hidden layer's output
  bool training_ = false;
  uint64_t seed_ = 0, site_base_ = 0, step_ = 0;
};

}  // namespace loom::layers

#endif  // LOOM_MODEL_LAYERS_LINEAR_H_
