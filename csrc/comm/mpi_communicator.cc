#include "csrc/comm/mpi_communicator.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <utility>

#include <glog/logging.h>

#include "csrc/comm/collective_checks.h"
#include "csrc/comm/mpi_check.h"
#include "csrc/comm/rank_ordered_reduce.h"
#include "csrc/core/dtype.h"
#include "csrc/core/logging.h"

namespace loom::comm {
namespace {

// Point-to-point traffic (the split paths) uses one tag: every piece between two ranks is
// posted in the same order on both sides, and MPI's non-overtaking rule matches them in order.
// Collectives run in their own MPI context, so they never match these messages.
constexpr int kP2pTag = 0x100f;

MPI_Op MpiOp(ReduceOp op) { return op == ReduceOp::kSum ? MPI_SUM : MPI_MAX; }

void CopyBytes(void* dst, const void* src, int64_t bytes) {
  if (bytes > 0 && dst != src) std::memcpy(dst, src, static_cast<size_t>(bytes));
}

}  // namespace

MPI_Datatype MpiDatatype(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return MPI_FLOAT;
    case DType::kF64:
      return MPI_DOUBLE;
    case DType::kBF16:
    case DType::kF16:
      return MPI_UINT16_T;
    case DType::kI32:
      return MPI_INT32_T;
    case DType::kI64:
      return MPI_INT64_T;
    case DType::kU8:
      return MPI_UINT8_T;
  }
  LOG(FATAL) << "unknown DType " << static_cast<int>(dtype);
  return MPI_DATATYPE_NULL;
}

StatusOr<std::unique_ptr<MpiCommunicator>> MpiCommunicator::Create(
    MPI_Comm parent, const MpiCommunicatorOptions& options) {
  if (options.max_elements_per_call < 1 || options.max_elements_per_call > INT_MAX) {
    return InvalidArgumentError("MpiCommunicatorOptions.max_elements_per_call = " +
                                std::to_string(options.max_elements_per_call) +
                                ": must be in [1, INT_MAX]");
  }
  if (options.gather_allreduce_max_bytes < 0) {
    return InvalidArgumentError("MpiCommunicatorOptions.gather_allreduce_max_bytes = " +
                                std::to_string(options.gather_allreduce_max_bytes) +
                                ": must be >= 0");
  }
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (!initialized || finalized) {
    return FailedPreconditionError(std::string("MpiCommunicator: MPI is ") +
                                   (finalized ? "already finalized" : "not initialized") +
                                   " (call comm::InitDistributed first)");
  }
  MPI_Comm comm = MPI_COMM_NULL;
  // MPI_Comm_dup reports errors through the parent's handler (fatal by default for
  // MPI_COMM_WORLD): a failure there ends the job inside MPI, which is all we could do anyway.
  int rc = MPI_Comm_dup(parent, &comm);
  if (rc != MPI_SUCCESS) {
    return InternalError("MPI_Comm_dup failed: " + MpiErrorString(rc));
  }
  rc = MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN);
  int rank = 0, size = 1;
  if (rc == MPI_SUCCESS) rc = MPI_Comm_rank(comm, &rank);
  if (rc == MPI_SUCCESS) rc = MPI_Comm_size(comm, &size);
  if (rc != MPI_SUCCESS) {
    MPI_Comm_free(&comm);
    return InternalError("MpiCommunicator setup failed: " + MpiErrorString(rc));
  }
  return std::unique_ptr<MpiCommunicator>(new MpiCommunicator(comm, rank, size, options));
}

MpiCommunicator::MpiCommunicator(MPI_Comm comm, int rank, int size,
                                 const MpiCommunicatorOptions& options)
    : comm_(comm), rank_(rank), size_(size), options_(options) {
  for (auto& v : int_counts_) v.resize(static_cast<size_t>(size));
  for (auto& v : counts_) v.resize(static_cast<size_t>(size));
}

MpiCommunicator::~MpiCommunicator() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  // After MPI_Finalize the handle cannot be freed any more (and needs not be).
  if (!finalized && comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
}

void* MpiCommunicator::Scratch(int64_t bytes) {
  const size_t words = static_cast<size_t>((bytes + 7) / 8);
  if (scratch_.size() < words) scratch_.resize(words);
  return scratch_.data();
}

