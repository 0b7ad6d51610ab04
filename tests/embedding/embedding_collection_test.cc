// The sharded collection at R = 1, 2, 4 ranks (loom_add_mpi_test): every plan (TW, RW, CW, DP
// and a mixed one) against an unsharded single-rank collection on the same global batch, bit
// for bit, for every optimizer; the single-rank collection against the plain reference of
// embedding_test_util.h; same seed -> same bits; OpenMP threads per rank -> same bits.
#include <gtest/gtest.h>
#include <mpi.h>
#include <omp.h>

#include "csrc/comm/mpi_communicator.h"
#include "tests/embedding/collection_fixture.h"
#include "tests/embedding/embedding_test_util.h"

namespace loom::embedding {
namespace {

using testing::BitEqual;
using testing::ExpectSameTables;
using testing::GetWorld;
using testing::kGlobalBatch;
using testing::kSteps;
using testing::MakeCollection;
using testing::NamedPlan;
using testing::World;

class ShardingEquivalence : public ::testing::TestWithParam<const char*> {};

// Each plan x each optimizer: R ranks with B = G / R samples each against one rank with all G.
TEST_P(ShardingEquivalence, BitIdenticalToSingleRank) {
  World& w = GetWorld();
  const int R = w.world->size(), rank = w.world->rank();
  const int64_t B = kGlobalBatch / R;
  for (const char* opt : testing::kOptimizers) {
    const proto::EmbeddingConfig config = testing::TestConfig(opt);
    auto spec = BuildEmbeddingSpec(config, R);
    ASSERT_TRUE(spec.ok()) << spec.status();
    const ShardingPlan plan = NamedPlan(*spec, GetParam(), R);
    auto sharded = MakeCollection(config, w.world.get(), B, &plan);
    auto reference = MakeCollection(config, w.self.get(), kGlobalBatch, nullptr);
    const std::string what = std::string(GetParam()) + " R=" + std::to_string(R) + " " + opt;
    ExpectSameTables(sharded.get(), reference.get(), what + " (init)");
    for (int step = 0; step < kSteps; ++step) {
      const testing::GlobalBatch gb = testing::MakeGlobalBatch(*spec, kGlobalBatch, step);
      testing::LocalBatch mine = testing::SliceBatch(gb, rank * B, B);
      testing::LocalBatch all = testing::SliceBatch(gb, 0, kGlobalBatch);
      const EmbeddingOutputs& out = sharded->Forward(mine.batch);
      const EmbeddingOutputs& ref = reference->Forward(all.batch);
      const int64_t pw = spec->pooled_width;
      ASSERT_EQ(out.pooled.numel(), B * pw);
      EXPECT_TRUE(BitEqual(out.pooled.data<float>(), ref.pooled.data<float>() + rank * B * pw,
                           B * pw, what + " pooled step " + std::to_string(step)));
      ASSERT_EQ(out.sequences.size(), ref.sequences.size());
      for (size_t s = 0; s < out.sequences.size(); ++s) {
        const int64_t per = out.sequences[s].numel() / B;
        EXPECT_TRUE(BitEqual(out.sequences[s].data<float>(),
                             ref.sequences[s].data<float>() + rank * B * per, B * per,
                             what + " sequence " + std::to_string(s)));
        const int64_t T = out.masks[s].dim(1);
        EXPECT_TRUE(BitEqual(out.masks[s].data<float>(), ref.masks[s].data<float>() + rank * B * T,
                             B * T, what + " mask"));
      }
      const testing::GlobalGrads gg = testing::MakeGlobalGrads(*spec, kGlobalBatch, step);
      testing::LocalGrads my_grads = testing::SliceGrads(*spec, gg, rank * B, B);
      testing::LocalGrads all_grads = testing::SliceGrads(*spec, gg, 0, kGlobalBatch);
      sharded->Backward(my_grads.grads);
      reference->Backward(all_grads.grads);
    }
    ExpectSameTables(sharded.get(), reference.get(), what + " after 5 steps");
    if (::testing::Test::HasFailure()) return;
  }
}

INSTANTIATE_TEST_SUITE_P(Plans, ShardingEquivalence,
                         ::testing::Values("TW", "RW", "CW", "DP", "mixed"),
                         [](const ::testing::TestParamInfo<const char*>& p) {
                           return std::string(p.param);
                         });

// OpenMP threads split bags, items and rows among themselves while every row still sums its
// contributions in canonical order: three threads per rank (an uneven split) give the bits of
// one, for every optimizer.
TEST(EmbeddingCollection, ThreadsPerRankDoNotChangeBits) {
  World& w = GetWorld();
  const int R = w.world->size(), rank = w.world->rank();
  const int64_t B = kGlobalBatch / R;
  const int threads_before = omp_get_max_threads();
  constexpr int kThreads = 3;
  for (const char* opt : testing::kOptimizers) {
    const proto::EmbeddingConfig config = testing::TestConfig(opt);
    auto spec = BuildEmbeddingSpec(config, R);
    ASSERT_TRUE(spec.ok()) << spec.status();
    const ShardingPlan plan = NamedPlan(*spec, "mixed", R);
    omp_set_num_threads(kThreads);  // the workspace is sized for the threads at creation
    auto threaded = MakeCollection(config, w.world.get(), B, &plan);
    omp_set_num_threads(1);
    auto single = MakeCollection(config, w.world.get(), B, &plan);
    const std::string what = "R=" + std::to_string(R) + " " + opt;
    for (int step = 0; step < kSteps; ++step) {
      const testing::GlobalBatch gb = testing::MakeGlobalBatch(*spec, kGlobalBatch, step);
      testing::LocalBatch mine = testing::SliceBatch(gb, rank * B, B);
      omp_set_num_threads(kThreads);
      const EmbeddingOutputs& x = threaded->Forward(mine.batch);
      omp_set_num_threads(1);
      const EmbeddingOutputs& y = single->Forward(mine.batch);
      EXPECT_TRUE(BitEqual(x.pooled.data<float>(), y.pooled.data<float>(), x.pooled.numel(),
                           what + " pooled step " + std::to_string(step)));
      for (size_t s = 0; s < x.sequences.size(); ++s) {
        EXPECT_TRUE(BitEqual(x.sequences[s].data<float>(), y.sequences[s].data<float>(),
                             x.sequences[s].numel(), what + " sequence " + std::to_string(s)));
      }
      const testing::GlobalGrads gg = testing::MakeGlobalGrads(*spec, kGlobalBatch, step);
      testing::LocalGrads my_grads = testing::SliceGrads(*spec, gg, rank * B, B);
      omp_set_num_threads(kThreads);
      threaded->Backward(my_grads.grads);
      omp_set_num_threads(1);
      single->Backward(my_grads.grads);
    }
    omp_set_num_threads(threads_before);
    ExpectSameTables(threaded.get(), single.get(), what + " after 5 steps");
    if (::testing::Test::HasFailure()) return;
  }
}

// The automatic plan too (small tables replicated, the rest placed by the planner).
TEST(EmbeddingCollection, AutomaticPlanMatchesSingleRank) {
  World& w = GetWorld();
  const int R = w.world->size(), rank = w.world->rank();
  const int64_t B = kGlobalBatch / R;
  proto::EmbeddingConfig config = testing::TestConfig(testing::kOptimizers[1]);
  config.set_data_parallel_max_bytes(4000);  // replicates "cats" (40 x 8 x 8 bytes)
  auto sharded = MakeCollection(config, w.world.get(), B, nullptr);
  auto reference = MakeCollection(config, w.self.get(), kGlobalBatch, nullptr);
  EXPECT_EQ(sharded->plan().tables[2].strategy, Strategy::kDataParallel);
  for (int step = 0; step < 3; ++step) {
    const testing::GlobalBatch gb = testing::MakeGlobalBatch(sharded->spec(), kGlobalBatch, step);
    testing::LocalBatch mine = testing::SliceBatch(gb, rank * B, B);
    testing::LocalBatch all = testing::SliceBatch(gb, 0, kGlobalBatch);
    sharded->Forward(mine.batch);
    reference->Forward(all.batch);
    const testing::GlobalGrads gg = testing::MakeGlobalGrads(sharded->spec(), kGlobalBatch, step);
    testing::LocalGrads my_grads = testing::SliceGrads(sharded->spec(), gg, rank * B, B);
    testing::LocalGrads all_grads = testing::SliceGrads(sharded->spec(), gg, 0, kGlobalBatch);
    sharded->Backward(my_grads.grads, 0.5f);
    reference->Backward(all_grads.grads, 0.5f);
  }
  ExpectSameTables(sharded.get(), reference.get(), "auto");
}

// The single-rank collection against the plain reference: forward bit for bit (same
// summation order by construction), tables and state after 5 steps within 1e-6 relative
// (the plain reference sums row-wise Adagrad squares in double and runs Adam's update in
// double, so it is an independent oracle, not a copy of the kernel).
TEST(EmbeddingCollection, SingleRankMatchesPlainReference) {
  World& w = GetWorld();
  for (const char* opt : testing::kOptimizers) {
    const proto::EmbeddingConfig config = testing::TestConfig(opt);
    auto c = MakeCollection(config, w.self.get(), kGlobalBatch, nullptr);
    testing::PlainReference ref(c->spec());
    for (int step = 0; step < kSteps; ++step) {
      const testing::GlobalBatch gb = testing::MakeGlobalBatch(c->spec(), kGlobalBatch, step);
      testing::LocalBatch all = testing::SliceBatch(gb, 0, kGlobalBatch);
      const EmbeddingOutputs& out = c->Forward(all.batch);
      std::vector<float> pooled;
      std::vector<std::vector<float>> seqs, masks;
      ref.Forward(gb, &pooled, &seqs, &masks);
      const std::string what = std::string(opt) + " step " + std::to_string(step);
      // Bit for bit while the tables are: at step 0, and for SGD and Adagrad (whose plain
      // update is the same float expression); else within the table tolerance.
      const bool exact =
          step == 0 || opt == testing::kOptimizers[0] || opt == testing::kOptimizers[1];
      auto check = [&](const float* a, const std::vector<float>& b, const std::string& name) {
        if (exact) {
          EXPECT_TRUE(BitEqual(a, b.data(), b.size(), what + " " + name));
        } else {
          // abs: pooled outputs sum up to 5 rows of magnitude <= 0.1, so a 1e-6 relative
          // difference of the rows can show as ~1e-7 absolute after cancellation.
          EXPECT_TRUE(testing::AllClose(std::vector<float>(a, a + b.size()), b, 1e-6, 1e-7,
                                        what + " " + name));
        }
      };
      check(out.pooled.data<float>(), pooled, "pooled");
      for (size_t s = 0; s < seqs.size(); ++s) {
        check(out.sequences[s].data<float>(), seqs[s], "sequence");
        EXPECT_TRUE(
            BitEqual(out.masks[s].data<float>(), masks[s].data(), masks[s].size(), what + " mask"));
      }
      const testing::GlobalGrads gg = testing::MakeGlobalGrads(c->spec(), kGlobalBatch, step);
      testing::LocalGrads all_grads = testing::SliceGrads(c->spec(), gg, 0, kGlobalBatch);
      c->Backward(all_grads.grads);
      ref.Step(gb, gg);
    }
    for (size_t t = 0; t < c->spec().tables.size(); ++t) {
      const TableContents x = c->GatherTable(static_cast<int>(t));
      const testing::PlainTable& y = ref.table(static_cast<int>(t));
      const std::string what = std::string(opt) + " table " + c->spec().tables[t].name;
      EXPECT_TRUE(testing::AllClose(x.weights, y.w, 1e-6, 1e-8, what + " weights"));
      EXPECT_TRUE(testing::AllClose(x.state0, y.s0, 1e-6, 1e-8, what + " state0"));
      EXPECT_TRUE(testing::AllClose(x.state1, y.s1, 1e-6, 1e-12, what + " state1"));
      EXPECT_EQ(x.steps, y.steps) << what;
    }
  }
}

TEST(EmbeddingCollection, SameSeedSameBitsOtherSeedOtherBits) {
  World& w = GetWorld();
  const int R = w.world->size(), rank = w.world->rank();
  const int64_t B = kGlobalBatch / R;
  auto run = [&](uint64_t seed) {
    const proto::EmbeddingConfig config = testing::TestConfig(testing::kOptimizers[3], seed);
    auto c = MakeCollection(config, w.world.get(), B, nullptr);
    for (int step = 0; step < 3; ++step) {
      const testing::GlobalBatch gb = testing::MakeGlobalBatch(c->spec(), kGlobalBatch, step);
      testing::LocalBatch mine = testing::SliceBatch(gb, rank * B, B);
      c->Forward(mine.batch);
      const testing::GlobalGrads gg = testing::MakeGlobalGrads(c->spec(), kGlobalBatch, step);
      testing::LocalGrads g = testing::SliceGrads(c->spec(), gg, rank * B, B);
      c->Backward(g.grads);
    }
    std::vector<float> all;
    for (size_t t = 0; t < c->spec().tables.size(); ++t) {
      const TableContents x = c->GatherTable(static_cast<int>(t));
      all.insert(all.end(), x.weights.begin(), x.weights.end());
      all.insert(all.end(), x.state0.begin(), x.state0.end());
    }
    return all;
  };
  const std::vector<float> a = run(5), b = run(5), c = run(6);
  ASSERT_EQ(a.size(), b.size());
  EXPECT_TRUE(BitEqual(a.data(), b.data(), a.size(), "same seed"));
  EXPECT_NE(0, std::memcmp(a.data(), c.data(), a.size() * sizeof(float)));
}

TEST(EmbeddingCollection, AllocatesExactlyThePlannedBytes) {
  World& w = GetWorld();
  const proto::EmbeddingConfig config = testing::TestConfig(testing::kOptimizers[3]);
  auto spec = BuildEmbeddingSpec(config, w.world->size());
  ASSERT_TRUE(spec.ok());
  for (const char* name : {"TW", "RW", "CW", "DP", "mixed"}) {
    const ShardingPlan plan = NamedPlan(*spec, name, w.world->size());
    auto c = MakeCollection(config, w.world.get(), 4, &plan);
    EXPECT_EQ(c->allocated_bytes(), c->plan().memory[w.world->rank()].total()) << name;
    EXPECT_GT(c->plan().memory[w.world->rank()].comm, 0) << name;
  }
}

}  // namespace
}  // namespace loom::embedding
