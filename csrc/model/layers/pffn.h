// Personalized FFN of the sequence arch (docs/model.md §4.6, spec §3.4, A4):
//   PFFN(ctx (B, n_cls, d), U (B, T, d)) -> P (B, T, d)
//   LOW_RANK:  C = U · Wpᵀ (B, T, n_cls),  P[b] = C[b] · ctx[b]
//              parameter "weight" (n_cls, d), init U(1/√d)
//   HYPERNET:  Wf = reshape(fc2(SiLU(fc1(flatten(ctx))))) (B, d, d),  P[b] = U[b] · Wf[b]ᵀ
//              parameters fc1.{weight,bias} (h_p, n_cls·d), fc2.{weight,bias} (d·d, h_p),
//              fc2.weight init U(1/√(h_p·d))
// Backward: grad_ctx and grad_U overwritten; parameter gradients accumulated.
//   LOW_RANK:  grad_C[b] = grad_P[b] ctx[b]ᵀ, grad_ctx[b] = C[b]ᵀ grad_P[b],
//              grad_Wp += grad_Cᵀ U, grad_U = grad_C Wp
//   HYPERNET:  grad_U[b] = grad_P[b] Wf[b], grad_Wf[b] = grad_P[b]ᵀ U[b], then fc2, fc1
#ifndef LOOM_MODEL_LAYERS_PFFN_H_
#define LOOM_MODEL_LAYERS_PFFN_H_

#include <memory>
#include <string>

#include "csrc/model/layers/layer.h"
#include "csrc/model/layers/linear.h"
#include "csrc/proto/model.pb.h"

namespace loom::layers {

struct PffnConfig {
  int64_t d = 0;
  int64_t n_cls = 0;
  proto::ModelConfig::PffnForm form = proto::ModelConfig::PFFN_FORM_LOW_RANK;
  int64_t hypernet_hidden = 64;
};

class Pffn {
 public:
  // input: U (B, T, d).
  static StatusOr<std::unique_ptr<Pffn>> Create(const PffnConfig& config, const TensorSpec& input,
                                                ParameterStore* store, const std::string& prefix,
                                                Device device);

  ConstTensorView Forward(const ExecContext& ctx, ConstTensorView ctx_tokens, ConstTensorView u);
  void Backward(const ExecContext& ctx, ConstTensorView grad_p, TensorView grad_ctx,
                TensorView grad_u);

 private:
  Pffn() = default;
  bool low_rank() const { return config_.form == proto::ModelConfig::PFFN_FORM_LOW_RANK; }

  PffnConfig config_;
  std::unique_ptr<Linear> wp_;  // LOW_RANK: U -> C (no bias)
  std::unique_ptr<Mlp> hyper_;  // HYPERNET: flatten(ctx) -> Wf
  Tensor p_, grad_c_, grad_wf_;
  ConstTensorView ctx_, u_;
  int64_t b_ = 0, t_ = 0;
};

}  // namespace loom::layers

#endif  // LOOM_MODEL_LAYERS_PFFN_H_
