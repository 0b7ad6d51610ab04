#include "csrc/core/allocator.h"

#include <cstdlib>

#include <glog/logging.h>

namespace loom {

void* HostAlloc(size_t bytes) {
  if (bytes == 0) return nullptr;
  // aligned_alloc needs a size that is a multiple of the alignment.
  size_t rounded = (bytes + kHostAlignment - 1) / kHostAlignment * kHostAlignment;
  void* p = std::aligned_alloc(kHostAlignment, rounded);
  CHECK(p != nullptr) << "host allocation of " << bytes << " bytes failed";
  return p;
}

void HostFree(void* ptr) { std::free(ptr); }

}  // namespace loom
