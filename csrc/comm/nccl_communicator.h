// NcclCommunicator: the Communicator on CUDA device buffers, over NCCL.
//
// R = size() ranks, one GPU per rank (NCCL refuses two ranks on one GPU). Every buffer passed
// in is device memory on device(). Calls are enqueued on stream() and return at once: the
// output is ready when the stream reaches that point (Synchronize() waits for it). Barrier()
// is the exception: it returns when every rank has reached it and the stream is drained.
// Every call is collective (all ranks, same order, matching sizes). An NCCL or CUDA error is
// fatal for the whole job (LOOM_NCCL_CHECK / LOOM_CUDA_CHECK, then MPI_Abort); wrong arguments
// are CHECK failures. The calling thread's current CUDA device must be device() (bootstrap.h
// sets it once per process).
//
// Mapping onto NCCL:
//   AllReduce      ncclAllReduce (ncclSum / ncclMax); f32, f64, bf16, f16, i32, i64. In place
//                  when send == recv.
//   AllToAllV      one group (ncclGroupStart/End) of ncclSend/ncclRecv per peer with a
//                  non-zero count; the rank's own block is a device-to-device copy. Not in place.
//   AllGather      ncclAllGather. In place when send == recv + rank() * count.
//   AllGatherV     one group of R ncclBroadcast calls (root p sends its recv_counts[p]
//                  elements to recv + recv_displs[p]); roots with zero elements are skipped.
//   ReduceScatter  ncclReduceScatter. Not in place.
//   Broadcast      ncclBroadcast, in place.
//   Barrier        ncclAllReduce of one int, then a stream synchronize.
//
// Determinism: NCCL's reduction order is fixed for a fixed world size, topology, NCCL version
// and message size (its algorithm and protocol are chosen from these); a bf16 sum is
// accumulated in fp32 and rounded at every step of NCCL's ring or tree. The bits therefore
// differ from MpiCommunicator's rank-ordered sums: tests compare NCCL against MPI with a
// tolerance for floating point and exactly for integers and data movement. Set
// NCCL_ALGO/NCCL_PROTO to pin the algorithm when bit reproducibility across message sizes
// matters.
//
// Only CUDA builds have the implementation (nccl_communicator.cu); without CUDA, Create()
// returns Unimplemented ("built without CUDA").
#ifndef LOOM_COMM_NCCL_COMMUNICATOR_H_
#define LOOM_COMM_NCCL_COMMUNICATOR_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <mpi.h>

#include "csrc/comm/communicator.h"
#include "csrc/core/macros.h"
#include "csrc/core/status.h"

struct ncclComm;  // nccl.h's ncclComm_t is `struct ncclComm*`; no CUDA header here.

namespace loom::comm {

class NcclCommunicator final : public Communicator {
 public:
  // Collective over `mpi_comm` (every rank of it calls Create): makes `device` current, rank 0
  // creates the NCCL unique id and broadcasts it over `mpi_comm`, and every rank joins the NCCL
  // communicator with the same rank and size as in `mpi_comm`. `stream`: where collectives are
  // enqueued; when empty, the communicator creates (and owns) a non-blocking stream.
  // Errors (on any rank: the ranks agree before NCCL is initialized, so none is left waiting):
  // Unimplemented without CUDA, Unavailable for a bad device, Internal for NCCL/MPI failures.
  static StatusOr<std::unique_ptr<NcclCommunicator>> Create(MPI_Comm mpi_comm, int device,
                                                            Stream stream = {});
  ~NcclCommunicator() override;
  LOOM_DISALLOW_COPY_AND_ASSIGN(NcclCommunicator);

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  Device device() const override { return Device::Cuda(device_); }
  Stream stream() const override { return stream_; }
  std::string backend() const override { return "nccl"; }

  void AllReduce(const void* send, void* recv, int64_t count, DType dtype, ReduceOp op) override;
  void AllToAllV(const void* send, const std::vector<int64_t>& send_counts,
                 const std::vector<int64_t>& send_displs, void* recv,
                 const std::vector<int64_t>& recv_counts, const std::vector<int64_t>& recv_displs,
                 DType dtype) override;
  void AllGather(const void* send, void* recv, int64_t count, DType dtype) override;
  void AllGatherV(const void* send, int64_t send_count, void* recv,
                  const std::vector<int64_t>& recv_counts, const std::vector<int64_t>& recv_displs,
                  DType dtype) override;
  void ReduceScatter(const void* send, void* recv, int64_t recv_count, DType dtype,
                     ReduceOp op) override;
  void Broadcast(void* buffer, int64_t count, DType dtype, int root) override;
  void Barrier() override;
  void Synchronize() override;

 private:
  NcclCommunicator() = default;

  ncclComm* comm_ = nullptr;
  int rank_ = 0;
  int size_ = 1;
  int device_ = 0;
  Stream stream_;
  bool owns_stream_ = false;
  int* barrier_word_ = nullptr;  // one device int for Barrier()
};

}  // namespace loom::comm

#endif  // LOOM_COMM_NCCL_COMMUNICATOR_H_
