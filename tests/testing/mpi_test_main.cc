// gtest main for tests run under mpirun (loom_add_mpi_test). Every rank runs every test; only
// rank 0 prints gtest's progress, other ranks print their failures. The exit code is the same
// on every rank: non-zero if any rank failed, so ctest sees one verdict.
#include <gtest/gtest.h>
#include <mpi.h>

#include "csrc/core/logging.h"

namespace {

// Prints only failed assertions (with the rank) on ranks other than 0.
class RankFailurePrinter : public testing::EmptyTestEventListener {
 public:
  explicit RankFailurePrinter(int rank) : rank_(rank) {}
  void OnTestPartResult(const testing::TestPartResult& r) override {
    if (r.failed()) {
      fprintf(stderr, "[rank %d] %s:%d: Failure\n%s\n", rank_, r.file_name() ? r.file_name() : "?",
              r.line_number(), r.summary());
    }
  }

 private:
  int rank_;
};

}  // namespace

int main(int argc, char** argv) {
  testing::InitGoogleTest(&argc, argv);
  MPI_Init(&argc, &argv);
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  loom::InitLogging(argv[0]);
  loom::SetLogRank(rank, size);
  if (rank != 0) {
    testing::TestEventListeners& listeners = testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new RankFailurePrinter(rank));
  }
  int failed = RUN_ALL_TESTS() != 0 ? 1 : 0;
  int any_failed = 0;
  MPI_Allreduce(&failed, &any_failed, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  if (rank == 0 && any_failed && !failed) fprintf(stderr, "a test failed on another rank\n");
  MPI_Finalize();
  return any_failed;
}
