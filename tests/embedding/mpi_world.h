// The communicators of the embedding MPI tests: the whole job (MPI_COMM_WORLD) and this rank
// alone (MPI_COMM_SELF, for the single-rank reference), created once per process after
// tests/testing/mpi_test_main.cc has initialized MPI, and never destroyed (MPI_Finalize runs
// after the tests).
#ifndef LOOM_TESTS_EMBEDDING_MPI_WORLD_H_
#define LOOM_TESTS_EMBEDDING_MPI_WORLD_H_

#include <memory>
#include <utility>

#include <mpi.h>

#include "csrc/comm/mpi_communicator.h"

namespace loom::embedding::testing {

struct World {
  std::unique_ptr<comm::MpiCommunicator> world, self;
  World() {
    world = std::move(comm::MpiCommunicator::Create(MPI_COMM_WORLD)).value();
    self = std::move(comm::MpiCommunicator::Create(MPI_COMM_SELF)).value();
  }
};

inline World& GetWorld() {
  static World* w = new World();
  return *w;
}

}  // namespace loom::embedding::testing

#endif  // LOOM_TESTS_EMBEDDING_MPI_WORLD_H_
