// Tensors: a dense, row-major (C-contiguous) block of elements of one DType on one Device.
//
//   Shape        up to kMaxDims extents, e.g. {B, T, D}.
//   TensorSpec   shape + dtype: what a layer plans with before anything is allocated.
//   TensorView   non-owning, mutable view (pointer + spec + device). Ops take views.
//   ConstTensorView  the same, read-only. A TensorView converts to it implicitly.
//   Tensor       owns its storage (host: 64-byte aligned; CUDA: the stream-ordered pool) and
//                hands out views. Copyable handles share storage (like a shared_ptr).
//
// Views are always contiguous; a "slice" along dimension 0 is a view too (Slice0).
#ifndef LOOM_CORE_TENSOR_H_
#define LOOM_CORE_TENSOR_H_

#include <array>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include <glog/logging.h>

#include "csrc/core/device.h"
#include "csrc/core/dtype.h"

namespace loom {

class Shape {
 public:
  static constexpr int kMaxDims = 6;

  Shape() = default;
  Shape(std::initializer_list<int64_t> dims);
  explicit Shape(const std::vector<int64_t>& dims);

  int rank() const { return rank_; }
  int64_t operator[](int i) const {
    DCHECK(i >= 0 && i < rank_);
    return dims_[i];
  }
  int64_t dim(int i) const;  // negative i counts from the end
  int64_t numel() const;
  std::vector<int64_t> dims() const {
    return std::vector<int64_t>(dims_.begin(), dims_.begin() + rank_);
  }
  bool operator==(const Shape& o) const;
  bool operator!=(const Shape& o) const { return !(*this == o); }
  std::string ToString() const;  // "(2, 3, 4)"

 private:
  std::array<int64_t, kMaxDims> dims_{};
  int rank_ = 0;
};

struct TensorSpec {
  Shape shape;
  DType dtype = DType::kF32;

  int64_t numel() const { return shape.numel(); }
  int64_t nbytes() const { return shape.numel() * DTypeSize(dtype); }
  bool operator==(const TensorSpec& o) const { return shape == o.shape && dtype == o.dtype; }
  std::string ToString() const;  // "f32(2, 3)"
};

template <bool kConst>
class BasicTensorView {
 public:
  using Ptr = std::conditional_t<kConst, const void*, void*>;

  BasicTensorView() = default;
  BasicTensorView(Ptr data, TensorSpec spec, Device device = Device::Cpu())
      : data_(data), spec_(spec), device_(device) {}
  // TensorView -> ConstTensorView.
  template <bool kOther, typename = std::enable_if_t<kConst && !kOther>>
  BasicTensorView(const BasicTensorView<kOther>& o)  // NOLINT: implicit by design
      : data_(o.raw()), spec_(o.spec()), device_(o.device()) {}

  Ptr raw() const { return data_; }
  template <typename T>
  std::conditional_t<kConst, const T*, T*> data() const {
    DCHECK(DTypeOf<std::remove_const_t<T>>::value == spec_.dtype)
        << "view holds " << DTypeName(spec_.dtype);
    return static_cast<std::conditional_t<kConst, const T*, T*>>(data_);
  }
  const TensorSpec& spec() const { return spec_; }
  const Shape& shape() const { return spec_.shape; }
  DType dtype() const { return spec_.dtype; }
  Device device() const { return device_; }
  int64_t numel() const { return spec_.numel(); }
  int64_t nbytes() const { return spec_.nbytes(); }
  int64_t dim(int i) const { return spec_.shape.dim(i); }
  int rank() const { return spec_.shape.rank(); }
  bool empty() const { return data_ == nullptr || numel() == 0; }

  // Rows [begin, end) along dimension 0.
  BasicTensorView Slice0(int64_t begin, int64_t end) const;
  // Same storage, another shape with the same numel.
  BasicTensorView Reshape(const Shape& shape) const;

 private:
  Ptr data_ = nullptr;
  TensorSpec spec_;
  Device device_;
};

using TensorView = BasicTensorView<false>;
using ConstTensorView = BasicTensorView<true>;

class Tensor {
 public:
  Tensor() = default;
  // Allocates (uninitialized) storage for `spec` on `device`.
  static Tensor Empty(const TensorSpec& spec, Device device = Device::Cpu());
  static Tensor Empty(const Shape& shape, DType dtype, Device device = Device::Cpu()) {
    return Empty(TensorSpec{shape, dtype}, device);
  }
  // Allocates and fills with zero bytes.
  static Tensor Zeros(const TensorSpec& spec, Device device = Device::Cpu());
  static Tensor Zeros(const Shape& shape, DType dtype, Device device = Device::Cpu()) {
    return Zeros(TensorSpec{shape, dtype}, device);
  }
  // A host tensor holding a copy of `values`.
  template <typename T>
  static Tensor FromVector(const std::vector<T>& values, const Shape& shape);

  bool defined() const { return storage_ != nullptr; }
  TensorView view() const { return TensorView(data_, spec_, device_); }
  ConstTensorView cview() const { return ConstTensorView(data_, spec_, device_); }
  operator TensorView() const { return view(); }        // NOLINT
  operator ConstTensorView() const { return cview(); }  // NOLINT

  template <typename T>
  T* data() const {
    return view().data<T>();
  }
  void* raw() const { return data_; }
  const TensorSpec& spec() const { return spec_; }
  const Shape& shape() const { return spec_.shape; }
  DType dtype() const { return spec_.dtype; }
  Device device() const { return device_; }
  int64_t numel() const { return spec_.numel(); }
  int64_t nbytes() const { return spec_.nbytes(); }
  int64_t dim(int i) const { return spec_.shape.dim(i); }

  // Host copy of the contents as a vector (copies from the device when needed).
  template <typename T>
  std::vector<T> ToVector() const;
  // A deep copy on `device`.
  Tensor To(Device device) const;

 private:
  std::shared_ptr<void> storage_;
  void* data_ = nullptr;
  TensorSpec spec_;
  Device device_;
};

// Copies src into dst (same spec); any device pair. Synchronous on the default stream.
void CopyTensor(ConstTensorView src, TensorView dst);
// Sets every byte of dst to zero.
void ZeroTensor(TensorView dst, Stream stream = {});

template <typename T>
Tensor Tensor::FromVector(const std::vector<T>& values, const Shape& shape) {
  CHECK_EQ(static_cast<int64_t>(values.size()), shape.numel()) << "shape " << shape.ToString();
  Tensor t = Empty(shape, DTypeOf<T>::value);
  if (!values.empty()) std::memcpy(t.data_, values.data(), values.size() * sizeof(T));
  return t;
}

template <typename T>
std::vector<T> Tensor::ToVector() const {
  CHECK(DTypeOf<T>::value == spec_.dtype) << "tensor holds " << DTypeName(spec_.dtype);
  std::vector<T> out(static_cast<size_t>(numel()));
  if (!out.empty()) {
    CopyTensor(cview(), TensorView(out.data(), spec_, Device::Cpu()));
  }
  return out;
}

}  // namespace loom

#endif  // LOOM_CORE_TENSOR_H_
