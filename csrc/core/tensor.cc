#include "csrc/core/tensor.h"

#include <cstring>
#include <sstream>

#include "csrc/core/allocator.h"
#include "csrc/core/gpu.h"

namespace loom {

Shape::Shape(std::initializer_list<int64_t> dims) : Shape(std::vector<int64_t>(dims)) {}

Shape::Shape(const std::vector<int64_t>& dims) {
  CHECK_LE(static_cast<int>(dims.size()), kMaxDims) << "at most " << kMaxDims << " dimensions";
  rank_ = static_cast<int>(dims.size());
  for (int i = 0; i < rank_; ++i) {
    CHECK_GE(dims[i], 0) << "negative extent in dimension " << i;
    dims_[i] = dims[i];
  }
}

int64_t Shape::dim(int i) const {
  if (i < 0) i += rank_;
  CHECK(i >= 0 && i < rank_) << "dimension " << i << " of a rank-" << rank_ << " shape";
  return dims_[i];
}

int64_t Shape::numel() const {
  int64_t n = 1;
  for (int i = 0; i < rank_; ++i) n *= dims_[i];
  return n;
}

bool Shape::operator==(const Shape& o) const {
  if (rank_ != o.rank_) return false;
  for (int i = 0; i < rank_; ++i) {
    if (dims_[i] != o.dims_[i]) return false;
  }
  return true;
}

std::string Shape::ToString() const {
  std::ostringstream os;
  os << "(";
  for (int i = 0; i < rank_; ++i) os << (i ? ", " : "") << dims_[i];
  os << ")";
  return os.str();
}

std::string TensorSpec::ToString() const { return DTypeName(dtype) + shape.ToString(); }

std::string Device::ToString() const { return is_cpu() ? "cpu" : "cuda:" + std::to_string(index); }

template <bool kConst>
BasicTensorView<kConst> BasicTensorView<kConst>::Slice0(int64_t begin, int64_t end) const {
  CHECK_GE(rank(), 1);
  CHECK(0 <= begin && begin <= end && end <= shape()[0])
      << "Slice0(" << begin << ", " << end << ") of " << shape().ToString();
  const int64_t rows = shape()[0];
  const int64_t row_bytes = rows ? nbytes() / rows : 0;
  std::vector<int64_t> dims = shape().dims();
  dims[0] = end - begin;
  using BytePtr = std::conditional_t<kConst, const char*, char*>;
  return BasicTensorView(static_cast<BytePtr>(data_) + begin * row_bytes,
                         TensorSpec{Shape(dims), dtype()}, device_);
}

template <bool kConst>
BasicTensorView<kConst> BasicTensorView<kConst>::Reshape(const Shape& shape) const {
  CHECK_EQ(shape.numel(), numel())
      << "reshape " << spec_.shape.ToString() << " to " << shape.ToString();
  return BasicTensorView(data_, TensorSpec{shape, dtype()}, device_);
}

template class BasicTensorView<true>;
template class BasicTensorView<false>;

Tensor Tensor::Empty(const TensorSpec& spec, Device device) {
  Tensor t;
  t.spec_ = spec;
  t.device_ = device;
  const size_t bytes = static_cast<size_t>(spec.nbytes());
  if (device.is_cpu()) {
    t.data_ = HostAlloc(bytes);
    t.storage_ = std::shared_ptr<void>(t.data_, [](void* p) { HostFree(p); });
  } else {
    LOOM_CHECK_OK(gpu::SetDevice(device.index));
    t.data_ = gpu::DeviceAlloc(bytes);
    t.storage_ = std::shared_ptr<void>(t.data_, [](void* p) { gpu::DeviceFree(p); });
  }
  if (!t.storage_) {
    // Zero-sized tensors are still "defined": keep a non-null handle that owns nothing.
    static char empty_storage;
    t.storage_ = std::shared_ptr<void>(static_cast<void*>(&empty_storage), [](void*) {});
  }
  return t;
}

Tensor Tensor::Zeros(const TensorSpec& spec, Device device) {
  Tensor t = Empty(spec, device);
  ZeroTensor(t.view());
  if (device.is_cuda()) gpu::StreamSynchronize({});
  return t;
}

Tensor Tensor::To(Device device) const {
  Tensor t = Empty(spec_, device);
  CopyTensor(cview(), t.view());
  return t;
}

void CopyTensor(ConstTensorView src, TensorView dst) {
  CHECK(src.spec() == dst.spec()) << "copy " << src.spec().ToString() << " into "
                                  << dst.spec().ToString();
  const size_t bytes = static_cast<size_t>(src.nbytes());
  if (bytes == 0) return;
  if (src.device().is_cpu() && dst.device().is_cpu()) {
    std::memcpy(dst.raw(), src.raw(), bytes);
    return;
  }
  gpu::CopyKind kind = src.device().is_cpu()   ? gpu::CopyKind::kHostToDevice
                       : dst.device().is_cpu() ? gpu::CopyKind::kDeviceToHost
                                               : gpu::CopyKind::kDeviceToDevice;
  gpu::MemcpyAsync(dst.raw(), src.raw(), bytes, kind);
  gpu::StreamSynchronize({});
}

void ZeroTensor(TensorView dst, Stream stream) {
  if (dst.nbytes() == 0) return;
  if (dst.device().is_cpu()) {
    std::memset(dst.raw(), 0, static_cast<size_t>(dst.nbytes()));
  } else {
    gpu::MemsetAsync(dst.raw(), 0, static_cast<size_t>(dst.nbytes()), stream);
  }
}

}  // namespace loom
