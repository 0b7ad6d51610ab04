// What every layer of csrc/model/layers shares: the conventions, and the small helpers layers
// use to plan their buffers.
//
// A layer is a class with
//   static StatusOr<std::unique_ptr<X>> Create(const XConfig&, const TensorSpec& input,
//                                              ParameterStore* store, const std::string& prefix,
//                                              Device device);
//       Validates the config against the input spec (dim 0 of `input` is the MAXIMUM batch
//       B), registers the layer's parameters in `store` under "<prefix>.<name>" (exact names
//       of docs/model.md §7, in a fixed order documented in the layer's header) and allocates
//       every activation buffer for B rows on `device`. Nothing is allocated after Create.
//   Forward(ctx, inputs...) -> output view
//       Runs on the first b <= B rows (b = dim 0 of the inputs). The output is a view of a
//       buffer the layer owns, valid until the next Forward. The layer keeps views of its
//       inputs: the caller must leave them unchanged until Backward has run.
//   Backward(ctx, grad_outputs..., grad_inputs...)
//       Parameter gradients ACCUMULATE (+=) into the store's gradient buffer; input
//       gradients (caller-owned views of the inputs' shapes) are OVERWRITTEN (=). An empty
//       grad_input view means "not needed" where the header says so.
//
// Layers are dtype-generic: the store's dtype (f32 for training, f64 for gradient checks)
// is the dtype of every parameter, activation and gradient; ops dispatch on it.
#ifndef LOOM_MODEL_LAYERS_LAYER_H_
#define LOOM_MODEL_LAYERS_LAYER_H_

#include <cstdint>
#include <string>

#include "csrc/core/device.h"
#include "csrc/core/status.h"
#include "csrc/core/tensor.h"
#include "csrc/model/parameter.h"

namespace loom::layers {

using model::Parameter;
using model::ParameterStore;

// "<prefix>.<name>", or name alone when prefix is empty.
std::string JoinName(const std::string& prefix, const std::string& name);

// W init of docs/model.md §7: U(1/√in) for a weight [out, in].
model::InitRule WeightInit(int64_t fan_in);

// The first b rows (dim 0) of a buffer allocated for the maximum batch.
inline TensorView Rows(const Tensor& t, int64_t b) { return t.view().Slice0(0, b); }
inline ConstTensorView CRows(const Tensor& t, int64_t b) { return t.cview().Slice0(0, b); }

// A contiguous buffer (uninitialized) for `shape` in `dtype` on `device`.
inline Tensor NewBuffer(const Shape& shape, DType dtype, Device device) {
  return Tensor::Empty(shape, dtype, device);
}

// InvalidArgument "<where>: <what>" unless cond.
Status Check(bool cond, const std::string& where, const std::string& what);

}  // namespace loom::layers

#endif  // LOOM_MODEL_LAYERS_LAYER_H_
