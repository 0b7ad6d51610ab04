// LOOM_NCCL_CHECK(call): runs an NCCL call and, if it does not return ncclSuccess, ends the
// whole job with one line naming the call, NCCL's error string, NCCL's last detailed message,
// the rank and the host (then MPI_Abort through the glog failure function, see logging.h).
// Included only by .cu files (it includes nccl.h, which includes the CUDA runtime headers).
#ifndef LOOM_COMM_NCCL_CHECK_CUH_
#define LOOM_COMM_NCCL_CHECK_CUH_

#include <glog/logging.h>
#include <nccl.h>

#include "csrc/core/logging.h"

#define LOOM_NCCL_CHECK(call)                                                        \
  do {                                                                               \
    const ncclResult_t loom_nccl_rc_ = (call);                                       \
    if (loom_nccl_rc_ != ncclSuccess) {                                              \
      LOG(FATAL) << "NCCL error in " #call ": " << ncclGetErrorString(loom_nccl_rc_) \
                 << " (last NCCL message: " << ncclGetLastError(nullptr) << "; "     \
                 << ::loom::RankAndHost() << ")";                                    \
    }                                                                                \
  } while (0)

#endif  // LOOM_COMM_NCCL_CHECK_CUH_