bool MpiCommunicator::FitsOneCall(const std::vector<int64_t>& counts,
                                  const std::vector<int64_t>& displs) const {
  for (int p = 0; p < size_; ++p) {
    if (counts[p] > options_.max_elements_per_call || displs[p] > options_.max_elements_per_call) {
      return false;
    }
  }
  return true;
}

void MpiCommunicator::PostSends(const char* buf, int64_t count, MPI_Datatype type,
                                int64_t elem_bytes, int peer) {
  for (int64_t off = 0; off < count; off += options_.max_elements_per_call) {
    const int n = static_cast<int>(std::min(options_.max_elements_per_call, count - off));
    MPI_Request req;
    LOOM_MPI_CHECK(MPI_Isend(buf + off * elem_bytes, n, type, peer, kP2pTag, comm_, &req));
    requests_.push_back(req);
  }
}

void MpiCommunicator::PostRecvs(char* buf, int64_t count, MPI_Datatype type, int64_t elem_bytes,
                                int peer) {
  for (int64_t off = 0; off < count; off += options_.max_elements_per_call) {
    const int n = static_cast<int>(std::min(options_.max_elements_per_call, count - off));
    MPI_Request req;
    LOOM_MPI_CHECK(MPI_Irecv(buf + off * elem_bytes, n, type, peer, kP2pTag, comm_, &req));
    requests_.push_back(req);
  }
}

void MpiCommunicator::WaitAll() {
  if (!requests_.empty()) {
    LOOM_MPI_CHECK(
        MPI_Waitall(static_cast<int>(requests_.size()), requests_.data(), MPI_STATUSES_IGNORE));
  }
  requests_.clear();
}

void MpiCommunicator::ReduceScratch(int64_t n, DType dtype, ReduceOp op, void* out) {
  ReduceRankOrdered(dtype, op, scratch_.data(), n, size_, n, out);
}

void MpiCommunicator::AllReduce(const void* send, void* recv, int64_t count, DType dtype,
                                ReduceOp op) {
  CheckReduceArgs("AllReduce", dtype, count);
  const int64_t esize = DTypeSize(dtype);
  if (count == 0) return;
  if (size_ == 1) {
    CopyBytes(recv, send, count * esize);
    return;
  }
  const MPI_Datatype type = MpiDatatype(dtype);
  char* out = static_cast<char*>(recv);
  if (!IsFloatingPoint(dtype)) {
    // Integer sums and maxima are exact: MPI's order cannot change the bits.
    const bool in_place = send == recv;
    for (int64_t off = 0; off < count; off += options_.max_elements_per_call) {
      const int n = static_cast<int>(std::min(options_.max_elements_per_call, count - off));
      const void* src = in_place ? MPI_IN_PLACE : static_cast<const char*>(send) + off * esize;
      LOOM_MPI_CHECK(MPI_Allreduce(src, out + off * esize, n, type, MpiOp(op), comm_));
    }
    return;
  }
  if (size_ * count * esize <= options_.gather_allreduce_max_bytes) {
    // Small: every rank gets every rank's buffer and reduces all of it.
    void* all = Scratch(size_ * count * esize);
    AllGather(send, all, count, dtype);
    ReduceScratch(count, dtype, op, recv);
    return;
  }
  // Large: rank p owns block p. The all-to-all hands rank r the R copies of block r (rank-major
  // in scratch); r reduces them and the in-place AllGatherV shares the reduced blocks. send is
  // fully read into scratch before recv is written, so send == recv is fine.
  std::vector<int64_t>& send_counts = counts_[0];
  std::vector<int64_t>& send_displs = counts_[1];
  std::vector<int64_t>& recv_counts = counts_[2];
  std::vector<int64_t>& recv_displs = counts_[3];
  const int64_t own = BlockLength(count, size_, rank_);
  for (int p = 0; p < size_; ++p) {
    send_counts[p] = BlockLength(count, size_, p);
    send_displs[p] = BlockBegin(count, size_, p);
    recv_counts[p] = own;
    recv_displs[p] = p * own;
  }
  void* copies = Scratch(size_ * own * esize);
  // One split decision for every rank, from values all ranks share (the largest count or
  // displacement any rank uses), so no agreement round is needed.
  const int64_t widest = (count + size_ - 1) / size_;
  const int split = std::max(count, (size_ - 1) * widest) > options_.max_elements_per_call;
  AllToAllVImpl(send, send_counts, send_displs, copies, recv_counts, recv_displs, dtype, split);
  char* own_out = out + BlockBegin(count, size_, rank_) * esize;
  if (own > 0) ReduceScratch(own, dtype, op, own_out);
  // The reduced blocks have the same lengths and offsets as the send blocks.
  AllGatherV(own_out, own, recv, counts_[0], counts_[1], dtype);
}

