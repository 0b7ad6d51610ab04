// Multi-head attention with a key-padding mask (docs/model.md §4.7), shared by the sequence
// arch (self-attention with RoPE) and PMA (learned queries, no RoPE):
//   q = Xq Wqᵀ + bq,  k = Xk Wkᵀ + bk,  v = Xk Wvᵀ + bv         (.., d); head h = columns [h·hd,
//   (h+1)·hd) RoPE on q and k (rope = true): position p = token index in [0, T) (CLS tokens
//   included) o = softmax over the valid keys of (q kᵀ / √hd) · v        ops::AttentionForward; a
//   query
//                                                              with no valid key outputs 0
//   out = o Woᵀ + bo
// Parameters, in order: q.{weight,bias}, k.{weight,bias}, v.{weight,bias}, o.{weight,bias}.
//
// Two forms:
//   self-attention   Forward(ctx, x (B, T, d), key_mask (B, T) u8) -> (B, T, d); Xq = Xk = x
//   learned queries  ForwardQueries(ctx, queries (Nq, d), x (B, T, d), key_mask) -> (B, Nq, d);
//                    the Nq queries are the same for every row (projected once, broadcast)
// Backward: grad_x overwritten; in the learned-query form grad_queries (Nq, d) is overwritten
// too (the caller adds it to its parameter gradient).
//
// Stacked projections: the projections that read the same input run as ONE GEMM (q, k, v in
// the self-attention form; k, v in the learned-query form). The weights are copied into a
// stacked (P·d, d) scratch each Forward (P = 3 or 2; d² elements each), the output (R, P·d)
// is split into contiguous q, k, v for the attention op, and backward concatenates their
// gradients so that grad_x, the stacked weight gradient and the bias gradient are one GEMM
// each; the stacked gradients are then added to the parameters' (+=). For skinny d (32, 64)
// this reads x once instead of P times.
//
// Packed rows (optional `rows`, (n) i32 flat indices b·T + t, sorted, distinct): the
// position-wise projections then run on those positions only. A position not listed must
// be one whose output nobody reads and whose key is masked (padding): its q, k, v keep
// finite stale values (the attention op ignores masked keys; the output of an unlisted
// query is not read), its output row is 0, and it receives no gradient (grad_x = 0 there).
// In the learned-query form, `rows` selects the keys/values computed (the queries are not
// positions). Without `rows` every position is computed.
// Buffers: the stacked projection and its gradient, q, k, v (RoPE rotates q and k in place),
// o, lse, and their gradients; packed copies of x, o and their gradients.
#ifndef LOOM_MODEL_LAYERS_MHA_H_
#define LOOM_MODEL_LAYERS_MHA_H_

#include <memory>
#include <string>
#include <vector>

#include "csrc/model/layers/layer.h"
#include "csrc/model/layers/linear.h"

namespace loom::layers {

struct MhaConfig {
  int64_t d = 0;
  int64_t heads = 1;
  bool rope = false;
  double rope_base = 10000.0;
  int64_t num_queries = 0;  // 0: self-attention; > 0: learned-query form with Nq queries
};

class MultiHeadAttention {
 public:
  // input: the keys/values input (B, T, d).
  static StatusOr<std::unique_ptr<MultiHeadAttention>> Create(const MhaConfig& config,
                                                              const TensorSpec& input,
                                                              ParameterStore* store,
                                                              const std::string& prefix,
                                                              Device device);

  ConstTensorView Forward(const ExecContext& ctx, ConstTensorView x, ConstTensorView key_mask,
                          ConstTensorView rows = ConstTensorView());
  ConstTensorView ForwardQueries(const ExecContext& ctx, ConstTensorView queries, ConstTensorView x,
                                 ConstTensorView key_mask,
                                 ConstTensorView rows = ConstTensorView());
  // grad_queries: learned-query form only (empty otherwise).
  void Backward(const ExecContext& ctx, ConstTensorView grad_out, TensorView grad_x,
                TensorView grad_queries = TensorView());

 private:
  MultiHeadAttention() = default;
  bool packed() const { return rows_.rank() == 1; }
  // Rows the position-wise projections compute: n (packed) or B·T.
  int64_t ProjRows() const { return packed() ? rows_.dim(0) : b_ * t_; }
  ConstTensorView Attend(const ExecContext& ctx);
  Shape Heads(int64_t b, int64_t t) const { return Shape{b, t, config_.heads, hd_}; }
  // The stacked projection of `x` (P = stacked_w_.size() of q, k, v) and its backward.
  void ProjectStacked(const ExecContext& ctx, ConstTensorView x);
  void BackwardStacked(const ExecContext& ctx, const std::vector<ConstTensorView>& grads,
                       TensorView grad_x);

  MhaConfig config_;
  int64_t hd_ = 0, t_ = 0, tq_ = 0, b_ = 0;
  std::unique_ptr<Linear> q_;                       // learned-query form only
  std::unique_ptr<Linear> o_;                       // on (rows, d)
  std::vector<Parameter*> stacked_w_, stacked_b_;   // [q,] k, v weights and biases
  Tensor w_stack_, b_stack_, gw_stack_, gb_stack_;  // (P·d, d), (P·d)
  Tensor proj_, grad_proj_;                         // (B·T, P·d)
  Tensor x_packed_, grad_x_packed_;                 // (B·T, d)
  Tensor q_buf_, k_buf_, v_buf_;                    // (B, Tq or T, d), zero-initialized
  Tensor att_, lse_, att_packed_, out_;             // o (B, Tq, d), lse (B, H, Tq)
  Tensor grad_out_packed_, grad_att_, grad_q_, grad_k_, grad_v_, grad_qsum_;
  ConstTensorView key_mask_, x_, rows_, x_proj_;  // x_proj_: the projections' input
};

// Pooling by multi-head attention (docs/model.md §4.4, A9): learned queries (Nq, d), no RoPE,
// no residual, no LayerNorm. Parameters, in order: query (Nq, d) ~ N(0, 0.02²), then
// attn.{q,k,v,o}.{weight,bias}.
//   Forward(S (B, T, d), key_mask (B, T), [rows]) -> (B, Nq, d)
//   Backward: grad_S overwritten, grad_query +=.
class Pma {
 public:
  static StatusOr<std::unique_ptr<Pma>> Create(int64_t num_queries, int64_t heads,
                                               const TensorSpec& input, ParameterStore* store,
                                               const std::string& prefix, Device device);
  ConstTensorView Forward(const ExecContext& ctx, ConstTensorView s, ConstTensorView key_mask,
                          ConstTensorView rows = ConstTensorView());
  void Backward(const ExecContext& ctx, ConstTensorView grad_out, TensorView grad_s);

 private:
  Pma() = default;
  Parameter* query_ = nullptr;
  std::unique_ptr<MultiHeadAttention> attn_;
  Tensor grad_query_;
};

}  // namespace loom::layers

#endif  // LOOM_MODEL_LAYERS_MHA_H_
