// Helper for comm_fatal_on_one_rank_* (check_abort.cmake), run as `mpirun -np 2`: rank 1 fails
// while rank 0 waits in a collective; the whole job must end at once with the failure named.
//   --mode=check      rank 1 fails a CHECK
//   --mode=mpi_error  rank 1 makes an MPI call that fails (LOOM_MPI_CHECK: MPI_ERR_RANK)
//   --mode=ok         nobody fails; exits 0 (the control: the helper itself works)
#include <unistd.h>

#include <cstring>
#include <string>

#include <glog/logging.h>
#include <mpi.h>

#include "csrc/comm/bootstrap.h"
#include "csrc/comm/mpi_check.h"
#include "csrc/comm/mpi_communicator.h"

namespace loom::comm {
namespace {

int Run(int argc, char** argv) {
  std::string mode = "check";
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], "--mode=", 7) == 0) mode = argv[i] + 7;
  }
  StatusOr<Bootstrap> boot = InitDistributed(&argc, &argv);
  if (!boot.ok()) {
    LOG(ERROR) << boot.status();
    return 1;
  }
  CHECK_EQ(boot->world_size, 2) << "run with mpirun -np 2";
  auto made = MpiCommunicator::Create(MPI_COMM_WORLD);
  LOOM_CHECK_OK(made.status());
  std::unique_ptr<MpiCommunicator> comm = std::move(made).value();
  comm->Barrier();

  // Rank 0 tells rank 1 it is entering the barrier, so rank 1 fails while rank 0 waits in it.
  int token = 1;
  if (boot->rank == 0) {
    LOOM_MPI_CHECK(MPI_Send(&token, 1, MPI_INT, 1, 0, comm->mpi_comm()));
    LOG(INFO) << "rank 0 waiting in Barrier";
    comm->Barrier();
    LOG(INFO) << "barrier returned on rank 0";
  } else {
    LOOM_MPI_CHECK(MPI_Recv(&token, 1, MPI_INT, 0, 0, comm->mpi_comm(), MPI_STATUS_IGNORE));
    usleep(200 * 1000);
    if (mode == "check") {
      const int replicas = 2;
      CHECK_EQ(replicas, 3) << "abort_helper: deliberate CHECK failure on rank 1";
    } else if (mode == "mpi_error") {
      LOOM_MPI_CHECK(MPI_Send(&token, 1, MPI_INT, /*dest=*/7, 0, comm->mpi_comm()));
    }
    comm->Barrier();
  }
  comm.reset();
  LOOM_CHECK_OK(FinalizeDistributed(*boot));
  return 0;
}

}  // namespace
}  // namespace loom::comm

int main(int argc, char** argv) { return loom::comm::Run(argc, argv); }
