#include "csrc/model/parameter.h"

#include <sstream>

#include "csrc/core/philox.h"
#include "csrc/core/rng.h"

namespace loom::model {

std::string InitRule::ToString() const {
  std::ostringstream os;
  switch (kind) {
    case Kind::kZeros:
      return "zeros";
    case Kind::kOnes:
      return "ones";
    case Kind::kUniform:
      os << "uniform(-" << a << ", " << a << ")";
      return os.str();
    case Kind::kNormal:
      os << "normal(0, " << a << ")";
      return os.str();
  }
  return "?";
}

Parameter* ParameterStore::Add(const std::string& name, const Shape& shape, InitRule init) {
  CHECK(!allocated()) << "parameter '" << name << "' added after Allocate()";
  CHECK(by_name_.emplace(name, static_cast<int>(params_.size())).second)
      << "duplicate parameter name '" << name << "'";
  Parameter p;
  p.name = name;
  p.shape = shape;
  p.init = init;
  p.index = static_cast<int>(params_.size());
  p.offset = total_;
  total_ += shape.numel();
  params_.push_back(std::move(p));
  return &params_.back();
}

void ParameterStore::Allocate(Device device) {
  CHECK(!allocated()) << "ParameterStore::Allocate called twice";
  values_ = Tensor::Zeros(Shape{total_}, dtype_, device);
  grads_ = Tensor::Zeros(Shape{total_}, dtype_, device);
  for (Parameter& p : params_) {
    p.value = values_.view().Slice0(p.offset, p.offset + p.numel()).Reshape(p.shape);
    p.grad = grads_.view().Slice0(p.offset, p.offset + p.numel()).Reshape(p.shape);
  }
}

void ParameterStore::Initialize(uint64_t seed) {
  CHECK(allocated());
  const ExecContext ctx{values_.device(), Stream{}};
  for (Parameter& p : params_) {
    const uint64_t stream = MakeStream(kRngInitDense, static_cast<uint64_t>(p.index), 0);
    switch (p.init.kind) {
      case InitRule::Kind::kZeros:
        ZeroTensor(p.value);
        break;
      case InitRule::Kind::kOnes:
        FillUniform(ctx, p.value, seed, stream, 1.0, 1.0);
        break;  // 1 + 0·u
      case InitRule::Kind::kUniform:
        FillUniform(ctx, p.value, seed, stream, -p.init.a, p.init.a);
        break;
      case InitRule::Kind::kNormal:
        FillNormal(ctx, p.value, seed, stream, 0.0, p.init.a);
        break;
    }
  }
}

void ParameterStore::ZeroGrad(Stream stream) { ZeroTensor(grads_.view(), stream); }

Parameter* ParameterStore::Find(const std::string& name) {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &params_[it->second];
}

const Parameter* ParameterStore::Find(const std::string& name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &params_[it->second];
}

}  // namespace loom::model
