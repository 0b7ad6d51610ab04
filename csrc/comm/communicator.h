// Collective communication between the R ranks of a job.
//
// One interface, two backends:
//   MpiCommunicator   host buffers; Open MPI collectives (the CPU backend, and the bootstrap).
//   NcclCommunicator  device buffers; NCCL, its unique id broadcast over MPI. Calls are
//                     enqueued on the communicator's stream (stream()) and return at once.
// Every call is collective: all ranks of the communicator must make it, in the same order,
// with matching sizes. Failures inside a call are fatal for the whole job (LOOM_MPI_CHECK /
// LOOM_NCCL_CHECK abort every rank), never a hang.
//
// Determinism: for a fixed world size, every backend reduces in a fixed order, so the same
// inputs give the same bits run after run. Results may differ between world sizes (the
// summation order changes); docs/architecture.md says what is bit-exact. MpiCommunicator
// adds in rank order itself (the same bits for any message size or MPI version, see
// mpi_communicator.h); NCCL's order also depends on the message size and NCCL's algorithm
// choice (nccl_communicator.h).
//
// Buffers are raw pointers with a DType and an element count. In-place is allowed where
// noted (send == recv).
#ifndef LOOM_COMM_COMMUNICATOR_H_
#define LOOM_COMM_COMMUNICATOR_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "csrc/core/device.h"
#include "csrc/core/dtype.h"
#include "csrc/core/status.h"

namespace loom::comm {

enum class ReduceOp { kSum, kMax };

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  // kCpu for MPI, kCuda for NCCL: where the buffers passed to this communicator live.
  virtual Device device() const = 0;
  // The stream collectives are enqueued on (NCCL); empty for MPI.
  virtual Stream stream() const { return Stream{}; }
  // "mpi" or "nccl".
  virtual std::string backend() const = 0;

  // recv[i] = op over ranks of send[i], i < count. dtype: f32, f64, bf16 (bf16 is summed in
  // fp32 and rounded once per step of the reduction; MpiCommunicator rounds once in total),
  // i32, i64 (and f16 like bf16). In-place allowed.
  virtual void AllReduce(const void* send, void* recv, int64_t count, DType dtype, ReduceOp op) = 0;

  // Rank r sends send_counts[p] elements starting at send + send_displs[p] (in elements) to
  // each peer p, and receives recv_counts[p] elements from p at recv + recv_displs[p].
  // Counts may be zero and uneven. Vectors have size() entries.
  virtual void AllToAllV(const void* send, const std::vector<int64_t>& send_counts,
                         const std::vector<int64_t>& send_displs, void* recv,
                         const std::vector<int64_t>& recv_counts,
                         const std::vector<int64_t>& recv_displs, DType dtype) = 0;

  // Every rank contributes `count` elements; recv holds size() * count, rank-major.
  virtual void AllGather(const void* send, void* recv, int64_t count, DType dtype) = 0;

  // Rank p contributes recv_counts[p] elements; recv holds them rank-major at recv_displs.
  virtual void AllGatherV(const void* send, int64_t send_count, void* recv,
                          const std::vector<int64_t>& recv_counts,
                          const std::vector<int64_t>& recv_displs, DType dtype) = 0;

  // send holds size() * recv_count elements; rank r receives the reduction of block r.
  virtual void ReduceScatter(const void* send, void* recv, int64_t recv_count, DType dtype,
                             ReduceOp op) = 0;

  // buffer (count elements) of `root` is copied to every rank. In place.
  virtual void Broadcast(void* buffer, int64_t count, DType dtype, int root) = 0;

  virtual void Barrier() = 0;

  // Waits until every collective enqueued so far has completed (no-op for MPI).
  virtual void Synchronize() {}
};

}  // namespace loom::comm

#endif  // LOOM_COMM_COMMUNICATOR_H_
