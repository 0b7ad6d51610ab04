// World-size equivalence of the trainer (csrc/train/trainer.h), run at 2 ranks: rank 0 first
// trains alone (a 1-rank job on MPI_COMM_SELF), then both ranks train the same config as a
// 2-rank job; both read the training data as the same 2 data slices, so every step sees the
// same global batch. The per-step global losses agree within 1e-5 relative over 50 steps.
#include <cmath>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <mpi.h>

#include "csrc/comm/mpi_communicator.h"
#include "csrc/train/trainer.h"
#include "tests/train/train_test_util.h"

namespace loom::train {
namespace {

using testing::GenerateTinyData;
using testing::SharedTempDir;
using testing::TinyConfig;

// World-size equivalence: the same config and global batch, read as the same 2 data slices,
// on 1 rank and on 2 ranks. Bit-exact: every sample's forward values and the embedding updates
// (given the same gradients); rounded differently: the dense gradient sums over the batch (one
// sum of 2B rows vs two sums of B rows added). The losses agree within 1e-5 relative.
TEST(WorldSizeTest, OneAndTwoRanksGiveTheSameLosses) {
  auto world = comm::MpiCommunicator::Create(MPI_COMM_WORLD);
  LOOM_CHECK_OK(world.status());
  comm::Communicator* comm_ = world->get();
  ASSERT_EQ(comm_->size(), 2) << "run with 2 ranks";
  const std::string root = SharedTempDir(*comm_, "loom-world-size-test");
  const std::string data_ = root + "/data";
  GenerateTinyData(*comm_, data_, 4000);
  auto Dir = [&](const std::string& name) { return root + "/" + name; };
  constexpr int kSteps = 50;
  auto trajectory = [&](comm::Communicator* comm, const std::string& run) {
    proto::LoomConfig c = TinyConfig(data_, run);
    c.mutable_train()->set_max_steps(kSteps);
    TrainerOptions o;
    o.data_slices = 2;
    o.write_run_files = false;
    auto t = Trainer::Create(c, comm, o);
    LOOM_CHECK_OK(t.status());
    std::vector<double> losses;
    for (int i = 0; i < kSteps; ++i) {
      CHECK((*t)->Step());
      losses.push_back((*t)->TakeMeanLoss());
    }
    return losses;
  };
  std::vector<double> one;
  if (comm_->rank() == 0) {
    auto self = comm::MpiCommunicator::Create(MPI_COMM_SELF);
    LOOM_CHECK_OK(self.status());
    one = trajectory(self->get(), Dir("ws1"));
  }
  comm_->Barrier();
  const std::vector<double> two = trajectory(comm_, Dir("ws2"));
  if (comm_->rank() == 0 && one.size() == two.size()) {
    double worst = 0;
    for (int i = 0; i < kSteps; ++i) {
      const double rel = std::fabs(one[i] - two[i]) / std::fabs(one[i]);
      worst = std::max(worst, rel);
      EXPECT_LE(rel, 1e-5) << "step " << i + 1 << ": 1 rank " << one[i] << ", 2 ranks " << two[i];
    }
    // The first step sees identical weights: only the loss's own sum is rounded differently.
    EXPECT_LE(std::fabs(one[0] - two[0]) / one[0], 1e-6);
    RecordProperty("worst_relative_difference", std::to_string(worst));
    std::printf("world-size equivalence: worst relative loss difference over %d steps: %.3g\n",
                kSteps, worst);
  }
  if (comm_->rank() == 0) {
    EXPECT_EQ(one.size(), two.size());
  }
  testing::RemoveTree(*comm_, root);
}

}  // namespace
}  // namespace loom::train
