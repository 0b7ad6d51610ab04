#include "csrc/model/ops/cpu_util.h"

#include <memory>

#include "csrc/core/allocator.h"

namespace loom::ops::cpu {

double* ScratchDoubles(size_t n) {
  struct Buffer {
    double* data = nullptr;
    size_t size = 0;
    ~Buffer() { HostFree(data); }
  };
  thread_local Buffer buffer;
  if (n > buffer.size) {
    HostFree(buffer.data);
    // Grow geometrically so a slowly growing request settles after a few calls.
    const size_t size = std::max(n, buffer.size * 2);
    buffer.data = static_cast<double*>(HostAlloc(size * sizeof(double)));
    buffer.size = size;
  }
  return buffer.data;
}

}  // namespace loom::ops::cpu
