// DenseOptimizer: validation, planning (state tensors, chunk tables) and the dispatch of the
// two fused kernels of a step. The math is in fused_update.h; the backends in
// dense_optimizer_cpu.cc and dense_optimizer_cuda.cu.
#include "csrc/optim/dense_optimizer.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <set>
#include <utility>

#include "csrc/core/dispatch.h"
#include "csrc/core/gpu.h"
#include "csrc/optim/config_errors.h"

namespace loom::optim {
namespace {

using Config = proto::OptimizerConfig;

using internal::FieldError;
using internal::Num;

bool Finite(double v) { return std::isfinite(v); }

// Tensor of `bytes` raw bytes on `device` holding a copy of `src`.
Tensor BytesOn(const void* src, int64_t bytes, Device device) {
  Tensor host = Tensor::Empty(Shape{bytes}, DType::kU8);
  if (bytes > 0) std::memcpy(host.raw(), src, static_cast<size_t>(bytes));
  if (device.is_cpu()) return host;
  Tensor dev = Tensor::Empty(Shape{bytes}, DType::kU8, device);
  CopyTensor(host.cview(), dev.view());
  return dev;
}

}  // namespace

Status ValidateOptimizerConfig(const Config& c, const std::string& path) {
  if (!Config::Type_IsValid(c.type())) {
    return FieldError(path, "type", "unknown optimizer type", static_cast<int>(c.type()));
  }
  if (!(c.lr() > 0.0) || !Finite(c.lr())) {
    return FieldError(path, "lr", "must be > 0 and finite", c.lr());
  }
  if (!(c.beta1() >= 0.0 && c.beta1() < 1.0)) {
    return FieldError(path, "beta1", "must be in [0, 1)", c.beta1());
  }
  if (!(c.beta2() >= 0.0 && c.beta2() < 1.0)) {
    return FieldError(path, "beta2", "must be in [0, 1)", c.beta2());
  }
  if (!(c.eps() > 0.0) || !Finite(c.eps())) {
    return FieldError(path, "eps", "must be > 0 and finite", c.eps());
  }
  if (!(c.weight_decay() >= 0.0) || !Finite(c.weight_decay())) {
    return FieldError(path, "weight_decay", "must be >= 0 and finite", c.weight_decay());
  }
  if (!(c.momentum() >= 0.0 && c.momentum() < 1.0)) {
    return FieldError(path, "momentum", "must be in [0, 1)", c.momentum());
  }
  if (!(c.dampening() >= 0.0 && c.dampening() <= 1.0)) {
    return FieldError(path, "dampening", "must be in [0, 1]", c.dampening());
  }
  if (c.nesterov() && c.type() != Config::OPTIMIZER_TYPE_SGD) {
    return InvalidArgumentError(path + ".nesterov: only for OPTIMIZER_TYPE_SGD, type is " +
                                Config::Type_Name(c.type()));
  }
  if (c.nesterov() && (c.momentum() <= 0.0 || c.dampening() != 0.0)) {
    return InvalidArgumentError(path +
                                ".nesterov: requires momentum > 0 and dampening == 0, got "
                                "momentum " +
                                Num(c.momentum()) + " and dampening " + Num(c.dampening()));
  }
  if (c.type() != Config::OPTIMIZER_TYPE_SGD && (c.momentum() != 0.0 || c.dampening() != 0.0)) {
    return InvalidArgumentError(path +
                                ".momentum/dampening: only for OPTIMIZER_TYPE_SGD (Adam's "
                                "momentum is beta1), type is " +
                                Config::Type_Name(c.type()));
  }
  if (!(c.max_grad_norm() >= 0.0) || !Finite(c.max_grad_norm())) {
    return FieldError(path, "max_grad_norm", "must be >= 0 and finite (0 = off)",
                      c.max_grad_norm());
  }
  return ValidateLrSchedule(c.lr_schedule(), path + ".lr_schedule");
}

DenseOptimizer::DenseOptimizer(const Config& config, std::vector<DenseParam> params)
    : config_(config), params_(std::move(params)) {}

DenseOptimizer::~DenseOptimizer() = default;

StatusOr<std::unique_ptr<DenseOptimizer>> CreateDenseOptimizer(const Config& config,
                                                               std::vector<DenseParam> params) {
  return DenseOptimizer::Create(config, std::move(params));
}

StatusOr<std::unique_ptr<DenseOptimizer>> DenseOptimizer::Create(const Config& config,
                                                                 std::vector<DenseParam> params) {
  LOOM_RETURN_IF_ERROR(ValidateOptimizerConfig(config));
  std::set<std::string> names;
  for (size_t i = 0; i < params.size(); ++i) {
    const DenseParam& p = params[i];
    const std::string where = "dense parameter " + std::to_string(i) + " '" + p.name + "'";
    if (p.name.empty()) return InvalidArgumentError(where + ": empty name");
    if (!names.insert(p.name).second) return InvalidArgumentError(where + ": duplicate name");
    if (p.value.dtype() != DType::kF32 && p.value.dtype() != DType::kF64) {
      return InvalidArgumentError(where + ": value is " + p.value.spec().ToString() +
                                  ", the dense optimizer supports f32 and f64");
    }
    if (!(p.grad.spec() == p.value.spec())) {
      return InvalidArgumentError(where + ": grad " + p.grad.spec().ToString() +
                                  " does not match value " + p.value.spec().ToString());
    }
    if (p.grad.device() != p.value.device()) {
      return InvalidArgumentError(where + ": grad on " + p.grad.device().ToString() +
                                  ", value on " + p.value.device().ToString());
    }
    if (p.value.numel() > 0 && (p.value.raw() == nullptr || p.grad.raw() == nullptr)) {
      return InvalidArgumentError(where + ": null value or grad storage");
    }
    if (i > 0 && p.value.device() != params[0].value.device()) {
      return InvalidArgumentError(where + ": on " + p.value.device().ToString() +
                                  ", parameter 0 on " + params[0].value.device().ToString() +
                                  " (one optimizer serves one device)");
    }
    if (i > 0 && p.value.dtype() != params[0].value.dtype()) {
      return InvalidArgumentError(where + ": " + DTypeName(p.value.dtype()) + ", parameter 0 is " +
                                  DTypeName(params[0].value.dtype()) +
                                  " (one dtype per optimizer)");
    }
  }
  if (!params.empty() && params[0].value.device().is_cuda() && !gpu::CudaAvailable()) {
    return UnimplementedError("dense optimizer on " + params[0].value.device().ToString() + ": " +
                              gpu::UnavailableReason());
  }
  std::unique_ptr<DenseOptimizer> opt(new DenseOptimizer(config, std::move(params)));
  LOOM_RETURN_IF_ERROR(opt->Plan());
  return opt;
}

Status DenseOptimizer::Plan() {
  device_ = params_.empty() ? Device::Cpu() : params_[0].value.device();
  dtype_ = params_.empty() ? DType::kF32 : params_[0].value.dtype();
  if (config_.lr_schedule().type() == Config::LrSchedule::LR_SCHEDULE_REDUCE_ON_PLATEAU) {
    plateau_.emplace(config_.lr_schedule().plateau());
  }
  switch (config_.type()) {
    case Config::OPTIMIZER_TYPE_ADAM:
    case Config::OPTIMIZER_TYPE_ADAMW:
      state_names_ = {"exp_avg", "exp_avg_sq"};
      break;
    case Config::OPTIMIZER_TYPE_SGD:
      if (config_.momentum() != 0.0) state_names_ = {"momentum_buffer"};
      break;
    default:
      return InternalError("unhandled optimizer type");
  }

  std::vector<internal::TensorSlot> slots(params_.size());
  std::vector<internal::Chunk> chunks;
  state_.resize(params_.size());
  for (size_t i = 0; i < params_.size(); ++i) {
    const DenseParam& p = params_[i];
    for (size_t k = 0; k < state_names_.size(); ++k) {
      state_[i].push_back(Tensor::Zeros(p.value.spec(), device_));
    }
    internal::TensorSlot& s = slots[i];
    s.value = p.value.raw();
    s.grad = p.grad.raw();
    s.state0 = state_[i].size() > 0 ? state_[i][0].raw() : nullptr;
    s.state1 = state_[i].size() > 1 ? state_[i][1].raw() : nullptr;
    s.numel = p.value.numel();
    s.apply_weight_decay = p.apply_weight_decay ? 1 : 0;
    for (int64_t begin = 0; begin < s.numel; begin += internal::kChunk) {
      internal::Chunk c;
      c.tensor = static_cast<int32_t>(i);
      c.begin = begin;
      c.length = static_cast<int32_t>(std::min<int64_t>(internal::kChunk, s.numel - begin));
      chunks.push_back(c);
    }
  }
  slots_ = BytesOn(slots.data(), static_cast<int64_t>(slots.size() * sizeof(slots[0])), device_);
  chunks_ =
      BytesOn(chunks.data(), static_cast<int64_t>(chunks.size() * sizeof(chunks[0])), device_);
  partials_ = Tensor::Zeros(Shape{static_cast<int64_t>(chunks.size())}, DType::kF64, device_);
  norm_sq_ = Tensor::Zeros(Shape{1}, DType::kF64, device_);

  plan_.dtype = dtype_;
  plan_.num_chunks = static_cast<int64_t>(chunks.size());
  plan_.slots = static_cast<const internal::TensorSlot*>(slots_.raw());
  plan_.chunks = static_cast<const internal::Chunk*>(chunks_.raw());
  plan_.partials = static_cast<double*>(partials_.raw());
  plan_.norm_sq = static_cast<double*>(norm_sq_.raw());
  return Status::Ok();
}

double DenseOptimizer::LearningRate() const {
  const double lr = ScheduledLearningRate(config_.lr(), config_.lr_schedule(), step_);
  return plateau_ ? lr * plateau_->scale() : lr;
}

internal::UpdateScalars DenseOptimizer::Scalars() const {
  internal::UpdateScalars s;
  switch (config_.type()) {
    case Config::OPTIMIZER_TYPE_ADAMW:
      s.kind = internal::UpdateKind::kAdamW;
      break;
    case Config::OPTIMIZER_TYPE_SGD:
      s.kind = internal::UpdateKind::kSgd;
      break;
    default:
      s.kind = internal::UpdateKind::kAdam;
      break;
  }
  const double k = static_cast<double>(step_ + 1);  // bias-correction exponent
  s.lr = LearningRate();
  s.beta1 = config_.beta1();
  s.beta2 = config_.beta2();
  s.eps = config_.eps();
  s.weight_decay = config_.weight_decay();
  s.bias_correction1 = 1.0 - std::pow(config_.beta1(), k);
  s.bias_correction2_sqrt = std::sqrt(1.0 - std::pow(config_.beta2(), k));
  s.momentum = config_.momentum();
  s.dampening = config_.dampening();
  s.nesterov = config_.nesterov() ? 1 : 0;
  s.first_step = step_ == 0 ? 1 : 0;
  s.max_grad_norm = config_.max_grad_norm();
  return s;
}

void DenseOptimizer::Step(const ExecContext& ctx) {
  if (params_.empty()) {  // nothing to update on any device; the count still advances
    ++step_;
    return;
  }
  CHECK(ctx.device == device_) << "DenseOptimizer::Step on " << ctx.device.ToString()
                               << ", parameters on " << device_.ToString();
  const internal::UpdateScalars s = Scalars();
  if (s.max_grad_norm > 0.0) {
    LOOM_DISPATCH(ctx, GradNormSq, plan_);
  }
  LOOM_DISPATCH(ctx, FusedUpdate, plan_, s);
  ++step_;
  has_stepped_ = true;
  last_stream_ = ctx.stream;
}

double DenseOptimizer::last_grad_norm() const {
  if (!has_stepped_ || !(config_.max_grad_norm() > 0.0)) {
    return std::numeric_limits<double>::quiet_NaN();
  }
  double norm_sq = 0.0;
  if (device_.is_cpu()) {
    norm_sq = *plan_.norm_sq;
  } else {
    gpu::MemcpyAsync(&norm_sq, plan_.norm_sq, sizeof(double), gpu::CopyKind::kDeviceToHost,
                     last_stream_);
    gpu::StreamSynchronize(last_stream_);
  }
  return std::sqrt(norm_sq);
}

bool DenseOptimizer::ObserveMetric(double metric) {
  return plateau_ ? plateau_->Observe(metric) : false;
}

std::vector<NamedStateTensor> DenseOptimizer::StateTensors() const {
  std::vector<NamedStateTensor> out;
  for (size_t i = 0; i < params_.size(); ++i) {
    for (size_t k = 0; k < state_[i].size(); ++k) {
      out.push_back({params_[i].name + "/" + state_names_[k], state_[i][k].view()});
    }
  }
  return out;
}

proto::DenseOptimizerState DenseOptimizer::SaveState() const {
  proto::DenseOptimizerState s;
  s.set_type(config_.type());
  s.set_step(step_);
  if (plateau_) *s.mutable_plateau() = plateau_->Save();
  return s;
}

Status DenseOptimizer::LoadState(const proto::DenseOptimizerState& s) {
  if (s.type() != config_.type()) {
    return InvalidArgumentError("optimizer_state.type: state was written by " +
                                Config::Type_Name(s.type()) + ", the optimizer is " +
                                Config::Type_Name(config_.type()));
  }
  if (s.step() < 0) return FieldError("optimizer_state", "step", "must be >= 0", s.step());
  if (plateau_ && !s.has_plateau()) {
    return InvalidArgumentError(
        "optimizer_state.plateau: missing, but the schedule is LR_SCHEDULE_REDUCE_ON_PLATEAU");
  }
  if (!plateau_ && s.has_plateau()) {
    return InvalidArgumentError("optimizer_state.plateau: present, but the schedule is " +
                                Config::LrSchedule::Type_Name(config_.lr_schedule().type()));
  }
  if (plateau_) {
    ReducePlateau restored = *plateau_;
    LOOM_RETURN_IF_ERROR(restored.Load(s.plateau(), "optimizer_state.plateau"));
    plateau_ = restored;
  }
  step_ = s.step();
  return Status::Ok();
}

}  // namespace loom::optim
