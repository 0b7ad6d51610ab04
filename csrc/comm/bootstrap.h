// Process start-up for a distributed job: MPI, ranks, the GPU, and communicators.
//
//   int main(int argc, char** argv) {
//     auto boot = comm::InitDistributed(&argc, &argv);        // MPI_Init_thread, ranks, GPU
//     if (!boot.ok()) { LOG(ERROR) << boot.status(); return 1; }
//     auto c = comm::CreateCommunicator(comm::Backend::kMpi, *boot);
//     ...
//     c->reset();                                           // communicators before MPI
//     LOOM_CHECK_OK(comm::FinalizeDistributed(*boot));
//   }
//
// Errors are Status values naming what failed (the MPI call, the variable, the device); a
// program prints them and exits non-zero. Everything here is collective over MPI_COMM_WORLD
// (or the given communicator) unless it says otherwise.
#ifndef LOOM_COMM_BOOTSTRAP_H_
#define LOOM_COMM_BOOTSTRAP_H_

#include <memory>
#include <string>

#include <mpi.h>

#include "csrc/comm/communicator.h"
#include "csrc/core/device.h"
#include "csrc/core/status.h"

namespace loom::comm {

struct BootstrapOptions {
  // Thread support asked of MPI_Init_thread. Loom makes MPI calls from one thread only
  // (MPI_THREAD_FUNNELED); ask for more if your program needs it.
  int required_thread_level = MPI_THREAD_FUNNELED;
  // When CUDA is usable: make GPU local_rank % device_count current for this process.
  bool select_gpu = true;
};

struct Bootstrap {
  int rank = 0;        // in MPI_COMM_WORLD
  int world_size = 1;  // R
  int local_rank = 0;  // among the ranks on this host, 0 <= local_rank < local_size
  int local_size = 1;
  // Where local_rank came from: "OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID" or
  // "MPI_Comm_split_type" (ranks sharing memory with this one, ordered by world rank).
  std::string local_rank_source;
  std::string host;
  int thread_level = MPI_THREAD_SINGLE;  // what MPI provides
  // True when InitDistributed initialized MPI (then FinalizeDistributed finalizes it). False
  // when MPI was already initialized by the caller (a test main, an embedding program).
  bool owns_mpi = false;
  int gpu = -1;  // CUDA device made current for this process; -1 when none

  Device device() const { return gpu >= 0 ? Device::Cuda(gpu) : Device::Cpu(); }
};

// Initializes MPI (MPI_Init_thread; or accepts an MPI the caller already initialized), logging
// (InitLogging + SetLogRank, so every log line carries "[r<rank>/<R> host]"), finds the local
// rank, and selects the GPU (options.select_gpu). Call once, first thing in main; not
// collective in its error paths (a rank that fails returns its own error).
// Errors: Internal (MPI call failed, named), FailedPrecondition (MPI already finalized, or
// thread level below options.required_thread_level), Unavailable (cudaSetDevice failed).
StatusOr<Bootstrap> InitDistributed(int* argc, char*** argv, const BootstrapOptions& options = {});

// MPI_Finalize when InitDistributed initialized MPI (bootstrap.owns_mpi); a no-op otherwise.
// Destroy every communicator first. Collective.
Status FinalizeDistributed(const Bootstrap& bootstrap);

enum class Backend { kMpi, kNccl };
// "mpi", "nccl".
const char* BackendName(Backend backend);
// "mpi" (or "cpu") and "nccl" (or "cuda"); InvalidArgument names the string otherwise.
StatusOr<Backend> ParseBackend(const std::string& name);

// Creates the communicator for `backend` over `comm` (every rank of `comm` calls it):
//   kMpi  MpiCommunicator (host buffers);
//   kNccl NcclCommunicator (device buffers) on bootstrap.gpu (or local_rank % device_count).
// kNccl errors, the same on every rank: Unimplemented "built without CUDA" in a CPU-only build;
// Unavailable "no GPU: <driver's reason>" where no GPU can be used; Unavailable when NCCL
// initialization fails (named).
StatusOr<std::unique_ptr<Communicator>> CreateCommunicator(Backend backend,
                                                           const Bootstrap& bootstrap,
                                                           MPI_Comm comm = MPI_COMM_WORLD);

// Collective over `comm`: OK when `local` is OK on every rank; otherwise every rank returns an
// error, the failing ranks their own and the others "rank <k> failed: <k's message>" for the
// lowest failing rank k. Use it before a step that would leave healthy ranks waiting for a
// failed one (NCCL initialization, opening per-rank files).
Status AgreeOnStatus(const Status& local, MPI_Comm comm);

}  // namespace loom::comm

#endif  // LOOM_COMM_BOOTSTRAP_H_
