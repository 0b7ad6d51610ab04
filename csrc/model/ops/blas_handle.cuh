// cuBLAS / cuBLASLt handles and scratch memory, one set per (CUDA device, stream); included
// by .cu files only.
//
// A handle is created the first time an op runs on a (device, stream) pair and lives for the
// rest of the process (destroying handles during static destruction races the CUDA runtime's
// own teardown). Each handle owns a workspace of kBlasWorkspaceBytes, shared by its cuBLAS
// and cuBLASLt calls: giving every stream its own workspace is what keeps cuBLAS
// deterministic with several streams (cuBLAS docs, "Results reproducibility").
//
// Scratch(): stream-ordered, grow-only memory for multi-pass kernels (deterministic two-pass
// reductions). It grows only when a larger request arrives (the first step), by freeing the
// old block on the same stream, so kernels still using it finish first.
#ifndef LOOM_MODEL_OPS_BLAS_HANDLE_CUH_
#define LOOM_MODEL_OPS_BLAS_HANDLE_CUH_

#include <cstddef>

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <glog/logging.h>

#include "csrc/core/device.h"
#include "csrc/core/logging.h"

#define LOOM_CUBLAS_CHECK(call)                                                                    \
  do {                                                                                             \
    cublasStatus_t loom_blas_err_ = (call);                                                        \
    if (loom_blas_err_ != CUBLAS_STATUS_SUCCESS) {                                                 \
      LOG(FATAL) << "cuBLAS error in " #call ": " << cublasGetStatusString(loom_blas_err_) << " (" \
                 << ::loom::RankAndHost() << ")";                                                  \
    }                                                                                              \
  } while (0)

namespace loom::ops::cuda {

constexpr size_t kBlasWorkspaceBytes = size_t{32} << 20;  // cuBLAS's advice for Hopper

struct BlasHandles {
  int device = 0;
  cudaStream_t stream = nullptr;
  cublasHandle_t blas = nullptr;  // bound to `stream`, workspace set, default math (no TF32)
  cublasLtHandle_t lt = nullptr;
  void* workspace = nullptr;  // kBlasWorkspaceBytes
  size_t workspace_bytes = 0;
};

// The handles of the current device and `stream`.
BlasHandles& GetBlasHandles(Stream stream);

// At least `bytes` of device memory for kernels enqueued on `stream` (current device). The
// pointer stays valid until the next Scratch call with the same (stream, slot); an op that
// calls another op's backend keeps its own data in a different slot (reductions use slot 0,
// GemmBatchedSum slot 1).
constexpr int kScratchSlots = 2;
void* Scratch(Stream stream, size_t bytes, int slot = 0);

}  // namespace loom::ops::cuda

#endif  // LOOM_MODEL_OPS_BLAS_HANDLE_CUH_
