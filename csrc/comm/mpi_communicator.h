// MpiCommunicator: the Communicator on host buffers, over an MPI communicator (Open MPI).
//
// R = size() ranks. All buffers are host memory. Every call is blocking and collective (all ranks
// of the communicator call it in the same order with matching sizes); when it returns, the
// output is complete and the input may be reused. An MPI error inside a call is fatal for the
// whole job (LOOM_MPI_CHECK: the call, MPI's error string, rank and host, then MPI_Abort);
// wrong arguments (negative counts, vectors of the wrong length, an unsupported dtype) are
// CHECK failures, also fatal.
//
// Determinism and the floating-point reductions (AllReduce and ReduceScatter on f32, f64, bf16,
// f16). Loom does not use MPI's reduction for floating point. It moves the data with MPI and
// adds it itself, element by element in rank order, left to right, in the accumulation type
// (f32 for f32/bf16/f16, f64 for f64), and rounds a 16-bit result once at the end:
//
//     out[i] = round_T( (((x_0[i] + x_1[i]) + x_2[i]) + ... ) + x_{R-1}[i] )       (kSum)
//     out[i] = max over ranks of x_r[i], NaN if any x_r[i] is NaN                   (kMax)
//
// where x_r is rank r's input. Why not MPI_Allreduce: the MPI standard only *recommends* that
// reductions give the same bits on every rank and every run, and Open MPI's coll/tuned picks
// its algorithm (recursive doubling, ring, segmented ring, Rabenseifner) from the message size
// and the number of ranks, so the summation order of one element depends on the buffer size and
// on where segments start: changing a gradient bucket's size would change the bits, and a
// different Open MPI version or tuning file could too. A bf16 sum through a custom MPI_Op would
// also round once per step of MPI's tree, with an error that grows with R and depends on the
// algorithm. With Loom's order the result is a closed form of the inputs: the same for every
// message size, MPI algorithm and version, bit-identical on every rank (one rank computes each
// element and the others receive its bits), and checkable by tests to the last bit. bf16 and
// f16 are summed in fp32 and rounded once (communicator.h allows rounding once per step; once
// in total is the exact special case).
//
// How (both move the same bytes per element as a ring allreduce, 2(R-1)/R of the buffer):
//   small buffers (R * count * bytes <= gather_allreduce_max_bytes): AllGather every rank's
//     buffer, then every rank reduces all of it (one collective: lowest latency);
//   otherwise: the buffer is cut into R contiguous blocks (sizes differ by at most one); an
//     all-to-all gives rank r every rank's copy of block r (a reduce-scatter whose adding Loom
//     does), rank r reduces it in rank order, and an in-place AllGatherV shares the blocks.
// Both paths give the same bits. Scratch: about R * count elements (small path) or count
// elements (large path), kept between calls, so the steady state does not allocate.
// Integer reductions (i32, i64) are exact and use MPI_Allreduce / MPI_Reduce_scatter_block.
// Integer overflow is not detected.
//
// Large counts: MPI counts and displacements are `int`. Calls whose counts and displacements
// fit in max_elements_per_call (INT_MAX by default) map onto one MPI collective; larger ones
// are split: Broadcast and integer AllReduce into several calls; AllToAllV and AllGatherV into
// point-to-point messages of at most max_elements_per_call elements each (MPI's non-overtaking
// rule keeps the pieces in order); AllGather through AllGatherV. Since a rank of AllToAllV
// sees only its own counts, the ranks agree on the path with a one-int MPI_Allreduce first
// (a few microseconds; the AllToAllV inside AllReduce and ReduceScatter skips it).
//
// Not thread-safe: one thread makes all calls (MPI_THREAD_FUNNELED is enough).
// Ownership: the MpiCommunicator owns a duplicate of the parent communicator (so its traffic
// never matches anyone else's) and frees it on destruction; destroy it before MPI_Finalize.
#ifndef LOOM_COMM_MPI_COMMUNICATOR_H_
#define LOOM_COMM_MPI_COMMUNICATOR_H_

#include <climits>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <mpi.h>

#include "csrc/comm/communicator.h"
#include "csrc/core/macros.h"
#include "csrc/core/status.h"

