// Dense model parameters: named tensors carved from ONE contiguous value buffer and ONE
// contiguous gradient buffer.
//
// One buffer makes the data-parallel parts simple and fast: the gradient all-reduce is a few
// large collectives over contiguous ranges (GradientBucketer), the dense optimizer is one
// fused loop over P elements, and a checkpoint is a list of (name, offset, shape).
//
//   ParameterStore store(DType::kF32);
//   Parameter* w = store.Add("head.out.weight", Shape{1, 128}, InitRule::Uniform(0.088));
//   ...                                  // every layer registers its parameters at Create
//   store.Allocate(Device::Cpu());       // values + grads allocated once; views fixed
//   store.Initialize(seed);              // Philox: identical on every rank and backend
//
// Names follow docs/model.md (they are the names in exported checkpoints and in the PyTorch
// reference). Registration order is the layout order, fixed by the model's structure.
#ifndef LOOM_MODEL_PARAMETER_H_
#define LOOM_MODEL_PARAMETER_H_

#include <cstdint>
#include <deque>
#include <map>
#include <string>
#include <vector>

#include "csrc/core/device.h"
#include "csrc/core/status.h"
#include "csrc/core/tensor.h"

namespace loom::model {

// How a parameter is initialized from the Philox stream MakeStream(kRngInitDense, index, 0),
// where index is the parameter's registration index.
struct InitRule {
  enum class Kind { kZeros, kOnes, kUniform, kNormal };
  Kind kind = Kind::kZeros;
  double a = 0.0;  // uniform: bound (U(-a, a)); normal: standard deviation
  static InitRule Zeros() { return {Kind::kZeros, 0.0}; }
  static InitRule Ones() { return {Kind::kOnes, 0.0}; }
  static InitRule Uniform(double bound) { return {Kind::kUniform, bound}; }
  static InitRule Normal(double std) { return {Kind::kNormal, std}; }
  std::string ToString() const;
};

struct Parameter {
  std::string name;
  Shape shape;
  InitRule init;
  int index = 0;       // registration index
  int64_t offset = 0;  // element offset into the store's buffers
  TensorView value;    // valid after Allocate()
  TensorView grad;     // valid after Allocate(); accumulated (+=) by Backward

  int64_t numel() const { return shape.numel(); }
};

class ParameterStore {
 public:
  // dtype: f32 for training, f64 for gradient checks.
  explicit ParameterStore(DType dtype = DType::kF32) : dtype_(dtype) {}
  LOOM_DISALLOW_COPY_AND_ASSIGN(ParameterStore);

  // Registers a parameter; the pointer stays valid for the store's lifetime. Fatal if the
  // name is taken or the store is already allocated (a bug in the model, not user input).
  Parameter* Add(const std::string& name, const Shape& shape, InitRule init);

  // Allocates the two flat buffers on `device` and points every parameter into them.
  void Allocate(Device device);
  bool allocated() const { return values_.defined(); }

  // Fills every value from its InitRule (bit-identical for a given seed on any backend/rank).
  void Initialize(uint64_t seed);
  void ZeroGrad(Stream stream = {});

  DType dtype() const { return dtype_; }
  int64_t total_elements() const { return total_; }
  const std::deque<Parameter>& parameters() const { return params_; }
  std::deque<Parameter>& parameters() { return params_; }
  // nullptr if absent.
  Parameter* Find(const std::string& name);
  const Parameter* Find(const std::string& name) const;

  // The flat buffers, (P) elements each.
  TensorView values() const { return values_.view(); }
  TensorView grads() const { return grads_.view(); }

 private:
  DType dtype_;
  std::deque<Parameter> params_;  // deque: pointers stay valid as parameters are added
  std::map<std::string, int> by_name_;
  int64_t total_ = 0;
  Tensor values_, grads_;
};

}  // namespace loom::model

#endif  // LOOM_MODEL_PARAMETER_H_
