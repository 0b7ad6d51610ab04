// Host memory: 64-byte aligned (a cache line, and enough for AVX-512 loads). Device memory
// comes from gpu.h (stream-ordered pool). Tensor::Empty picks the right one by Device.
#ifndef LOOM_CORE_ALLOCATOR_H_
#define LOOM_CORE_ALLOCATOR_H_

#include <cstddef>

namespace loom {

constexpr size_t kHostAlignment = 64;

// Never returns nullptr for bytes > 0 (out of memory is fatal, with the size in the message).
void* HostAlloc(size_t bytes);
void HostFree(void* ptr);

}  // namespace loom

#endif  // LOOM_CORE_ALLOCATOR_H_
