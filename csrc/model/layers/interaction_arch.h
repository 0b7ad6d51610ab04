// Interaction arch of layer l (docs/model.md §4.5, spec §3.3, A11):
//   Z (B, M, d) -> DHEN layers j = 0 .. J−1 -> token_mix TL (M -> N_x) -> per-token MLP
//   X' = mlp.fc2(SiLU(mlp.fc1(TL_{token_mix}(DHEN(Z)))))      (B, N_x, d); no residual.
// Parameters, in order (prefix "layers.<l>.interaction"): dhen.<j>.* for each j (dhen.h),
// token_mix.weight (N_x, M), mlp.fc1.{weight,bias} (h_i, d), mlp.fc2.{weight,bias} (d, h_i).
// Backward: grad_Z overwritten.
#ifndef LOOM_MODEL_LAYERS_INTERACTION_ARCH_H_
#define LOOM_MODEL_LAYERS_INTERACTION_ARCH_H_

#include <memory>
#include <string>
#include <vector>

#include "csrc/model/layers/dhen.h"
#include "csrc/model/layers/layer.h"
#include "csrc/model/layers/linear.h"
#include "csrc/model/layers/token_linear.h"

namespace loom::layers {

struct InteractionArchConfig {
  int64_t out_tokens = 0;  // N_x
  int64_t dhen_layers = 1;
  DhenConfig dhen;
  int64_t mlp_hidden = 0;  // h_i (>= 1)
};

class InteractionArch {
 public:
  // input Z (B, M, d).
  static StatusOr<std::unique_ptr<InteractionArch>> Create(const InteractionArchConfig& config,
                                                           const TensorSpec& input,
                                                           ParameterStore* store,
                                                           const std::string& prefix,
                                                           Device device);
  ConstTensorView Forward(const ExecContext& ctx, ConstTensorView z);  // (B, N_x, d)
  void Backward(const ExecContext& ctx, ConstTensorView grad_out, TensorView grad_z);

 private:
  InteractionArch() = default;
  std::vector<std::unique_ptr<DhenLayer>> dhen_;
  std::unique_ptr<TokenLinear> token_mix_;
  std::unique_ptr<Mlp> mlp_;
  Tensor grad_mix_, grad_a_, grad_b_;
};

}  // namespace loom::layers

#endif  // LOOM_MODEL_LAYERS_INTERACTION_ARCH_H_
