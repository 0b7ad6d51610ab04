#include "csrc/comm/bootstrap.h"

#include <unistd.h>

#include <climits>
#include <cstdlib>
#include <cstring>
#include <utility>

#include <glog/logging.h>

#include "csrc/comm/mpi_check.h"
#include "csrc/comm/mpi_communicator.h"
#include "csrc/comm/nccl_communicator.h"
#include "csrc/core/gpu.h"
#include "csrc/core/logging.h"

namespace loom::comm {
namespace {

const char* ThreadLevelName(int level) {
  switch (level) {
    case MPI_THREAD_SINGLE:
      return "MPI_THREAD_SINGLE";
    case MPI_THREAD_FUNNELED:
      return "MPI_THREAD_FUNNELED";
    case MPI_THREAD_SERIALIZED:
      return "MPI_THREAD_SERIALIZED";
    case MPI_THREAD_MULTIPLE:
      return "MPI_THREAD_MULTIPLE";
  }
  return "unknown thread level";
}

Status MpiError(const char* call, int rc) {
  return InternalError(std::string(call) + " failed: " + MpiErrorString(rc));
}

// A non-negative integer environment variable, or -1 when unset or not a number.
int EnvInt(const char* name) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return -1;
  char* end = nullptr;
  long x = std::strtol(v, &end, 10);
  return (*end == '\0' && x >= 0 && x <= INT_MAX) ? static_cast<int>(x) : -1;
}

}  // namespace

StatusOr<Bootstrap> InitDistributed(int* argc, char*** argv, const BootstrapOptions& options) {
  InitLogging(argv != nullptr && *argv != nullptr ? (*argv)[0] : "loom");
  Bootstrap b;
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (finalized) return FailedPreconditionError("InitDistributed: MPI was already finalized");
  if (!initialized) {
    int rc = MPI_Init_thread(argc, argv, options.required_thread_level, &b.thread_level);
    if (rc != MPI_SUCCESS) return MpiError("MPI_Init_thread", rc);
    b.owns_mpi = true;
  } else {
    MPI_Query_thread(&b.thread_level);
  }
  int rc = MPI_Comm_rank(MPI_COMM_WORLD, &b.rank);
  if (rc == MPI_SUCCESS) rc = MPI_Comm_size(MPI_COMM_WORLD, &b.world_size);
  if (rc != MPI_SUCCESS) return MpiError("MPI_Comm_rank/MPI_Comm_size(MPI_COMM_WORLD)", rc);
  SetLogRank(b.rank, b.world_size);

  char host[256] = {0};
  gethostname(host, sizeof(host) - 1);
  b.host = host;

  if (b.thread_level < options.required_thread_level) {
    // A caller that initialized MPI itself with less may still only call MPI from one thread;
    // when we initialized it, MPI could not give what was asked.
    std::string msg = std::string("MPI provides ") + ThreadLevelName(b.thread_level) + ", " +
                      ThreadLevelName(options.required_thread_level) + " was required";
    if (b.owns_mpi) return FailedPreconditionError("MPI_Init_thread: " + msg);
    LOG_IF(WARNING, b.rank == 0) << "InitDistributed: MPI was initialized by the caller; " << msg;
  }

  // Ranks sharing this host: the shared-memory split is launcher-independent; the launcher's
  // variables (when present and consistent with it) name the same ordering most launchers use
  // for CPU/GPU binding.
  MPI_Comm node = MPI_COMM_NULL;
  rc = MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, b.rank, MPI_INFO_NULL, &node);
  if (rc != MPI_SUCCESS) return MpiError("MPI_Comm_split_type(MPI_COMM_TYPE_SHARED)", rc);
  int node_rank = 0, node_size = 1;
  MPI_Comm_rank(node, &node_rank);
  MPI_Comm_size(node, &node_size);
  MPI_Comm_free(&node);
  b.local_rank = node_rank;
  b.local_size = node_size;
  b.local_rank_source = "MPI_Comm_split_type";
  for (const char* var : {"OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID"}) {
    const int v = EnvInt(var);
    if (v < 0) continue;
    if (v >= node_size) {
      LOG(WARNING) << var << "=" << v << " but only " << node_size
                   << " ranks share this host; using MPI_Comm_split_type's local rank "
                   << node_rank;
      break;
    }
    b.local_rank = v;
    b.local_rank_source = var;
    break;
  }

  if (options.select_gpu && gpu::CudaAvailable()) {
    const int count = gpu::DeviceCount();
    b.gpu = b.local_rank % count;
    LOOM_RETURN_IF_ERROR(gpu::SetDevice(b.gpu).WithContext(
        "InitDistributed: local rank " + std::to_string(b.local_rank) + " of " +
        std::to_string(b.local_size) + " selecting GPU " + std::to_string(b.gpu)));
    LOG_IF(WARNING, b.local_size > count && b.local_rank == 0)
        << b.local_size << " ranks share " << count << " GPU(s) on " << b.host
        << ": NCCL needs one GPU per rank";
  }
  VLOG(1) << "InitDistributed: rank " << b.rank << "/" << b.world_size << " local " << b.local_rank
          << "/" << b.local_size << " (" << b.local_rank_source << ") gpu " << b.gpu << " "
          << ThreadLevelName(b.thread_level);
  return b;
}

