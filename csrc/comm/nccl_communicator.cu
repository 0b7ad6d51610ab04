// NCCL backend (CUDA builds only). Host code only: NCCL runs its own kernels.
#include "csrc/comm/nccl_communicator.h"

#include <cstring>
#include <string>
#include <utility>

#include <cuda_runtime.h>
#include <nccl.h>

#include "csrc/comm/bootstrap.h"
#include "csrc/comm/collective_checks.h"
#include "csrc/comm/mpi_check.h"
#include "csrc/comm/nccl_check.cuh"
#include "csrc/core/cuda_check.cuh"
#include "csrc/core/gpu.h"
#include "csrc/core/logging.h"

namespace loom::comm {
namespace {

ncclDataType_t NcclType(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return ncclFloat32;
    case DType::kF64:
      return ncclFloat64;
    case DType::kBF16:
      return ncclBfloat16;
    case DType::kF16:
      return ncclFloat16;
    case DType::kI32:
      return ncclInt32;
    case DType::kI64:
      return ncclInt64;
    case DType::kU8:
      return ncclUint8;
  }
  LOG(FATAL) << "unknown DType " << static_cast<int>(dtype);
  return ncclUint8;
}

ncclRedOp_t NcclOp(ReduceOp op) { return op == ReduceOp::kSum ? ncclSum : ncclMax; }

}  // namespace

StatusOr<std::unique_ptr<NcclCommunicator>> NcclCommunicator::Create(MPI_Comm mpi_comm, int device,
                                                                     Stream stream) {
  int rank = 0, size = 1;
  int rc = MPI_Comm_rank(mpi_comm, &rank);
  if (rc == MPI_SUCCESS) rc = MPI_Comm_size(mpi_comm, &size);
  if (rc != MPI_SUCCESS) {
    return InternalError("NcclCommunicator: MPI_Comm_rank/size: " + MpiErrorString(rc));
  }

  // 1. Device, stream and the Barrier word; then agree that every rank got this far.
  std::unique_ptr<NcclCommunicator> c(new NcclCommunicator());
  c->rank_ = rank;
  c->size_ = size;
  c->device_ = device;
  auto prepare = [&]() -> Status {
    LOOM_RETURN_IF_ERROR(
        gpu::SetDevice(device).WithContext("NcclCommunicator device " + std::to_string(device)));
    if (stream.handle == nullptr) {
      cudaStream_t s = nullptr;
      cudaError_t err = cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
      if (err != cudaSuccess) {
        return UnavailableError(std::string("cudaStreamCreateWithFlags: ") +
                                cudaGetErrorString(err));
      }
      c->stream_ = FromCudaStream(s);
      c->owns_stream_ = true;
    } else {
      c->stream_ = stream;
    }
    cudaError_t err = cudaMalloc(&c->barrier_word_, sizeof(int));
    if (err == cudaSuccess) err = cudaMemset(c->barrier_word_, 0, sizeof(int));
    if (err != cudaSuccess) {
      return UnavailableError(std::string("cudaMalloc/cudaMemset of the barrier word: ") +
                              cudaGetErrorString(err));
    }
    return Status::Ok();
  };
  const Status local = prepare();
  LOOM_RETURN_IF_ERROR(AgreeOnStatus(local, mpi_comm));

  // 2. Rank 0 makes the unique id; the broadcast carries its success flag, so a failure there
  //    becomes an error on every rank.
  struct {
    int ok;
    ncclUniqueId id;
  } hello;
  std::memset(&hello, 0, sizeof(hello));
  if (rank == 0) {
    ncclResult_t r = ncclGetUniqueId(&hello.id);
    hello.ok = r == ncclSuccess ? 1 : 0;
    if (r != ncclSuccess) {
      LOG(ERROR) << "ncclGetUniqueId: " << ncclGetErrorString(r) << " (" << RankAndHost() << ")";
    }
  }
  rc = MPI_Bcast(&hello, sizeof(hello), MPI_BYTE, 0, mpi_comm);
  if (rc != MPI_SUCCESS) {
    return InternalError("NcclCommunicator: MPI_Bcast of the NCCL unique id: " +
                         MpiErrorString(rc));
  }
  if (!hello.ok) {
    return InternalError("NcclCommunicator: ncclGetUniqueId failed on rank 0 (see its log)");
  }

  // 3. Join. ncclCommInitRank blocks until all ranks joined.
  ncclComm_t comm = nullptr;
  ncclResult_t r = ncclCommInitRank(&comm, size, hello.id, rank);
  if (r != ncclSuccess) {
    return InternalError(std::string("ncclCommInitRank(nranks=") + std::to_string(size) +
                         ", rank=" + std::to_string(rank) + ", device=" + std::to_string(device) +
                         "): " + ncclGetErrorString(r) + ": " + ncclGetLastError(nullptr));
  }
  c->comm_ = comm;
  return StatusOr<std::unique_ptr<NcclCommunicator>>(std::move(c));
}

NcclCommunicator::~NcclCommunicator() {
  // Teardown errors are logged, not fatal: the process is usually on its way out.
  if (comm_ != nullptr) {
    cudaStreamSynchronize(AsCudaStream(stream_));
    ncclResult_t r = ncclCommDestroy(comm_);
    if (r != ncclSuccess) LOG(WARNING) << "ncclCommDestroy: " << ncclGetErrorString(r);
  }
  if (barrier_word_ != nullptr) cudaFree(barrier_word_);
  if (owns_stream_) cudaStreamDestroy(AsCudaStream(stream_));
}