void MpiCommunicator::AllToAllV(const void* send, const std::vector<int64_t>& send_counts,
                                const std::vector<int64_t>& send_displs, void* recv,
                                const std::vector<int64_t>& recv_counts,
                                const std::vector<int64_t>& recv_displs, DType dtype) {
  AllToAllVImpl(send, send_counts, send_displs, recv, recv_counts, recv_displs, dtype,
                kDecideSplit);
}

void MpiCommunicator::AllToAllVImpl(const void* send, const std::vector<int64_t>& send_counts,
                                    const std::vector<int64_t>& send_displs, void* recv,
                                    const std::vector<int64_t>& recv_counts,
                                    const std::vector<int64_t>& recv_displs, DType dtype,
                                    int split) {
  CheckAllToAllVArgs(rank_, size_, send_counts, send_displs, recv_counts, recv_displs);
  const MPI_Datatype type = MpiDatatype(dtype);
  const int64_t esize = DTypeSize(dtype);
  // Each rank sees only its own counts, but all must take the same path (a collective on one
  // rank and point-to-point on another would never match): unless the caller decided from
  // values every rank shares, the ranks agree with one small allreduce.
  if (split == kDecideSplit) {
    split = FitsOneCall(send_counts, send_displs) && FitsOneCall(recv_counts, recv_displs) ? 0 : 1;
    if (size_ > 1) {
      LOOM_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &split, 1, MPI_INT, MPI_MAX, comm_));
    }
  }
  if (!split) {
    std::vector<int>* v = int_counts_;
    for (int p = 0; p < size_; ++p) {
      v[0][p] = static_cast<int>(send_counts[p]);
      v[1][p] = static_cast<int>(send_displs[p]);
      v[2][p] = static_cast<int>(recv_counts[p]);
      v[3][p] = static_cast<int>(recv_displs[p]);
    }
    LOOM_MPI_CHECK(MPI_Alltoallv(send, v[0].data(), v[1].data(), type, recv, v[2].data(),
                                 v[3].data(), type, comm_));
    return;
  }
  // Counts or displacements beyond one call: pieces by point-to-point. Receives are posted
  // first so that most sends find their buffer waiting.
  const char* in = static_cast<const char*>(send);
  char* out = static_cast<char*>(recv);
  for (int i = 1; i < size_; ++i) {
    const int p = (rank_ + size_ - i) % size_;
    PostRecvs(out + recv_displs[p] * esize, recv_counts[p], type, esize, p);
  }
  for (int i = 1; i < size_; ++i) {
    const int p = (rank_ + i) % size_;
    PostSends(in + send_displs[p] * esize, send_counts[p], type, esize, p);
  }
  CopyBytes(out + recv_displs[rank_] * esize, in + send_displs[rank_] * esize,
            send_counts[rank_] * esize);
  WaitAll();
}

void MpiCommunicator::AllGather(const void* send, void* recv, int64_t count, DType dtype) {
  CheckCount("AllGather", count);
  if (count == 0) return;
  const int64_t esize = DTypeSize(dtype);
  char* out = static_cast<char*>(recv);
  if (count <= options_.max_elements_per_call) {
    const bool in_place = send == out + rank_ * count * esize;
    LOOM_MPI_CHECK(MPI_Allgather(in_place ? MPI_IN_PLACE : send, static_cast<int>(count),
                                 MpiDatatype(dtype), recv, static_cast<int>(count),
                                 MpiDatatype(dtype), comm_));
    return;
  }
  std::vector<int64_t> counts(static_cast<size_t>(size_), count),
      displs(static_cast<size_t>(size_));
  for (int p = 0; p < size_; ++p) displs[p] = p * count;
  AllGatherV(send, count, recv, counts, displs, dtype);
}

