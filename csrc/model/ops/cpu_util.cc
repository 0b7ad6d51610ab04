#include "csrc/model/ops/cpu_util.h"

#include "csrc/core/allocator.h"

namespace loom::ops::cpu {

static_assert(kHostAlignment % kScratchAlignment == 0, "HostAlloc must provide the alignment");

void* ScratchBytes(ScratchSlot slot, size_t bytes) {
  struct Buffer {
    void* data = nullptr;
    size_t size = 0;  // bytes
    ~Buffer() { HostFree(data); }
  };
  thread_local Buffer buffers[static_cast<int>(ScratchSlot::kCount)];
  Buffer& buffer = buffers[static_cast<int>(slot)];
  if (bytes > buffer.size) {
    HostFree(buffer.data);
    // Grow geometrically so a slowly growing request settles after a few calls.
    const size_t size = std::max(bytes, buffer.size * 2);
    buffer.data = HostAlloc(size);
    buffer.size = size;
  }
  return buffer.data;
}

}  // namespace loom::ops::cpu
