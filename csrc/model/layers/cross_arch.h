// Cross arch l (docs/model.md §4.4, spec §3.1–3.2): the two summaries.
//   X_sum = x_gate(TL_{x_lce}(X))                      X (B, N_x, d) -> (B, n_cls, d)
//   S_sum = s_gate(concat_tokens(S[:, 0:c], PMA(S, km), R))   S (B, T', d) -> (B, n_s, d)
//     c = CLS tokens in S (0 when the mode has no CLS prepend); n_s = c + n_pma + K;
//     R = S[:, T'−K : T'], each slot multiplied by its key-mask value when
//     recent_zero_padding (a padded slot becomes 0 and passes no gradient).
// The X part exists iff has_x, the S part iff has_s (docs/model.md §5: parameters exist only
// where consumed). The two parts are independent: XSummary only reads X, SSummary only S.
// Parameters, in order (prefix "cross.<l>"): x_lce.weight (n_cls, N_x), x_gate.* (gating.h),
// pma.query, pma.attn.{q,k,v,o}.*, s_gate.*.
// Backward: grad_X / grad_S overwritten.
#ifndef LOOM_MODEL_LAYERS_CROSS_ARCH_H_
#define LOOM_MODEL_LAYERS_CROSS_ARCH_H_

#include <memory>
#include <string>

#include "csrc/model/layers/gating.h"
#include "csrc/model/layers/layer.h"
#include "csrc/model/layers/mha.h"
#include "csrc/model/layers/token_linear.h"

namespace loom::layers {

struct CrossArchConfig {
  bool has_x = true;
  bool has_s = true;
  int64_t n_cls = 4;
  GatingConfig gating;
  int64_t cls_in_s = 0;  // c
  int64_t n_pma = 2;
  int64_t recent = 2;  // K
  int64_t heads = 1;
  bool recent_zero_padding = true;
};

class CrossArch {
 public:
  // x: the X spec (B, N_x, d); s: the S spec (B, T', d) (ignored without has_s).
  static StatusOr<std::unique_ptr<CrossArch>> Create(const CrossArchConfig& config,
                                                     const TensorSpec& x, const TensorSpec& s,
                                                     ParameterStore* store,
                                                     const std::string& prefix, Device device);

  bool has_x() const { return config_.has_x; }
  bool has_s() const { return config_.has_s; }
  int64_t n_s() const { return config_.cls_in_s + config_.n_pma + config_.recent; }

  ConstTensorView XSummary(const ExecContext& ctx, ConstTensorView x);
  void XSummaryBackward(const ExecContext& ctx, ConstTensorView grad_xsum, TensorView grad_x);
  // key_mask (B, T') u8, the CLS prefix included (always valid). rows: the packed positions
  // whose keys/values PMA computes (mha.h; every valid key must be listed), or empty.
  ConstTensorView SSummary(const ExecContext& ctx, ConstTensorView s, ConstTensorView key_mask,
                           ConstTensorView rows = ConstTensorView());
  void SSummaryBackward(const ExecContext& ctx, ConstTensorView grad_ssum, TensorView grad_s);

 private:
  CrossArch() = default;
  CrossArchConfig config_;
  std::unique_ptr<TokenLinear> x_lce_;
  std::unique_ptr<Gating> x_gate_;
  std::unique_ptr<Pma> pma_;
  std::unique_ptr<Gating> s_gate_;
  Tensor x_grad_lce_;
  Tensor cat_, recent_, recent_mask_, recent_masked_, grad_cat_, grad_pma_, grad_recent_,
      grad_recent_masked_;
  int64_t b_ = 0, t_ = 0;
};

}  // namespace loom::layers

#endif  // LOOM_MODEL_LAYERS_CROSS_ARCH_H_
