// DenseModel: the data-parallel part of a CTR model as the trainer drives it — embedded inputs
// in, logits and a loss out, explicit backward to the parameters and to the embeddings.
//
// Two implementations:
//   "interformer"    csrc/model/interformer.h (the model of the paper)
//   "dlrm_baseline"  csrc/model/dlrm_baseline.h (embeddings + mean-pooled sequences + MLP)
// Both take model::DenseInputs and return model::DenseInputGrads with the shapes of
// interformer.h (B local batch <= max_batch, m dense, n sparse, k sequences, T tokens, d dim):
//   dense (B, m), sparse (B, n, d), seq[j] (B, T, d), seq_mask (B, T) u8 -> logits (B).
// Gradient convention: parameter gradients accumulate (+=) into parameters().grads(); input
// gradients are overwritten (=) and valid until the next Backward.
#ifndef LOOM_TRAIN_DENSE_MODEL_H_
#define LOOM_TRAIN_DENSE_MODEL_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "csrc/core/device.h"
#include "csrc/core/status.h"
#include "csrc/core/tensor.h"
#include "csrc/model/interformer.h"
#include "csrc/model/parameter.h"
#include "csrc/proto/model.pb.h"

namespace loom::train {

class DenseModel {
 public:
  virtual ~DenseModel() = default;

  // "interformer" or "dlrm_baseline".
  virtual std::string type() const = 0;
  virtual model::ParameterStore& parameters() = 0;
  virtual void Initialize(uint64_t seed) = 0;
  virtual Status ValidateInputs(const model::DenseInputs& inputs) const = 0;
  // Training mode (dropout on, masks from Philox (seed, site, step)) or evaluation mode.
  virtual void SetTraining(bool training, uint64_t seed, uint64_t step) = 0;
  virtual void Forward(const ExecContext& ctx, const model::DenseInputs& inputs,
                       TensorView logits) = 0;
  // Mean BCE-with-logits of the last Forward: loss (1 element) and grad_logits (B) =
  // grad_scale * d loss / d logits. Either may be empty.
  virtual void Loss(const ExecContext& ctx, ConstTensorView labels, TensorView loss,
                    TensorView grad_logits, double grad_scale) = 0;
  virtual void Backward(const ExecContext& ctx, ConstTensorView grad_logits) = 0;
  // During every Backward, callback(begin, end) reports element ranges [begin, end) of
  // parameters().grads() as soon as no later work of that Backward writes them (ranges
  // non-empty, disjoint, covering every element once per Backward; see
  // InterFormer::SetGradsFinalCallback). Set once at setup; empty = off.
  virtual void SetGradsFinalCallback(std::function<void(int64_t begin, int64_t end)> callback) = 0;
  virtual const model::DenseInputGrads& input_grads() const = 0;
};

// The model types CreateDenseModel accepts: the names of model.architecture
// (ModelConfig::Architecture) in flags, manifests and exports.
inline constexpr char kModelInterFormer[] = "interformer";
inline constexpr char kModelDlrmBaseline[] = "dlrm_baseline";

// The name of config.architecture(): kModelInterFormer or kModelDlrmBaseline.
std::string ModelTypeName(const proto::ModelConfig& config);
// Sets config->architecture from a name; InvalidArgument naming the accepted ones otherwise.
Status SetModelType(const std::string& name, proto::ModelConfig* config);

// Creates the model `type` for at most max_batch samples of seq_len tokens (config: the model
// section; both types read its input-shape fields, the baseline also head_hidden_dims and
// head_dropout). InvalidArgument for an unknown type or a bad config (naming the field).
StatusOr<std::unique_ptr<DenseModel>> CreateDenseModel(const std::string& type,
                                                       const proto::ModelConfig& config,
                                                       int64_t max_batch, int64_t seq_len,
                                                       Device device);

}  // namespace loom::train

#endif  // LOOM_TRAIN_DENSE_MODEL_H_
