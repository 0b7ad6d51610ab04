// NcclCommunicator for builds without CUDA (LOOM_WITH_CUDA=OFF): Create() reports it, so no
// instance exists and the other members are never reached.
#include "csrc/comm/nccl_communicator.h"

#include <glog/logging.h>

namespace loom::comm {

#define LOOM_NCCL_UNREACHABLE() \
  LOG(FATAL) << "NcclCommunicator::" << __func__ << " in a build without CUDA"

StatusOr<std::unique_ptr<NcclCommunicator>> NcclCommunicator::Create(MPI_Comm, int, Stream) {
  return UnimplementedError(
      "NcclCommunicator: this Loom build has no CUDA backend (built without CUDA: configure "
      "with -DLOOM_WITH_CUDA=ON on a machine with nvcc and NCCL)");
}

NcclCommunicator::~NcclCommunicator() = default;
void NcclCommunicator::AllReduce(const void*, void*, int64_t, DType, ReduceOp) {
  LOOM_NCCL_UNREACHABLE();
}
void NcclCommunicator::AllToAllV(const void*, const std::vector<int64_t>&,
                                 const std::vector<int64_t>&, void*, const std::vector<int64_t>&,
                                 const std::vector<int64_t>&, DType) {
  LOOM_NCCL_UNREACHABLE();
}
void NcclCommunicator::AllGather(const void*, void*, int64_t, DType) { LOOM_NCCL_UNREACHABLE(); }
void NcclCommunicator::AllGatherV(const void*, int64_t, void*, const std::vector<int64_t>&,
                                  const std::vector<int64_t>&, DType) {
  LOOM_NCCL_UNREACHABLE();
}
void NcclCommunicator::ReduceScatter(const void*, void*, int64_t, DType, ReduceOp) {
  LOOM_NCCL_UNREACHABLE();
}
void NcclCommunicator::Broadcast(void*, int64_t, DType, int) { LOOM_NCCL_UNREACHABLE(); }
void NcclCommunicator::Barrier() { LOOM_NCCL_UNREACHABLE(); }
void NcclCommunicator::Synchronize() { LOOM_NCCL_UNREACHABLE(); }

}  // namespace loom::comm
