// Helpers for the layer gradient checks: random f64 inputs, parameter init, and the glue that
// lets tests/testing/gradcheck.h perturb parameters that live in a ParameterStore.
#ifndef LOOM_TESTS_MODEL_LAYERS_LAYER_TEST_UTIL_H_
#define LOOM_TESTS_MODEL_LAYERS_LAYER_TEST_UTIL_H_

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "csrc/core/philox.h"
#include "csrc/core/rng.h"
#include "csrc/core/tensor.h"
#include "csrc/model/parameter.h"
#include "tests/testing/gradcheck.h"

namespace loom::layers::test {

inline const ExecContext kCpu = ExecContext::Cpu();

// Uniform(lo, hi) f64 host tensor from Philox (seed, stream).
inline Tensor RandomF64(const Shape& shape, uint64_t stream, double lo = -1.0, double hi = 1.0) {
  Tensor t = Tensor::Empty(shape, DType::kF64);
  FillUniform(kCpu, t.view(), 4242, MakeStream(kRngTest, stream, 7), lo, hi);
  return t;
}

// Pre-padded key mask (B, T): row i has lengths[i] real tokens at the end.
inline Tensor PaddedMask(int64_t t, const std::vector<int64_t>& lengths) {
  const int64_t b = static_cast<int64_t>(lengths.size());
  Tensor m = Tensor::Zeros(Shape{b, t}, DType::kU8);
  for (int64_t i = 0; i < b; ++i) {
    for (int64_t j = t - lengths[i]; j < t; ++j) m.data<uint8_t>()[i * t + j] = 1;
  }
  return m;
}

// Allocates (unless done) and initializes the store (Philox seed), then adds N(0, 0.1²) noise to
// the zero/one-initialized parameters (biases, LayerNorm) so every parameter is exercised.
inline void InitStore(model::ParameterStore* store, uint64_t seed = 11) {
  if (!store->allocated()) store->Allocate(Device::Cpu());
  store->Initialize(seed);
  for (model::Parameter& p : store->parameters()) {
    if (p.init.kind != model::InitRule::Kind::kZeros &&
        p.init.kind != model::InitRule::Kind::kOnes) {
      continue;
    }
    Tensor noise = Tensor::Empty(p.shape, DType::kF64);
    FillNormal(kCpu, noise.view(), seed, MakeStream(kRngTest, p.index, 3), 0.0, 0.1);
    for (int64_t i = 0; i < p.numel(); ++i) p.value.data<double>()[i] += noise.data<double>()[i];
  }
}

// The store's parameters as gradcheck variables (copies, kAccumulate). Before each forward
// the test calls PushValues; around each backward PushGrads / PullGrads.
class ParamVars {
 public:
  explicit ParamVars(model::ParameterStore* store) : store_(store) {
    for (model::Parameter& p : store->parameters()) {
      testing::GradCheckVar v;
      v.name = p.name;
      v.value = Tensor::Empty(p.shape, DType::kF64);
      std::memcpy(v.value.raw(), p.value.raw(), p.value.nbytes());
      v.grad = Tensor::Zeros(p.shape, DType::kF64);
      v.mode = testing::GradMode::kAccumulate;
      vars_.push_back(v);
    }
  }
  const std::vector<testing::GradCheckVar>& vars() const { return vars_; }
  void PushValues() const {
    size_t i = 0;
    for (model::Parameter& p : store_->parameters()) {
      std::memcpy(p.value.raw(), vars_[i++].value.raw(), p.value.nbytes());
    }
  }
  void PushGrads() const {
    size_t i = 0;
    for (model::Parameter& p : store_->parameters()) {
      std::memcpy(p.grad.raw(), vars_[i++].grad.raw(), p.grad.nbytes());
    }
  }
  void PullGrads() const {
    size_t i = 0;
    for (model::Parameter& p : store_->parameters()) {
      std::memcpy(vars_[i++].grad.raw(), p.grad.raw(), p.grad.nbytes());
    }
  }

 private:
  model::ParameterStore* store_;
  std::vector<testing::GradCheckVar> vars_;
};

// Input variables (overwrite mode) followed by the parameters.
inline std::vector<testing::GradCheckVar> WithParams(std::vector<testing::GradCheckVar> inputs,
                                                     const ParamVars& params) {
  for (const auto& v : params.vars()) inputs.push_back(v);
  return inputs;
}

inline void CopyOut(ConstTensorView src, const Tensor& dst) {
  CHECK(src.shape() == dst.shape()) << src.shape().ToString() << " vs " << dst.shape().ToString();
  std::memcpy(dst.raw(), src.raw(), src.nbytes());
}

// The parameter names of a store, in registration order.
inline std::vector<std::string> Names(const model::ParameterStore& store) {
  std::vector<std::string> out;
  for (const model::Parameter& p : store.parameters()) out.push_back(p.name);
  return out;
}

}  // namespace loom::layers::test

#endif  // LOOM_TESTS_MODEL_LAYERS_LAYER_TEST_UTIL_H_