namespace loom::comm {

struct MpiCommunicatorOptions {
  // Largest element count or displacement handed to one MPI call; larger transfers are split
  // (see above). Must be >= 1. Tests lower it to cover the split paths with small buffers.
  int64_t max_elements_per_call = INT_MAX;
  // Floating-point AllReduce gathers whole buffers when R * count * dtype bytes is at most
  // this; otherwise it uses the all-to-all + allgather path. Both give identical bits.
  int64_t gather_allreduce_max_bytes = 64 << 10;
};

// The MPI datatype that moves elements of `dtype` (bf16 and f16 travel as MPI_UINT16_T).
MPI_Datatype MpiDatatype(DType dtype);

class MpiCommunicator final : public Communicator {
 public:
  // Duplicates `parent` (MPI must be initialized) and sets MPI_ERRORS_RETURN on the duplicate.
  // FailedPrecondition when MPI is not initialized; InvalidArgument for bad options;
  // Internal when MPI fails.
  static StatusOr<std::unique_ptr<MpiCommunicator>> Create(
      MPI_Comm parent = MPI_COMM_WORLD, const MpiCommunicatorOptions& options = {});
  ~MpiCommunicator() override;
  LOOM_DISALLOW_COPY_AND_ASSIGN(MpiCommunicator);

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  Device device() const override { return Device::Cpu(); }
  std::string backend() const override { return "mpi"; }
  // The communicator's own MPI_Comm (errors return, see mpi_check.h).
  MPI_Comm mpi_comm() const { return comm_; }
  const MpiCommunicatorOptions& options() const { return options_; }

  // dtype: f32, f64, bf16, f16 (Loom's rank-ordered reduction above), i32, i64 (MPI).
  // In place when send == recv.
  void AllReduce(const void* send, void* recv, int64_t count, DType dtype, ReduceOp op) override;
  // Any dtype. Not in place (send and recv must not overlap).
  void AllToAllV(const void* send, const std::vector<int64_t>& send_counts,
                 const std::vector<int64_t>& send_displs, void* recv,
                 const std::vector<int64_t>& recv_counts, const std::vector<int64_t>& recv_displs,
                 DType dtype) override;
  // Any dtype. In place when send == recv + rank() * count elements.
  void AllGather(const void* send, void* recv, int64_t count, DType dtype) override;
  // Any dtype; send_count must equal recv_counts[rank()]. In place when
  // send == recv + recv_displs[rank()] elements.
  void AllGatherV(const void* send, int64_t send_count, void* recv,
                  const std::vector<int64_t>& recv_counts, const std::vector<int64_t>& recv_displs,
                  DType dtype) override;
  // Reduction dtypes as AllReduce, same summation order. Not in place.
  void ReduceScatter(const void* send, void* recv, int64_t recv_count, DType dtype,
                     ReduceOp op) override;
  // Any dtype.
  void Broadcast(void* buffer, int64_t count, DType dtype, int root) override;
  void Barrier() override;

 private:
  MpiCommunicator(MPI_Comm comm, int rank, int size, const MpiCommunicatorOptions& options);

  // split: 0 (one MPI_Alltoallv) or 1 (point-to-point pieces), decided by the caller from
  // values every rank shares; kDecideSplit: each rank checks its own counts and the ranks agree
  // by an allreduce.
  static constexpr int kDecideSplit = -1;
  void AllToAllVImpl(const void* send, const std::vector<int64_t>& send_counts,
                     const std::vector<int64_t>& send_displs, void* recv,
                     const std::vector<int64_t>& recv_counts,
                     const std::vector<int64_t>& recv_displs, DType dtype, int split);
  bool FitsOneCall(const std::vector<int64_t>& counts, const std::vector<int64_t>& displs) const;
  // Point-to-point pieces of at most max_elements_per_call elements, appended to requests_.
  void PostSends(const char* buf, int64_t count, MPI_Datatype type, int64_t elem_bytes, int peer);
  void PostRecvs(char* buf, int64_t count, MPI_Datatype type, int64_t elem_bytes, int peer);
  void WaitAll();
  // Loom's floating-point (and large integer ReduceScatter) reduction: every rank's copy of
  // `n` elements lies in scratch_ at stride `n`, rank-major; reduces them into out.
  void ReduceScratch(int64_t n, DType dtype, ReduceOp op, void* out);
  void* Scratch(int64_t bytes);

  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0;
  int size_ = 1;
  MpiCommunicatorOptions options_;
  std::vector<double> scratch_;  // double: 8-byte aligned for every dtype
  std::vector<MPI_Request> requests_;
  std::vector<int> int_counts_[4];
  std::vector<int64_t> counts_[4];
};

}  // namespace loom::comm

#endif  // LOOM_COMM_MPI_COMMUNICATOR_H_
