#include "csrc/train/dense_model.h"

#include <utility>

#include "csrc/model/dlrm_baseline.h"

namespace loom::train {
namespace {

// Forwards every call to model::InterFormer (which is not virtual: the adapter keeps it so).
class InterFormerModel final : public DenseModel {
 public:
  explicit InterFormerModel(std::unique_ptr<model::InterFormer> m) : m_(std::move(m)) {}
  std::string type() const override { return kModelInterFormer; }
  model::ParameterStore& parameters() override { return m_->parameters(); }
  void Initialize(uint64_t seed) override { m_->Initialize(seed); }
  Status ValidateInputs(const model::DenseInputs& inputs) const override {
    return m_->ValidateInputs(inputs);
  }
  void SetTraining(bool training, uint64_t seed, uint64_t step) override {
    m_->SetTraining(training, seed, step);
  }
  void Forward(const ExecContext& ctx, const model::DenseInputs& inputs,
               TensorView logits) override {
    m_->Forward(ctx, inputs, logits);
  }
  void Loss(const ExecContext& ctx, ConstTensorView labels, TensorView loss, TensorView grad_logits,
            double grad_scale) override {
    m_->Loss(ctx, labels, loss, grad_logits, grad_scale);
  }
  void Backward(const ExecContext& ctx, ConstTensorView grad_logits) override {
    m_->Backward(ctx, grad_logits);
  }
  const model::DenseInputGrads& input_grads() const override { return m_->input_grads(); }

 private:
  std::unique_ptr<model::InterFormer> m_;
};

class DlrmBaselineModel final : public DenseModel {
 public:
  explicit DlrmBaselineModel(std::unique_ptr<model::DlrmBaseline> m) : m_(std::move(m)) {}
  std::string type() const override { return kModelDlrmBaseline; }
  model::ParameterStore& parameters() override { return m_->parameters(); }
  void Initialize(uint64_t seed) override { m_->Initialize(seed); }
  Status ValidateInputs(const model::DenseInputs& inputs) const override {
    return m_->ValidateInputs(inputs);
  }
  void SetTraining(bool training, uint64_t seed, uint64_t step) override {
    m_->SetTraining(training, seed, step);
  }
  void Forward(const ExecContext& ctx, const model::DenseInputs& inputs,
               TensorView logits) override {
    m_->Forward(ctx, inputs, logits);
  }
  void Loss(const ExecContext& ctx, ConstTensorView labels, TensorView loss, TensorView grad_logits,
            double grad_scale) override {
    m_->Loss(ctx, labels, loss, grad_logits, grad_scale);
  }
  void Backward(const ExecContext& ctx, ConstTensorView grad_logits) override {
    m_->Backward(ctx, grad_logits);
  }
  const model::DenseInputGrads& input_grads() const override { return m_->input_grads(); }

 private:
  std::unique_ptr<model::DlrmBaseline> m_;
};

}  // namespace

StatusOr<std::unique_ptr<DenseModel>> CreateDenseModel(const std::string& type,
                                                       const proto::ModelConfig& config,
                                                       int64_t max_batch, int64_t seq_len,
                                                       Device device) {
  if (type == kModelInterFormer) {
    LOOM_ASSIGN_OR_RETURN(
        auto m, model::InterFormer::Create(config, max_batch, seq_len, DType::kF32, device));
    return std::unique_ptr<DenseModel>(new InterFormerModel(std::move(m)));
  }
  if (type == kModelDlrmBaseline) {
    LOOM_ASSIGN_OR_RETURN(
        auto m, model::DlrmBaseline::Create(config, max_batch, seq_len, DType::kF32, device));
    return std::unique_ptr<DenseModel>(new DlrmBaselineModel(std::move(m)));
  }
  return InvalidArgumentError("model type '" + type + "' is not one of " + kModelInterFormer +
                              ", " + kModelDlrmBaseline);
}

}  // namespace loom::train
