// The layer-wise overlap of the dense gradient all-reduce with the dense backward
// (csrc/train/trainer.h, step 4): with small all-reduce buckets, chunks are marked ready from
// inside the dense backward as modules finish (ranges crossing chunk boundaries, many chunks
// per module and modules per chunk); with one big bucket, the only chunk is marked by the
// last reported range. The reduced gradients do not depend on when chunks are marked, so both
// runs give bit-identical losses and dense weights, for both model types.
#include <cstring>
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

struct Trajectory {
  std::vector<double> losses;
  std::vector<float> weights;  // the dense parameters after the last step
  int64_t parameters = 0;
};

TEST(GradOverlapTest, SmallAndLargeBucketsGiveIdenticalBits) {
  auto world = comm::MpiCommunicator::Create(MPI_COMM_WORLD);
  LOOM_CHECK_OK(world.status());
  comm::Communicator* comm = world->get();
  const std::string root = SharedTempDir(*comm, "loom-grad-overlap-test");
  const std::string data = root + "/data";
  GenerateTinyData(*comm, data, 2000);
  constexpr int kSteps = 8;
  for (const char* type : {kModelInterFormer, kModelDlrmBaseline}) {
    SCOPED_TRACE(type);
    auto run = [&](int64_t bucket_bytes, const std::string& name) {
      proto::LoomConfig c = TinyConfig(data, root + "/" + name + "-" + type);
      LOOM_CHECK_OK(SetModelType(type, c.mutable_model()));
      c.mutable_train()->set_max_steps(kSteps);
      TrainerOptions o;
      o.grad_bucket_bytes = bucket_bytes;
      o.write_run_files = false;
      auto t = Trainer::Create(c, comm, o);
      LOOM_CHECK_OK(t.status());
      Trajectory tr;
      for (int i = 0; i < kSteps; ++i) {
        CHECK((*t)->Step());
        tr.losses.push_back((*t)->TakeMeanLoss());
      }
      const model::ParameterStore& p = (*t)->model().parameters();
      tr.parameters = p.total_elements();
      const float* v = p.values().data<float>();
      tr.weights.assign(v, v + p.total_elements());
      return tr;
    };
    // 1 KiB buckets: 256-element chunks, far smaller than most modules.
    const Trajectory small = run(1024, "small");
    const Trajectory large = run(64 << 20, "large");
    ASSERT_GT(small.parameters, 4 * 256) << "the model must span many small chunks";
    ASSERT_EQ(small.weights.size(), large.weights.size());
    EXPECT_EQ(small.losses, large.losses);
    EXPECT_EQ(std::memcmp(small.weights.data(), large.weights.data(),
                          small.weights.size() * sizeof(float)),
              0);
  }
  testing::RemoveTree(*comm, root);
}

}  // namespace
}  // namespace loom::train