void NcclCommunicator::AllReduce(const void* send, void* recv, int64_t count, DType dtype,
                                 ReduceOp op) {
  CheckReduceArgs("AllReduce", dtype, count);
  if (count == 0) return;
  LOOM_NCCL_CHECK(ncclAllReduce(send, recv, static_cast<size_t>(count), NcclType(dtype), NcclOp(op),
                                comm_, AsCudaStream(stream_)));
}

void NcclCommunicator::AllToAllV(const void* send, const std::vector<int64_t>& send_counts,
                                 const std::vector<int64_t>& send_displs, void* recv,
                                 const std::vector<int64_t>& recv_counts,
                                 const std::vector<int64_t>& recv_displs, DType dtype) {
  CheckAllToAllVArgs(rank_, size_, send_counts, send_displs, recv_counts, recv_displs);
  const ncclDataType_t type = NcclType(dtype);
  const int64_t esize = DTypeSize(dtype);
  const char* in = static_cast<const char*>(send);
  char* out = static_cast<char*>(recv);
  cudaStream_t s = AsCudaStream(stream_);
  // Zero counts are skipped on both sides (the sender's send_counts[p] is the receiver's
  // recv_counts[sender]), so the pairs still match.
  LOOM_NCCL_CHECK(ncclGroupStart());
  for (int p = 0; p < size_; ++p) {
    if (p == rank_) continue;
    if (send_counts[p] > 0) {
      LOOM_NCCL_CHECK(ncclSend(in + send_displs[p] * esize, static_cast<size_t>(send_counts[p]),
                               type, p, comm_, s));
    }
    if (recv_counts[p] > 0) {
      LOOM_NCCL_CHECK(ncclRecv(out + recv_displs[p] * esize, static_cast<size_t>(recv_counts[p]),
                               type, p, comm_, s));
    }
  }
  LOOM_NCCL_CHECK(ncclGroupEnd());
  if (send_counts[rank_] > 0) {
    LOOM_CUDA_CHECK(cudaMemcpyAsync(
        out + recv_displs[rank_] * esize, in + send_displs[rank_] * esize,
        static_cast<size_t>(send_counts[rank_] * esize), cudaMemcpyDeviceToDevice, s));
  }
}

void NcclCommunicator::AllGather(const void* send, void* recv, int64_t count, DType dtype) {
  CheckCount("AllGather", count);
  if (count == 0) return;
  LOOM_NCCL_CHECK(ncclAllGather(send, recv, static_cast<size_t>(count), NcclType(dtype), comm_,
                                AsCudaStream(stream_)));
}

void NcclCommunicator::AllGatherV(const void* send, int64_t send_count, void* recv,
                                  const std::vector<int64_t>& recv_counts,
                                  const std::vector<int64_t>& recv_displs, DType dtype) {
  CheckAllGatherVArgs(rank_, size_, send_count, recv_counts, recv_displs);
  const ncclDataType_t type = NcclType(dtype);
  const int64_t esize = DTypeSize(dtype);
  char* out = static_cast<char*>(recv);
  LOOM_NCCL_CHECK(ncclGroupStart());
  for (int p = 0; p < size_; ++p) {
    if (recv_counts[p] == 0) continue;
    // sendbuff is read on the root only; in place when send == recv + recv_displs[rank].
    const void* src = p == rank_ ? send : out + recv_displs[p] * esize;
    LOOM_NCCL_CHECK(ncclBroadcast(src, out + recv_displs[p] * esize,
                                  static_cast<size_t>(recv_counts[p]), type, p, comm_,
                                  AsCudaStream(stream_)));
  }
  LOOM_NCCL_CHECK(ncclGroupEnd());
}

void NcclCommunicator::ReduceScatter(const void* send, void* recv, int64_t recv_count, DType dtype,
                                     ReduceOp op) {
  CheckReduceArgs("ReduceScatter", dtype, recv_count);
  if (recv_count == 0) return;
  LOOM_NCCL_CHECK(ncclReduceScatter(send, recv, static_cast<size_t>(recv_count), NcclType(dtype),
                                    NcclOp(op), comm_, AsCudaStream(stream_)));
}

void NcclCommunicator::Broadcast(void* buffer, int64_t count, DType dtype, int root) {
  CheckBroadcastArgs(count, root, size_);
  if (count == 0) return;
  LOOM_NCCL_CHECK(ncclBroadcast(buffer, buffer, static_cast<size_t>(count), NcclType(dtype), root,
                                comm_, AsCudaStream(stream_)));
}

void NcclCommunicator::Barrier() {
  LOOM_NCCL_CHECK(ncclAllReduce(barrier_word_, barrier_word_, 1, ncclInt32, ncclSum, comm_,
                                AsCudaStream(stream_)));
  Synchronize();
}

void NcclCommunicator::Synchronize() {
  LOOM_CUDA_CHECK(cudaStreamSynchronize(AsCudaStream(stream_)));
}

}  // namespace loom::comm
