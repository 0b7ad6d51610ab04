// The CUDA runtime as the rest of Loom sees it: plain C++ declarations, no CUDA header.
// In a build without CUDA (LOOM_WITH_CUDA=0) every function exists: CudaAvailable() is false
// and the others fail with a CHECK naming the build, so callers never need an #if.
#ifndef LOOM_CORE_GPU_H_
#define LOOM_CORE_GPU_H_

#include <cstddef>
#include <string>

#include "csrc/core/device.h"
#include "csrc/core/status.h"

namespace loom::gpu {

// True when this build has the CUDA backend and at least one GPU can be used. Any error from
// the driver ("CUDA driver version is insufficient" on a machine without a GPU) means false.
bool CudaAvailable();
// Number of usable GPUs (0 on error or without CUDA).
int DeviceCount();
// Why CudaAvailable() is false, for the "skipped" message of CUDA tests.
std::string UnavailableReason();
// Name of device `index`, e.g. "NVIDIA H100 80GB HBM3".
std::string DeviceName(int index);

Status SetDevice(int index);
Stream CreateStream();
void DestroyStream(Stream stream);
void StreamSynchronize(Stream stream);
void DeviceSynchronize();

// Stream-ordered device memory from the device's default memory pool (cudaMallocAsync), so
// repeated allocation in the steady state costs no driver call.
void* DeviceAlloc(size_t bytes, Stream stream = {});
void DeviceFree(void* ptr, Stream stream = {});
// Page-locked host memory for asynchronous copies.
void* PinnedAlloc(size_t bytes);
void PinnedFree(void* ptr);

enum class CopyKind { kHostToDevice, kDeviceToHost, kDeviceToDevice };
void MemcpyAsync(void* dst, const void* src, size_t bytes, CopyKind kind, Stream stream = {});
void MemsetAsync(void* dst, int value, size_t bytes, Stream stream = {});

}  // namespace loom::gpu

#endif  // LOOM_CORE_GPU_H_
