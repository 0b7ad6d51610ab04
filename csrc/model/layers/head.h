// Prediction head (docs/model.md §4.8, spec §3.6, A14):
//   h = h0 (B, head_in); for i, w in enumerate(widths): h = dropout(SiLU(head.fc<i>(h)));
//   logit = head.out(h) (B, 1) -> (B)
// Dropout (probability `dropout`) runs only in training mode (SetDropout).
// Parameters, in order (prefix "head"): fc0.{weight,bias}, …, out.{weight,bias}.
// Backward: grad_logits (B) -> grad_h0 (B, head_in), overwritten.
#ifndef LOOM_MODEL_LAYERS_HEAD_H_
#define LOOM_MODEL_LAYERS_HEAD_H_

#include <memory>
#include <string>
#include <vector>

#include "csrc/model/layers/layer.h"
#include "csrc/model/layers/linear.h"

namespace loom::layers {

struct HeadConfig {
  std::vector<int64_t> widths;  // hidden widths; empty = a linear head
  double dropout = 0.0;
};

class Head {
 public:
  // input h0 (B, head_in).
  static StatusOr<std::unique_ptr<Head>> Create(const HeadConfig& config, const TensorSpec& input,
                                                ParameterStore* store, const std::string& prefix,
                                                Device device);
  void SetDropout(bool training, uint64_t seed, uint64_t step) {
    mlp_->SetDropout(training, seed, /*site_base=*/0, step);
  }
  ConstTensorView Forward(const ExecContext& ctx, ConstTensorView h0);  // (B)
  void Backward(const ExecContext& ctx, ConstTensorView grad_logits, TensorView grad_h0);

 private:
  Head() = default;
  std::unique_ptr<Mlp> mlp_;
};

}  // namespace loom::layers

#endif  // LOOM_MODEL_LAYERS_HEAD_H_
