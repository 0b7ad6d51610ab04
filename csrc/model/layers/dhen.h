// The interaction arch's DHEN layer and its modules (docs/model.md §4.5, spec §3.3, A11), on
// Z (B, M, d):
//   DOT   G[b] = Z[b] Z[b]ᵀ (M, M); u = strict upper triangle of G, row-major (M(M−1)/2);
//         dot(u): Linear(M(M−1)/2 -> M·d) with bias, reshaped to (B, M, d).
//         Parameters: dot.{weight,bias}.
//   DCN   z0 = flatten(Z) (B, M·d); x_0 = z0; x_{c+1} = z0 ⊙ up_c(down_c(x_c)) + x_c for
//         c < dcn_layers (down: Linear(M·d -> r) no bias, up: Linear(r -> M·d)); out(x_C):
//         Linear(M·d -> M·d), reshaped to (B, M, d).
//         Parameters: dcn.cross.<c>.down.weight, dcn.cross.<c>.up.{weight,bias} for each c,
//         then dcn.out.{weight,bias}.
//   DhenLayer  Y = LayerNorm_d(Z + Σ_{module ∈ backbone} module(Z)); parameters: the modules
//         (dot, then dcn) then norm.{weight,bias} (init 1 / 0).
// Backward: grad_Z overwritten; parameter gradients accumulated.
//   DOT: grad_u = dotᵀ(grad), scattered into the upper triangle of grad_G (B, M, M), zeros
//        elsewhere; grad_Z[b] = grad_G[b] Z[b] + grad_G[b]ᵀ Z[b].
//   DCN: grad_x_C = outᵀ(grad); for c = C−1..0: grad_z0 += grad_x_{c+1} ⊙ y_c,
//        grad_x_c = grad_x_{c+1} + downᵀ(upᵀ(grad_x_{c+1} ⊙ z0)); grad_Z = grad_z0 + grad_x_0.
#ifndef LOOM_MODEL_LAYERS_DHEN_H_
#define LOOM_MODEL_LAYERS_DHEN_H_

#include <memory>
#include <string>
#include <vector>

#include "csrc/model/layers/layer.h"
#include "csrc/model/layers/linear.h"
#include "csrc/proto/model.pb.h"

namespace loom::layers {

class DotModule {
 public:
  // input Z (B, M, d), M >= 2.
  static StatusOr<std::unique_ptr<DotModule>> Create(const TensorSpec& input, ParameterStore* store,
                                                     const std::string& prefix, Device device);
  ConstTensorView Forward(const ExecContext& ctx, ConstTensorView z);  // (B, M, d)
  void Backward(const ExecContext& ctx, ConstTensorView grad_out, TensorView grad_z);

 private:
  DotModule() = default;
  int64_t m_ = 0, d_ = 0, b_ = 0;
  std::unique_ptr<Linear> dot_;
  Tensor gram_, pairs_, grad_pairs_, grad_gram_;
  ConstTensorView z_;
};

struct DcnConfig {
  int64_t layers = 2;
  int64_t rank = 32;
};

class DcnModule {
 public:
  // input Z (B, M, d).
  static StatusOr<std::unique_ptr<DcnModule>> Create(const DcnConfig& config,
                                                     const TensorSpec& input, ParameterStore* store,
                                                     const std::string& prefix, Device device);
  ConstTensorView Forward(const ExecContext& ctx, ConstTensorView z);  // (B, M, d)
  void Backward(const ExecContext& ctx, ConstTensorView grad_out, TensorView grad_z);

 private:
  DcnModule() = default;
  DcnConfig config_;
  int64_t md_ = 0, b_ = 0;
  Shape z_shape_;
  std::vector<std::unique_ptr<Linear>> down_, up_;
  std::unique_ptr<Linear> out_;
  std::vector<Tensor> x_;  // x_1 .. x_C (x_0 is z0 itself)
  Tensor grad_x_, grad_h_, grad_y_, grad_tmp_;
  ConstTensorView z0_;
};

struct DhenConfig {
  proto::ModelConfig::InteractionBackbone backbone = proto::ModelConfig::INTERACTION_BACKBONE_DHEN;
  DcnConfig dcn;
  float layer_norm_eps = 1e-5f;
};

class DhenLayer {
 public:
  static StatusOr<std::unique_ptr<DhenLayer>> Create(const DhenConfig& config,
                                                     const TensorSpec& input, ParameterStore* store,
                                                     const std::string& prefix, Device device);
  ConstTensorView Forward(const ExecContext& ctx, ConstTensorView z);  // (B, M, d)
  void Backward(const ExecContext& ctx, ConstTensorView grad_out, TensorView grad_z);

 private:
  DhenLayer() = default;
  DhenConfig config_;
  std::unique_ptr<DotModule> dot_;
  std::unique_ptr<DcnModule> dcn_;
  Parameter* gamma_ = nullptr;
  Parameter* beta_ = nullptr;
  Tensor acc_, y_, mean_, rstd_, grad_acc_, grad_tmp_;
  int64_t b_ = 0;
};

}  // namespace loom::layers

#endif  // LOOM_MODEL_LAYERS_DHEN_H_
