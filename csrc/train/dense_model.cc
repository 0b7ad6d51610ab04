#include "csrc/train/dense_model.h"

#include <utility>

#include "csrc/model/dlrm_baseline.h"

namespace loom::train {
namespace {

// Forwards every call to the model M (model::InterFormer, model::DlrmBaseline: they are not
// virtual, the adapter keeps them so).
template <class M>
class DenseModelAdapter final : public DenseModel {
 public:
  DenseModelAdapter(std::string type, std::unique_ptr<M> m)
      : type_(std::move(type)), m_(std::move(m)) {}
  std::string type() const override { return type_; }
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
  void SetGradsFinalCallback(std::function<void(int64_t, int64_t)> callback) override {
    m_->SetGradsFinalCallback(std::move(callback));
  }
  const model::DenseInputGrads& input_grads() const override { return m_->input_grads(); }

 private:
  std::string type_;
  std::unique_ptr<M> m_;
};

template <class M>
StatusOr<std::unique_ptr<DenseModel>> Adapt(const std::string& type,
                                            const proto::ModelConfig& config, int64_t max_batch,
                                            int64_t seq_len, Device device) {
  LOOM_ASSIGN_OR_RETURN(auto m, M::Create(config, max_batch, seq_len, DType::kF32, device));
  return std::unique_ptr<DenseModel>(new DenseModelAdapter<M>(type, std::move(m)));
}

}  // namespace

std::string ModelTypeName(const proto::ModelConfig& config) {
  return config.architecture() == proto::ModelConfig::ARCHITECTURE_DLRM_BASELINE
             ? kModelDlrmBaseline
             : kModelInterFormer;
}

Status SetModelType(const std::string& name, proto::ModelConfig* config) {
  if (name == kModelInterFormer) {
    config->set_architecture(proto::ModelConfig::ARCHITECTURE_INTERFORMER);
  } else if (name == kModelDlrmBaseline) {
    config->set_architecture(proto::ModelConfig::ARCHITECTURE_DLRM_BASELINE);
  } else {
    return InvalidArgumentError("model type '" + name + "' is not one of " + kModelInterFormer +
                                ", " + kModelDlrmBaseline);
  }
  return Status::Ok();
}

StatusOr<std::unique_ptr<DenseModel>> CreateDenseModel(const std::string& type,
                                                       const proto::ModelConfig& config,
                                                       int64_t max_batch, int64_t seq_len,
                                                       Device device) {
  if (type == kModelInterFormer) {
    return Adapt<model::InterFormer>(type, config, max_batch, seq_len, device);
  }
  if (type == kModelDlrmBaseline) {
    return Adapt<model::DlrmBaseline>(type, config, max_batch, seq_len, device);
  }
  return InvalidArgumentError("model type '" + type + "' is not one of " + kModelInterFormer +
                              ", " + kModelDlrmBaseline);
}

}  // namespace loom::train
