// Error checks for CUDA, cuBLAS and NCCL calls; included only by .cu files. Each failure is
// fatal (it ends the whole job through the glog failure function, see logging.h) and names
// the call, the error string, the rank and the host.
#ifndef LOOM_CORE_CUDA_CHECK_CUH_
#define LOOM_CORE_CUDA_CHECK_CUH_

#include <cuda_runtime.h>
#include <glog/logging.h>

#include "csrc/core/device.h"
#include "csrc/core/logging.h"

#define LOOM_CUDA_CHECK(call)                                                            \
  do {                                                                                   \
    cudaError_t loom_err_ = (call);                                                      \
    if (loom_err_ != cudaSuccess) {                                                      \
      LOG(FATAL) << "CUDA error in " #call ": " << cudaGetErrorString(loom_err_) << " (" \
                 << ::loom::RankAndHost() << ")";                                        \
    }                                                                                    \
  } while (0)

// After a kernel launch: catches bad launch configurations immediately.
#define LOOM_CUDA_CHECK_LAUNCH() LOOM_CUDA_CHECK(cudaGetLastError())

namespace loom {
inline cudaStream_t AsCudaStream(Stream s) { return static_cast<cudaStream_t>(s.handle); }
inline Stream FromCudaStream(cudaStream_t s) { return Stream{static_cast<void*>(s)}; }
inline int CeilDiv(long long a, long long b) { return static_cast<int>((a + b - 1) / b); }
}  // namespace loom

#endif  // LOOM_CORE_CUDA_CHECK_CUH_