Status FinalizeDistributed(const Bootstrap& bootstrap) {
  if (!bootstrap.owns_mpi) return Status::Ok();
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized) return Status::Ok();
  const int rc = MPI_Finalize();
  if (rc != MPI_SUCCESS) return MpiError("MPI_Finalize", rc);
  return Status::Ok();
}

const char* BackendName(Backend backend) { return backend == Backend::kMpi ? "mpi" : "nccl"; }

StatusOr<Backend> ParseBackend(const std::string& name) {
  if (name == "mpi" || name == "cpu") return Backend::kMpi;
  if (name == "nccl" || name == "cuda") return Backend::kNccl;
  return InvalidArgumentError("unknown communicator backend '" + name + "' (expected mpi or nccl)");
}

Status AgreeOnStatus(const Status& local, MPI_Comm comm) {
  int rank = 0;
  int rc = MPI_Comm_rank(comm, &rank);
  if (rc != MPI_SUCCESS) return MpiError("AgreeOnStatus: MPI_Comm_rank", rc);
  const int mine = local.ok() ? INT_MAX : rank;
  int first_failed = INT_MAX;
  rc = MPI_Allreduce(&mine, &first_failed, 1, MPI_INT, MPI_MIN, comm);
  if (rc != MPI_SUCCESS) return MpiError("AgreeOnStatus: MPI_Allreduce", rc);
  if (first_failed == INT_MAX) return Status::Ok();
  // Every rank reports the lowest failing rank's message.
  char message[512] = {0};
  if (rank == first_failed) std::strncpy(message, local.ToString().c_str(), sizeof(message) - 1);
  rc = MPI_Bcast(message, sizeof(message), MPI_CHAR, first_failed, comm);
  if (rc != MPI_SUCCESS) return MpiError("AgreeOnStatus: MPI_Bcast", rc);
  if (!local.ok()) return local;
  return Status(StatusCode::kUnavailable,
                "rank " + std::to_string(first_failed) + " failed: " + message);
}

StatusOr<std::unique_ptr<Communicator>> CreateCommunicator(Backend backend,
                                                           const Bootstrap& bootstrap,
                                                           MPI_Comm comm) {
  if (backend == Backend::kMpi) {
    LOOM_ASSIGN_OR_RETURN(std::unique_ptr<MpiCommunicator> mpi, MpiCommunicator::Create(comm));
    return std::unique_ptr<Communicator>(std::move(mpi));
  }
  // NCCL. Every rank decides the same way (or hears why another could not) before any of
  // them enters NCCL's initialization, which would wait forever for a missing rank.
  Status local;
  int device = bootstrap.gpu;
  if (!LOOM_WITH_CUDA) {
    local = UnimplementedError(
        "the nccl backend needs CUDA, but this Loom build is built without CUDA "
        "(LOOM_WITH_CUDA=OFF)");
  } else if (!gpu::CudaAvailable()) {
    local = UnavailableError("the nccl backend needs a GPU: no GPU on " + bootstrap.host + " (" +
                             gpu::UnavailableReason() + ")");
  } else if (device < 0) {
    device = bootstrap.local_rank % gpu::DeviceCount();
  }
  LOOM_RETURN_IF_ERROR(AgreeOnStatus(local, comm));
  LOOM_ASSIGN_OR_RETURN(std::unique_ptr<NcclCommunicator> nccl,
                        NcclCommunicator::Create(comm, device));
  return std::unique_ptr<Communicator>(std::move(nccl));
}

}  // namespace loom::comm
