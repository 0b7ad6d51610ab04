// CUDA implementation of gpu.h.
#include "csrc/core/gpu.h"

#include <cuda_runtime.h>

#include "csrc/core/cuda_check.cuh"

namespace loom::gpu {
namespace {

// The probe runs once: cudaGetDeviceCount fails (rather than returning 0) on a machine
// without a GPU driver, and any failure there means "no GPU".
struct Probe {
  int count = 0;
  std::string reason;
  Probe() {
    cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess) {
      reason = std::string("cudaGetDeviceCount failed: ") + cudaGetErrorString(err);
      count = 0;
      cudaGetLastError();  // clear the sticky error
    } else if (count == 0) {
      reason = "no CUDA device found";
    }
  }
};
const Probe& GetProbe() {
  static const Probe* probe = new Probe();
  return *probe;
}

}  // namespace

bool CudaAvailable() { return GetProbe().count > 0; }
int DeviceCount() { return GetProbe().count; }
std::string UnavailableReason() { return CudaAvailable() ? std::string() : GetProbe().reason; }
std::string DeviceName(int index) {
  cudaDeviceProp prop;
  LOOM_CUDA_CHECK(cudaGetDeviceProperties(&prop, index));
  return prop.name;
}

Status SetDevice(int index) {
  if (index < 0 || index >= DeviceCount()) {
    return UnavailableError("CUDA device " + std::to_string(index) + " requested, " +
                            std::to_string(DeviceCount()) + " available");
  }
  cudaError_t err = cudaSetDevice(index);
  if (err != cudaSuccess) {
    return UnavailableError(std::string("cudaSetDevice: ") + cudaGetErrorString(err));
  }
  return Status::Ok();
}

Stream CreateStream() {
  cudaStream_t s;
  LOOM_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  return FromCudaStream(s);
}
void DestroyStream(Stream stream) {
  if (stream.handle) LOOM_CUDA_CHECK(cudaStreamDestroy(AsCudaStream(stream)));
}
void StreamSynchronize(Stream stream) {
  LOOM_CUDA_CHECK(cudaStreamSynchronize(AsCudaStream(stream)));
}
void DeviceSynchronize() { LOOM_CUDA_CHECK(cudaDeviceSynchronize()); }

void* DeviceAlloc(size_t bytes, Stream stream) {
  if (bytes == 0) return nullptr;
  void* p = nullptr;
  LOOM_CUDA_CHECK(cudaMallocAsync(&p, bytes, AsCudaStream(stream)));
  return p;
}
void DeviceFree(void* ptr, Stream stream) {
  if (ptr) LOOM_CUDA_CHECK(cudaFreeAsync(ptr, AsCudaStream(stream)));
}
void* PinnedAlloc(size_t bytes) {
  void* p = nullptr;
  LOOM_CUDA_CHECK(cudaMallocHost(&p, bytes));
  return p;
}
void PinnedFree(void* ptr) {
  if (ptr) LOOM_CUDA_CHECK(cudaFreeHost(ptr));
}

void MemcpyAsync(void* dst, const void* src, size_t bytes, CopyKind kind, Stream stream) {
  if (bytes == 0) return;
  cudaMemcpyKind k = kind == CopyKind::kHostToDevice   ? cudaMemcpyHostToDevice
                     : kind == CopyKind::kDeviceToHost ? cudaMemcpyDeviceToHost
                                                       : cudaMemcpyDeviceToDevice;
  LOOM_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, k, AsCudaStream(stream)));
}
void MemsetAsync(void* dst, int value, size_t bytes, Stream stream) {
  if (bytes == 0) return;
  LOOM_CUDA_CHECK(cudaMemsetAsync(dst, value, bytes, AsCudaStream(stream)));
}

}  // namespace loom::gpu
