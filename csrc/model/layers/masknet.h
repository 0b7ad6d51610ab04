// MaskNet sequence merge (docs/model.md §4.2, spec §2.2, A13), per time step:
//   S_cat = concat_features(seq_0, …, seq_{k−1})          (B, T, k·d)   seq_j in columns [j·d,
//   (j+1)·d) hid   = act(mask1(S_cat))                             (B, T, k·d·r) act = ReLU | SiLU
//   mask  = mask2(hid)  [then sigmoid if sigmoid_mask]     (B, T, k·d)
//   S     = lce(S_cat ⊙ mask)                             (B, T, d)
// Parameters, in order: mask1.{weight,bias}, mask2.{weight,bias}, lce.{weight,bias}.
// Backward: grad_seq_j (B, T, d) overwritten, columns [j·d, (j+1)·d) of
//   grad_S_cat = grad_P ⊙ mask + mask1ᵀ(act'(…) ⊙ mask2ᵀ(mask'(…) ⊙ grad_P ⊙ S_cat)),
//   grad_P = lceᵀ grad_S.
//
// Packed positions: MaskNet is position-wise, so it can run on a subset of the B·T positions.
// With `rows` (n) i32 (flat indices b·T + t, distinct), Forward computes only those positions
// and returns them packed, (n, d); Backward takes the packed (n, d) gradient and writes
// grad_seq_j at those positions, zero elsewhere. With an empty `rows` every position is
// computed and the output is (B, T, d).
#ifndef LOOM_MODEL_LAYERS_MASKNET_H_
#define LOOM_MODEL_LAYERS_MASKNET_H_

#include <memory>
#include <string>
#include <vector>

#include "csrc/model/layers/layer.h"
#include "csrc/model/layers/linear.h"

namespace loom::layers {

struct MaskNetConfig {
  int64_t d = 0;
  int64_t k = 1;                                        // sequences
  int64_t expansion = 2;                                // r
  ops::Activation activation = ops::Activation::kRelu;  // relu | silu
  bool sigmoid_mask = false;
};

class MaskNet {
 public:
  // input: the spec of one sequence (B, T, d).
  static StatusOr<std::unique_ptr<MaskNet>> Create(const MaskNetConfig& config,
                                                   const TensorSpec& input, ParameterStore* store,
                                                   const std::string& prefix, Device device);

  // seqs: k views (b, T, d). Returns S (b, T, d), or (n, d) packed when rows is given.
  ConstTensorView Forward(const ExecContext& ctx, const std::vector<ConstTensorView>& seqs,
                          ConstTensorView rows = ConstTensorView());
  // grad_s: the shape Forward returned. grad_seqs: k views (b, T, d), overwritten.
  void Backward(const ExecContext& ctx, ConstTensorView grad_s,
                const std::vector<TensorView>& grad_seqs);

 private:
  MaskNet() = default;
  MaskNetConfig config_;
  std::unique_ptr<Linear> mask1_, mask2_, lce_;
  Tensor s_cat_, prod_, grad_prod_, grad_mask_, grad_hid_, grad_cat_a_, grad_cat_b_;
  int64_t b_ = 0, t_ = 0, n_ = 0;
  ConstTensorView rows_;
};

}  // namespace loom::layers

#endif  // LOOM_MODEL_LAYERS_MASKNET_H_
