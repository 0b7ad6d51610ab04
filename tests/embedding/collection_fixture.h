// Fixtures of the embedding collection's MPI tests (embedding_collection_test,
// sparse_optimizer_test): the communicators, the named sharding plans, a collection factory and
// the bit-for-bit comparison of two collections' tables and optimizer state.
//
// World: the whole job (MPI_COMM_WORLD) and this rank alone (MPI_COMM_SELF, for the single-rank
// reference), created once per process after tests/testing/mpi_test_main.cc has initialized
// MPI, and never destroyed (MPI_Finalize runs after the tests).
#ifndef LOOM_TESTS_EMBEDDING_COLLECTION_FIXTURE_H_
#define LOOM_TESTS_EMBEDDING_COLLECTION_FIXTURE_H_

#include <algorithm>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <mpi.h>

#include "csrc/comm/mpi_communicator.h"
#include "csrc/embedding/embedding_collection.h"
#include "tests/embedding/embedding_test_util.h"

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

// Global batch and steps of the equivalence tests (the global batch splits evenly at R = 1, 2,
// 4).
constexpr int64_t kGlobalBatch = 8;
constexpr int kSteps = 5;

// The plans TW, RW, CW, DP and "mixed" (users RW, items CW, cats DP, tags TW, query RW over
// a subset of the ranks) for the test config of embedding_test_util.h at world size R.
inline ShardingPlan NamedPlan(const EmbeddingSpec& spec, const std::string& name, int R) {
  ShardingPlan plan;
  plan.tables.resize(spec.tables.size());
  std::vector<int> all(R);
  for (int r = 0; r < R; ++r) all[r] = r;
  for (size_t t = 0; t < spec.tables.size(); ++t) {
    TablePlan& tp = plan.tables[t];
    const int blocks = (spec.tables[t].dim + 3) / 4;
    if (name == "TW") {
      tp.strategy = Strategy::kTableWise;
      tp.ranks = {static_cast<int>((t + 1) % R)};
    } else if (name == "RW") {
      tp.strategy = Strategy::kRowWise;
      tp.ranks = all;
    } else if (name == "CW") {
      tp.strategy = Strategy::kColumnWise;
      const int k = std::min(R, blocks);
      for (int j = 0; j < k; ++j) tp.ranks.push_back((R - 1 - j + static_cast<int>(t)) % R);
    } else if (name == "DP") {
      tp.strategy = Strategy::kDataParallel;
    } else {  // mixed: users RW, items CW, cats DP, tags TW, query RW over a subset
      switch (t) {
        case 0:
          tp.strategy = Strategy::kRowWise;
          tp.ranks = all;
          break;
        case 1:
          tp.strategy = Strategy::kColumnWise;
          for (int j = 0; j < std::min(R, blocks); ++j) tp.ranks.push_back(j);
          break;
        case 2:
          tp.strategy = Strategy::kDataParallel;
          break;
        case 3:
          tp.strategy = Strategy::kTableWise;
          tp.ranks = {R - 1};
          break;
        default:
          tp.strategy = Strategy::kRowWise;
          tp.ranks = R > 2 ? std::vector<int>{2, 0} : all;
          break;
      }
    }
  }
  return plan;
}

inline std::unique_ptr<EmbeddingCollection> MakeCollection(const proto::EmbeddingConfig& config,
                                                           comm::Communicator* comm, int64_t batch,
                                                           const ShardingPlan* plan) {
  CollectionOptions o;
  o.batch_size = batch;
  o.log_plan = false;
  o.plan = plan;
  auto c = EmbeddingCollection::Create(config, comm, o);
  CHECK(c.ok()) << c.status();
  return std::move(c).value();
}

inline void ExpectSameTables(EmbeddingCollection* a, EmbeddingCollection* b,
                             const std::string& what) {
  for (size_t t = 0; t < a->spec().tables.size(); ++t) {
    const TableContents x = a->GatherTable(static_cast<int>(t));
    const TableContents y = b->GatherTable(static_cast<int>(t));
    const std::string w = what + " table " + a->spec().tables[t].name;
    ASSERT_EQ(x.weights.size(), y.weights.size());
    EXPECT_TRUE(BitEqual(x.weights.data(), y.weights.data(), x.weights.size(), w + " weights"));
    ASSERT_EQ(x.state0.size(), y.state0.size());
    EXPECT_TRUE(BitEqual(x.state0.data(), y.state0.data(), x.state0.size(), w + " state0"));
    ASSERT_EQ(x.state1.size(), y.state1.size());
    EXPECT_TRUE(BitEqual(x.state1.data(), y.state1.data(), x.state1.size(), w + " state1"));
    ASSERT_EQ(x.steps.size(), y.steps.size());
    EXPECT_TRUE(BitEqual(x.steps.data(), y.steps.data(), x.steps.size(), w + " steps"));
  }
}

}  // namespace loom::embedding::testing

#endif  // LOOM_TESTS_EMBEDDING_COLLECTION_FIXTURE_H_
