// gpu.h for a build without the CUDA backend (LOOM_WITH_CUDA=OFF).
#include "csrc/core/gpu.h"

#include <glog/logging.h>

namespace loom::gpu {

#define LOOM_NO_CUDA_BUILD() \
  LOG(FATAL) << __func__     \
             << ": this Loom build has no CUDA backend (configured with LOOM_WITH_CUDA=OFF)"

bool CudaAvailable() { return false; }
int DeviceCount() { return 0; }
std::string UnavailableReason() { return "this Loom build has no CUDA backend"; }
std::string DeviceName(int) {
  LOOM_NO_CUDA_BUILD();
  return "";
}
Status SetDevice(int) { return UnimplementedError(UnavailableReason()); }
Stream CreateStream() {
  LOOM_NO_CUDA_BUILD();
  return {};
}
void DestroyStream(Stream) { LOOM_NO_CUDA_BUILD(); }
void StreamSynchronize(Stream) { LOOM_NO_CUDA_BUILD(); }
void DeviceSynchronize() { LOOM_NO_CUDA_BUILD(); }
void* DeviceAlloc(size_t, Stream) {
  LOOM_NO_CUDA_BUILD();
  return nullptr;
}
void DeviceFree(void*, Stream) { LOOM_NO_CUDA_BUILD(); }
void* PinnedAlloc(size_t) {
  LOOM_NO_CUDA_BUILD();
  return nullptr;
}
void PinnedFree(void*) { LOOM_NO_CUDA_BUILD(); }
void MemcpyAsync(void*, const void*, size_t, CopyKind, Stream) { LOOM_NO_CUDA_BUILD(); }
void MemsetAsync(void*, int, size_t, Stream) { LOOM_NO_CUDA_BUILD(); }

}  // namespace loom::gpu
