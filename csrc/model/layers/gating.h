// Self-gating of the cross arch (docs/model.md §4.3, spec §3.1, A2), per token on Z (B, N, d):
//   g(Z) = fc1(Z)                               gating_hidden_dim h = 0 (fc1: Linear d -> d)
//   g(Z) = fc2(SiLU(fc1(Z)))                    h > 0 (fc1: d -> h, fc2: h -> d)
//   GLU:     Gate(Z) = Z ⊙ sigmoid(g(Z))
//   LITERAL: Gate(Z) = σ(Z ⊙ g(Z)),  σ = sigmoid | tanh | identity
// Parameters, in order: fc1.weight, fc1.bias, [fc2.weight, fc2.bias].
// Backward (u = the last Linear's output, s = sigmoid(u) for GLU; y = Z ⊙ u for LITERAL):
//   GLU:     grad_Z = grad ⊙ s + g'ᵀ(grad ⊙ Z ⊙ s(1 − s))
//   LITERAL: grad_y = grad ⊙ σ'(y);  grad_Z = grad_y ⊙ u + g'ᵀ(grad_y ⊙ Z)
// (the sigmoid of GLU is the last Linear's fused activation).
#ifndef LOOM_MODEL_LAYERS_GATING_H_
#define LOOM_MODEL_LAYERS_GATING_H_

#include <memory>
#include <string>

#include "csrc/model/layers/layer.h"
#include "csrc/model/layers/linear.h"
#include "csrc/proto/model.pb.h"

namespace loom::layers {

struct GatingConfig {
  int64_t d = 0;
  int64_t hidden = 0;  // 0: one Linear d -> d
  proto::ModelConfig::GatingForm form = proto::ModelConfig::GATING_FORM_GLU;
  proto::ModelConfig::GatingActivation literal_activation =
      proto::ModelConfig::GATING_ACTIVATION_SIGMOID;
};

class Gating {
 public:
  // input (B, N, d) (any rank ending in d).
  static StatusOr<std::unique_ptr<Gating>> Create(const GatingConfig& config,
                                                  const TensorSpec& input, ParameterStore* store,
                                                  const std::string& prefix, Device device);

  ConstTensorView Forward(const ExecContext& ctx, ConstTensorView z);
  // grad_z overwritten.
  void Backward(const ExecContext& ctx, ConstTensorView grad_out, TensorView grad_z);

 private:
  Gating() = default;
  GatingConfig config_;
  ops::Activation outer_ = ops::Activation::kIdentity;  // LITERAL's σ
  std::unique_ptr<Mlp> g_;
  Tensor y_, out_, grad_y_, grad_u_, grad_z2_;
  ConstTensorView z_;
};

}  // namespace loom::layers

#endif  // LOOM_MODEL_LAYERS_GATING_H_