void MpiCommunicator::AllGatherV(const void* send, int64_t send_count, void* recv,
                                 const std::vector<int64_t>& recv_counts,
                                 const std::vector<int64_t>& recv_displs, DType dtype) {
  CheckAllGatherVArgs(rank_, size_, send_count, recv_counts, recv_displs);
  const MPI_Datatype type = MpiDatatype(dtype);
  const int64_t esize = DTypeSize(dtype);
  char* out = static_cast<char*>(recv);
  char* own_out = out + recv_displs[rank_] * esize;
  const bool in_place = send == own_out;
  if (FitsOneCall(recv_counts, recv_displs)) {
    std::vector<int>* v = int_counts_;
    for (int p = 0; p < size_; ++p) {
      v[0][p] = static_cast<int>(recv_counts[p]);
      v[1][p] = static_cast<int>(recv_displs[p]);
    }
    LOOM_MPI_CHECK(MPI_Allgatherv(in_place ? MPI_IN_PLACE : send, static_cast<int>(send_count),
                                  type, recv, v[0].data(), v[1].data(), type, comm_));
    return;
  }
  for (int i = 1; i < size_; ++i) {
    const int p = (rank_ + size_ - i) % size_;
    PostRecvs(out + recv_displs[p] * esize, recv_counts[p], type, esize, p);
  }
  for (int i = 1; i < size_; ++i) {
    PostSends(static_cast<const char*>(send), send_count, type, esize, (rank_ + i) % size_);
  }
  if (!in_place) CopyBytes(own_out, send, send_count * esize);
  WaitAll();
}

void MpiCommunicator::ReduceScatter(const void* send, void* recv, int64_t recv_count, DType dtype,
                                    ReduceOp op) {
  CheckReduceArgs("ReduceScatter", dtype, recv_count);
  if (recv_count == 0) return;
  const int64_t esize = DTypeSize(dtype);
  if (size_ == 1) {
    CopyBytes(recv, send, recv_count * esize);
    return;
  }
  if (!IsFloatingPoint(dtype) && recv_count <= options_.max_elements_per_call) {
    LOOM_MPI_CHECK(MPI_Reduce_scatter_block(send, recv, static_cast<int>(recv_count),
                                            MpiDatatype(dtype), MpiOp(op), comm_));
    return;
  }
  // Every rank's block r goes to rank r (rank-major in scratch), which reduces in rank order.
  std::vector<int64_t>& counts = counts_[0];
  std::vector<int64_t>& send_displs = counts_[1];
  std::vector<int64_t>& recv_displs = counts_[2];
  for (int p = 0; p < size_; ++p) {
    counts[p] = recv_count;
    send_displs[p] = p * recv_count;
    recv_displs[p] = p * recv_count;
  }
  void* copies = Scratch(size_ * recv_count * esize);
  // Largest count or displacement of any rank: (R - 1) * recv_count (or recv_count at R = 1).
  const int split =
      std::max<int64_t>(recv_count, (size_ - 1) * recv_count) > options_.max_elements_per_call;
  AllToAllVImpl(send, counts, send_displs, copies, counts, recv_displs, dtype, split);
  ReduceScratch(recv_count, dtype, op, recv);
}

void MpiCommunicator::Broadcast(void* buffer, int64_t count, DType dtype, int root) {
  CheckBroadcastArgs(count, root, size_);
  const int64_t esize = DTypeSize(dtype);
  char* buf = static_cast<char*>(buffer);
  for (int64_t off = 0; off < count; off += options_.max_elements_per_call) {
    const int n = static_cast<int>(std::min(options_.max_elements_per_call, count - off));
    LOOM_MPI_CHECK(MPI_Bcast(buf + off * esize, n, MpiDatatype(dtype), root, comm_));
  }
}

void MpiCommunicator::Barrier() { LOOM_MPI_CHECK(MPI_Barrier(comm_)); }

}  // namespace loom::comm
