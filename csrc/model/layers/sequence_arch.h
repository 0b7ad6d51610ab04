// Sequence arch of layer l (docs/model.md §4.6, spec §3.4, A4, A5, A7, A8), on S (B, T', d)
// with the key mask km (B, T') u8 and the PFFN context ctx (B, n_cls, d):
//   PRE_LN:  S1 = S + PFFN(ctx, pffn_norm(S));  S' = S1 + MHA(attn_norm(S1), km)
//   LITERAL: S' = MHA(PFFN(ctx, S), km)
// MHA: self-attention with RoPE (use_rope) over all T' positions (mha.h).
// ctx is X_sum^l (INT, N2S) or, with `const_xsum`, the parameter const_xsum (n_cls, d)
// broadcast over the batch (S2N, SEP).
// Parameters, in order (prefix "layers.<l>.sequence"): pffn.* (pffn.h), attn.{q,k,v,o}.*,
// [pffn_norm.{weight,bias}, attn_norm.{weight,bias}] (PRE_LN), [const_xsum] (N(0, 0.02²)).
// Backward: grad_S overwritten; grad_ctx overwritten (must be empty with const_xsum, whose
// gradient accumulates into the parameter instead).
#ifndef LOOM_MODEL_LAYERS_SEQUENCE_ARCH_H_
#define LOOM_MODEL_LAYERS_SEQUENCE_ARCH_H_

#include <memory>
#include <string>

#include "csrc/model/layers/layer.h"
#include "csrc/model/layers/mha.h"
#include "csrc/model/layers/pffn.h"
#include "csrc/proto/model.pb.h"

namespace loom::layers {

struct SequenceArchConfig {
  PffnConfig pffn;
  int64_t heads = 1;
  bool rope = true;
  double rope_base = 10000.0;
  proto::ModelConfig::SequenceResidual residual = proto::ModelConfig::SEQUENCE_RESIDUAL_PRE_LN;
  float layer_norm_eps = 1e-5f;
  bool const_xsum = false;
};

class SequenceArch {
 public:
  // input S (B, T', d).
  static StatusOr<std::unique_ptr<SequenceArch>> Create(const SequenceArchConfig& config,
                                                        const TensorSpec& input,
                                                        ParameterStore* store,
                                                        const std::string& prefix, Device device);
  // ctx_tokens: (B, n_cls, d), or empty with const_xsum. rows: the packed positions of the
  // MHA's projections (mha.h), or empty for all.
  ConstTensorView Forward(const ExecContext& ctx, ConstTensorView s, ConstTensorView ctx_tokens,
                          ConstTensorView key_mask, ConstTensorView rows = ConstTensorView());
  void Backward(const ExecContext& ctx, ConstTensorView grad_out, TensorView grad_s,
                TensorView grad_ctx);

 private:
  SequenceArch() = default;
  bool pre_ln() const { return config_.residual == proto::ModelConfig::SEQUENCE_RESIDUAL_PRE_LN; }

  SequenceArchConfig config_;
  std::unique_ptr<Pffn> pffn_;
  std::unique_ptr<MultiHeadAttention> mha_;
  Parameter* ln1_gamma_ = nullptr;
  Parameter* ln1_beta_ = nullptr;
  Parameter* ln2_gamma_ = nullptr;
  Parameter* ln2_beta_ = nullptr;
  Parameter* const_xsum_ = nullptr;
  Tensor ctx_bcast_, n1_, mean1_, rstd1_, s1_, n2_, mean2_, rstd2_, out_;
  Tensor grad_n_, grad_s1_, grad_p_, grad_ctx_;
  ConstTensorView s_, ctx_;
  int64_t b_ = 0;
};

}  // namespace loom::layers

#endif  // LOOM_MODEL_LAYERS_SEQUENCE_ARCH_H_
