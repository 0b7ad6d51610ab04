#include "csrc/model/ops/blas_handle.cuh"

#include <map>
#include <mutex>
#include <utility>

#include "csrc/core/cuda_check.cuh"
#include "csrc/core/gpu.h"

namespace loom::ops::cuda {
namespace {

struct PerStream {
  BlasHandles handles;
  bool blas_ready = false;
  void* scratch[kScratchSlots] = {};
  size_t scratch_bytes[kScratchSlots] = {};
};

using Key = std::pair<int, void*>;  // (device ordinal, cudaStream_t)

std::mutex& Mutex() {
  static std::mutex* mu = new std::mutex();
  return *mu;
}
// Leaked on purpose (see blas_handle.cuh): entries are referenced for the process lifetime.
std::map<Key, PerStream*>& Table() {
  static auto* table = new std::map<Key, PerStream*>();
  return *table;
}

PerStream& Lookup(Stream stream) {
  int device = 0;
  LOOM_CUDA_CHECK(cudaGetDevice(&device));
  std::lock_guard<std::mutex> lock(Mutex());
  PerStream*& entry = Table()[Key(device, stream.handle)];
  if (entry == nullptr) {
    entry = new PerStream();
    entry->handles.device = device;
    entry->handles.stream = AsCudaStream(stream);
  }
  return *entry;
}

}  // namespace

BlasHandles& GetBlasHandles(Stream stream) {
  PerStream& entry = Lookup(stream);
  std::lock_guard<std::mutex> lock(Mutex());
  if (!entry.blas_ready) {
    BlasHandles& h = entry.handles;
    LOOM_CUBLAS_CHECK(cublasCreate(&h.blas));
    LOOM_CUBLAS_CHECK(cublasSetStream(h.blas, h.stream));
    // Default math: full-precision fp32 (no TF32) unless a call asks for it explicitly.
    LOOM_CUBLAS_CHECK(cublasSetMathMode(h.blas, CUBLAS_DEFAULT_MATH));
    LOOM_CUBLAS_CHECK(cublasSetPointerMode(h.blas, CUBLAS_POINTER_MODE_HOST));
    LOOM_CUBLAS_CHECK(cublasLtCreate(&h.lt));
    LOOM_CUDA_CHECK(cudaMalloc(&h.workspace, kBlasWorkspaceBytes));
    h.workspace_bytes = kBlasWorkspaceBytes;
    LOOM_CUBLAS_CHECK(cublasSetWorkspace(h.blas, h.workspace, h.workspace_bytes));
    entry.blas_ready = true;
  }
  return entry.handles;
}

void* Scratch(Stream stream, size_t bytes, int slot) {
  CHECK(slot >= 0 && slot < kScratchSlots) << "Scratch: slot " << slot;
  PerStream& entry = Lookup(stream);
  std::lock_guard<std::mutex> lock(Mutex());
  if (bytes > entry.scratch_bytes[slot]) {
    gpu::DeviceFree(entry.scratch[slot], stream);
    const size_t old = entry.scratch_bytes[slot];
    const size_t grown = bytes > 2 * old ? bytes : 2 * old;
    entry.scratch[slot] = gpu::DeviceAlloc(grown, stream);
    entry.scratch_bytes[slot] = grown;
  }
  return entry.scratch[slot];
}

}  // namespace loom::ops::cuda
