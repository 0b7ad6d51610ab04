// Bootstrap under mpirun at 1, 2 and 4 ranks on one host. MPI is initialized by the test main,
// so InitDistributed takes the "already initialized" path (the MPI_Init_thread path and
// FinalizeDistributed's MPI_Finalize run in comm_selfcheck_np2, which launches loom_selfcheck).
#include "csrc/comm/bootstrap.h"

#include <unistd.h>

#include <cstdlib>
#include <string>

#include <gtest/gtest.h>
#include <mpi.h>

#include "csrc/core/gpu.h"
#include "csrc/core/logging.h"

namespace loom::comm {
namespace {

StatusOr<Bootstrap> Init() {
  static int argc = 1;
  static char arg0[] = "comm_bootstrap_test";
  static char* args[] = {arg0, nullptr};
  static char** argv = args;
  return InitDistributed(&argc, &argv);
}

TEST(BootstrapTest, RanksMatchMpiAndLocalRanksCoverThisHost) {
  StatusOr<Bootstrap> boot = Init();
  ASSERT_TRUE(boot.ok()) << boot.status();
  int rank = -1, size = -1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  EXPECT_EQ(boot->rank, rank);
  EXPECT_EQ(boot->world_size, size);
  EXPECT_FALSE(boot->owns_mpi) << "the test main initialized MPI";
  EXPECT_EQ(LogRank(), rank);
  EXPECT_NE(RankAndHost().find("rank " + std::to_string(rank) + "/" + std::to_string(size)),
            std::string::npos)
      << RankAndHost();
  char host[256] = {0};
  gethostname(host, sizeof(host) - 1);
  EXPECT_EQ(boot->host, host);
  // ctest runs every rank on this host: local ranks are a permutation of 0..R-1.
  EXPECT_EQ(boot->local_size, size);
  ASSERT_GE(boot->local_rank, 0);
  ASSERT_LT(boot->local_rank, boot->local_size);
  int seen = 0, mine = 1 << boot->local_rank;
  MPI_Allreduce(&mine, &seen, 1, MPI_INT, MPI_BOR, MPI_COMM_WORLD);
  EXPECT_EQ(seen, (1 << size) - 1) << "local ranks are not distinct";
  if (std::getenv("OMPI_COMM_WORLD_LOCAL_RANK") != nullptr) {
    EXPECT_EQ(boot->local_rank_source, "OMPI_COMM_WORLD_LOCAL_RANK");
    EXPECT_EQ(boot->local_rank, std::atoi(std::getenv("OMPI_COMM_WORLD_LOCAL_RANK")));
  }
  if (gpu::CudaAvailable()) {
    EXPECT_EQ(boot->gpu, boot->local_rank % gpu::DeviceCount());
    EXPECT_TRUE(boot->device().is_cuda());
  } else {
    EXPECT_EQ(boot->gpu, -1);
    EXPECT_TRUE(boot->device().is_cpu());
  }
  // Not owned: finalizing is the caller's business, so MPI stays up.
  EXPECT_TRUE(FinalizeDistributed(*boot).ok());
  int finalized = 1;
  MPI_Finalized(&finalized);
  EXPECT_EQ(finalized, 0);
}

TEST(BootstrapTest, CreatesMpiCommunicator) {
  StatusOr<Bootstrap> boot = Init();
  ASSERT_TRUE(boot.ok()) << boot.status();
  auto comm = CreateCommunicator(Backend::kMpi, *boot);
  ASSERT_TRUE(comm.ok()) << comm.status();
  EXPECT_EQ((*comm)->backend(), "mpi");
  EXPECT_EQ((*comm)->rank(), boot->rank);
  EXPECT_EQ((*comm)->size(), boot->world_size);
  // It works: the sum of ranks.
  int64_t x = boot->rank;
  (*comm)->AllReduce(&x, &x, 1, DType::kI64, ReduceOp::kSum);
  EXPECT_EQ(x, int64_t{boot->world_size} * (boot->world_size - 1) / 2);
}

TEST(BootstrapTest, NcclWithoutGpuIsAClearErrorOnEveryRank) {
  if (gpu::CudaAvailable()) GTEST_SKIP() << "a GPU is usable here; comm_nccl_test covers NCCL";
  StatusOr<Bootstrap> boot = Init();
  ASSERT_TRUE(boot.ok()) << boot.status();
  auto comm = CreateCommunicator(Backend::kNccl, *boot);
  ASSERT_FALSE(comm.ok());
  const std::string msg = comm.status().message();
  if (!LOOM_WITH_CUDA) {
    EXPECT_EQ(comm.status().code(), StatusCode::kUnimplemented) << comm.status();
    EXPECT_NE(msg.find("built without CUDA"), std::string::npos) << msg;
  } else {
    EXPECT_EQ(comm.status().code(), StatusCode::kUnavailable) << comm.status();
    EXPECT_NE(msg.find("no GPU"), std::string::npos) << msg;
  }
}

TEST(BootstrapTest, ParseBackend) {
  EXPECT_EQ(*ParseBackend("mpi"), Backend::kMpi);
  EXPECT_EQ(*ParseBackend("cpu"), Backend::kMpi);
  EXPECT_EQ(*ParseBackend("nccl"), Backend::kNccl);
  EXPECT_EQ(*ParseBackend("cuda"), Backend::kNccl);
  EXPECT_STREQ(BackendName(Backend::kNccl), "nccl");
  auto bad = ParseBackend("gloo");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("'gloo'"), std::string::npos);
}

TEST(BootstrapTest, AgreeOnStatusSharesTheFirstFailure) {
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  EXPECT_TRUE(AgreeOnStatus(Status::Ok(), MPI_COMM_WORLD).ok());
  // The last rank fails (and, at R >= 3, rank 1 too: the lowest failing rank is reported).
  const int first_bad = size >= 3 ? 1 : size - 1;
  const bool bad = rank == size - 1 || (size >= 3 && rank == 1);
  Status local =
      bad ? NotFoundError("shard file r" + std::to_string(rank) + ".bin missing") : Status::Ok();
  Status agreed = AgreeOnStatus(local, MPI_COMM_WORLD);
  ASSERT_FALSE(agreed.ok());
  if (bad) {
    EXPECT_EQ(agreed.code(), StatusCode::kNotFound);
    EXPECT_EQ(agreed.message(), local.message());
  } else {
    EXPECT_EQ(agreed.code(), StatusCode::kUnavailable);
    EXPECT_NE(agreed.message().find("rank " + std::to_string(first_bad) + " failed"),
              std::string::npos)
        << agreed;
    EXPECT_NE(agreed.message().find("shard file r" + std::to_string(first_bad) + ".bin missing"),
              std::string::npos)
        << agreed;
  }
}

}  // namespace
}  // namespace loom::comm
