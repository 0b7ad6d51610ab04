// Token-axis linear map (docs/model.md §1, "TL_W"; the LCE of the cross arch and the token
// mix of the interaction arch), no bias:
//   Y[b, j, :] = Σ_i W[j, i] · X[b, i, :]        X (B, N_in, d), W (N_out, N_in), Y (B, N_out, d)
// Parameter: "<prefix>.weight" (N_out, N_in), init U(1/√N_in).
// Backward:
//   grad_X[b] = Wᵀ · grad_Y[b]                   overwritten (=)
//   grad_W   += Σ_b grad_Y[b] · X[b]ᵀ            accumulated (+=); ops::GemmBatchedSum, a fixed
//                                                summation order (deterministic).
#ifndef LOOM_MODEL_LAYERS_TOKEN_LINEAR_H_
#define LOOM_MODEL_LAYERS_TOKEN_LINEAR_H_

#include <memory>
#include <string>

#include "csrc/model/layers/layer.h"

namespace loom::layers {

struct TokenLinearConfig {
  int64_t in_tokens = 0;
  int64_t out_tokens = 0;
};

class TokenLinear {
 public:
  // input (B, N_in, d).
  static StatusOr<std::unique_ptr<TokenLinear>> Create(const TokenLinearConfig& config,
                                                       const TensorSpec& input,
                                                       ParameterStore* store,
                                                       const std::string& prefix, Device device);

  ConstTensorView Forward(const ExecContext& ctx, ConstTensorView x);
  void Backward(const ExecContext& ctx, ConstTensorView grad_y, TensorView grad_x);

  Parameter* weight() const { return weight_; }

 private:
  TokenLinear() = default;
  TokenLinearConfig config_;
  Parameter* weight_ = nullptr;
  Tensor y_;
  ConstTensorView x_;
};

}  // namespace loom::layers

#endif  // LOOM_MODEL_LAYERS_TOKEN_LINEAR_H_
