// DlrmBaseline: the DLRM-style baseline the InterFormer is compared with (docs/results.md):
// embeddings + mean-pooled sequences + an MLP, without any interaction or attention module.
//
//   tokens  X = [ dense_proj(dense) (if m > 0) ‖ sparse_1 … sparse_n ‖ mean(seq_1) … mean(seq_k) ]
//           (B, N, d), N = [m > 0] + n + k; mean(seq_j)[b] = masked mean of seq_j[b] over its
//           real tokens (ops::MaskedMeanTokens; zeros for an empty history)
//   logit   head(flatten(X))   the head of interformer.h (Linear + SiLU per hidden width of
//           head_hidden_dims, then Linear -> 1; optional dropout), input N·d
//   loss    mean BCE-with-logits (as InterFormer::Loss)
//
// Inputs, outputs, modes and the gradient convention are those of model::InterFormer
// (interformer.h): dense (B, m), sparse (B, n, d), seq[j] (B, T, d), seq_mask (B, T) u8 shared
// by the k position-aligned sequences; parameter gradients +=, input gradients =.
// Config fields read (model.proto): embedding_dim, num_dense_features, num_sparse_features,
// num_sequences, head_hidden_dims, head_dropout; the InterFormer-only fields are ignored.
// Parameters, in order: dense_proj.{weight,bias} (m > 0), head.fc<i>.{weight,bias},
// head.out.{weight,bias}; initialized as the InterFormer's (docs/model.md §7).
// Forward/Backward never allocate; deterministic like every op they call.
#ifndef LOOM_MODEL_DLRM_BASELINE_H_
#define LOOM_MODEL_DLRM_BASELINE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <utility>
#include <vector>

#include "csrc/core/device.h"
#include "csrc/core/status.h"
#include "csrc/core/tensor.h"
#include "csrc/model/interformer.h"
#include "csrc/model/layers/head.h"
#include "csrc/model/layers/linear.h"
#include "csrc/model/parameter.h"
#include "csrc/proto/model.pb.h"

namespace loom::model {

class DlrmBaseline {
 public:
  // Validates the fields above ("model.num_sequences: must be in [0, 64], got -1") and plans
  // every buffer for max_batch samples of seq_len tokens.
  static StatusOr<std::unique_ptr<DlrmBaseline>> Create(const proto::ModelConfig& config,
                                                        int64_t max_batch, int64_t seq_len,
                                                        DType dtype, Device device);

  ParameterStore& parameters() { return store_; }
  const ParameterStore& parameters() const { return store_; }
  void Initialize(uint64_t seed) { store_.Initialize(seed); }
  Status ValidateInputs(const DenseInputs& inputs) const;
  void SetTraining(bool training, uint64_t seed = 0, uint64_t step = 0);
  void Forward(const ExecContext& ctx, const DenseInputs& inputs, TensorView logits);
  void Loss(const ExecContext& ctx, ConstTensorView labels, TensorView loss, TensorView grad_logits,
            double grad_scale = 1.0);
  void Backward(const ExecContext& ctx, ConstTensorView grad_logits);
  const DenseInputGrads& input_grads() const { return input_grads_; }
  // As InterFormer::SetGradsFinalCallback: during Backward, the head's parameter range is
  // reported after the head's backward, then dense_proj's (m > 0) after its own.
  void SetGradsFinalCallback(std::function<void(int64_t begin, int64_t end)> callback) {
    grads_final_ = std::move(callback);
  }

  int64_t num_tokens() const { return num_tokens_; }

 private:
  explicit DlrmBaseline(DType dtype) : store_(dtype) {}

  int64_t d_ = 0, m_ = 0, n_ = 0, k_ = 0, T_ = 0, num_tokens_ = 0;
  int64_t max_batch_ = 0, b_ = 0;
  DType dtype_ = DType::kF32;
  Device device_;
  ParameterStore store_;
  std::unique_ptr<layers::Linear> dense_proj_;
  std::unique_ptr<layers::Head> head_;
  int64_t head_begin_ = 0;  // dense_proj's range is [0, head_begin_), the head's the rest
  std::function<void(int64_t, int64_t)> grads_final_;

  DenseInputs inputs_;
  Tensor x_;                  // (max_batch, N, d)
  std::vector<Tensor> mean_;  // k x (max_batch, d)
  ConstTensorView logits_view_;
  Tensor grad_x_;          // (max_batch, N, d)
  Tensor grad_dense_tok_;  // (max_batch, d)
  std::vector<Tensor> grad_mean_;
  Tensor grad_dense_, grad_sparse_;
  std::vector<Tensor> grad_seq_;
  DenseInputGrads input_grads_;
};

}  // namespace loom::model

#endif  // LOOM_MODEL_DLRM_BASELINE_H_
