// Non-lazy ("dense-semantics") Adam, update_mode UPDATE_DENSE (sparse_optimizer.h,
// StepUntouchedRows), at R = 1, 2, 4 ranks (loom_add_mpi_test):
//   - the kernels (UpdateRows on the touched rows, then StepUntouchedRows) against a plain dense
//     Adam loop written here: a dense gradient (zero rows outside the batch), every row stepped
//     at every step with one global step count; bit for bit, since the loop evaluates the
//     documented float expressions;
//   - the single-rank collection against a dense-gradient Adam reference in double (1e-6);
//   - every plan (TW, RW, CW, DP) at R ranks against the single-rank collection, bit for bit;
//   - the default (lazy) leaves untouched rows alone, and UPDATE_DENSE is refused for non-Adam.
#include "csrc/embedding/sparse_optimizer.h"

#include <cmath>
#include <map>

#include <gtest/gtest.h>
#include <mpi.h>

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

// L2 weight decay, decoupled weight decay, none.
const char* kDenseAdams[] = {
    "type: ADAM learning_rate: 0.01 update_mode: UPDATE_DENSE",
    "type: ADAM learning_rate: 0.02 weight_decay: 0.05 update_mode: UPDATE_DENSE",
    "type: ADAM learning_rate: 0.01 beta1: 0.8 weight_decay: 0.05 "
    "weight_decay_mode: WEIGHT_DECAY_DECOUPLED update_mode: UPDATE_DENSE",
};

OptimizerSpec ParseSpec(const char* text) {
  proto::EmbeddingConfig config = testing::TestConfig(text);
  auto spec = BuildEmbeddingSpec(config, 1);
  CHECK(spec.ok()) << spec.status();
  return spec->tables[0].optimizer;
}

// ---------------------------------------------------------------------------------------
// Kernels against a plain dense Adam loop.

TEST(DenseAdamKernel, MatchesPlainDenseAdamLoop) {
  constexpr int64_t kRows = 37;
  constexpr int kWidth = 12;
  constexpr int kRowBits = 6;
  constexpr int kKernelSteps = 7;
  for (const char* text : kDenseAdams) {
    const OptimizerSpec os = ParseSpec(text);
    ASSERT_TRUE(os.dense_update);
    const OptimizerParams p = MakeOptimizerParams(os, kWidth, false);
    ASSERT_EQ(p.dense_update, 1);
    // The kernels' shard.
    std::vector<float> w(kRows * kWidth), m(kRows * kWidth, 0.0f), v(kRows * kWidth, 0.0f);
    std::vector<int32_t> steps(kRows, 0);
    for (int64_t i = 0; i < kRows * kWidth; ++i) {
      w[i] = 0.2f * (static_cast<float>(testing::TestRandom(3, 0, i) % 2001) / 1000.0f - 1.0f);
    }
    // The plain loop's copy.
    std::vector<float> rw = w, rm = m, rv = v;
    ShardView s;
    s.weights = w.data();
    s.state0 = m.data();
    s.state1 = v.data();
    s.steps = steps.data();
    s.num_rows = kRows;
    s.width = kWidth;
    const float lr_scale = 0.75f;
    for (int step = 0; step < kKernelSteps; ++step) {
      // Touched rows: none at step 2, all at step 4, else a random ~third, ascending.
      std::vector<int64_t> touched;
      for (int64_t r = 0; r < kRows; ++r) {
        const bool t = step == 4 || (step != 2 && testing::TestRandom(5, step, r) % 3 == 0);
        if (t) touched.push_back(r);
      }
      const int64_t U = static_cast<int64_t>(touched.size());
      std::vector<uint64_t> keys(U);
      std::vector<int64_t> off(U);
      std::vector<float> g(U * kWidth);
      std::vector<float> dense_g(kRows * kWidth, 0.0f);  // the reference's dense gradient
      for (int64_t u = 0; u < U; ++u) {
        keys[u] = static_cast<uint64_t>(touched[u]);  // shard 0
        off[u] = u * kWidth;
        for (int c = 0; c < kWidth; ++c) {
          const float x =
              static_cast<float>(testing::TestRandom(11, step, u * kWidth + c) % 2001) / 1000.0f -
              1.0f;
          dense_g[touched[u] * kWidth + c] = x;
          // The sparse path's g arrives with the L2 term added by the reduction (ApplyL2).
          g[u * kWidth + c] = os.weight_decay != 0.0f && !os.decoupled_weight_decay
                                  ? x + os.weight_decay * w[touched[u] * kWidth + c]
                                  : x;
        }
      }
      UpdateArgs ua;
      ua.num_rows = U;
      ua.keys = keys.data();
      ua.row_bits = kRowBits;
      ua.shards = &s;
      ua.params = &p;
      ua.reduced_off = off.data();
      ua.reduced = g.data();
      ua.lr_scale = lr_scale;
      UpdateRows(ExecContext::Cpu(), ua);
      UntouchedArgs da;
      da.num_shards = 1;
      da.shards = &s;
      da.params = &p;
      da.num_touched = U;
      da.touched_keys = keys.data();
      da.row_bits = kRowBits;
      da.lr_scale = lr_scale;
      StepUntouchedRows(ExecContext::Cpu(), da);

      // Plain dense Adam (torch.optim.Adam on a dense gradient): every row, one step count t.
      const int t = step + 1;
      const float bc1 = static_cast<float>(1.0 - std::pow(static_cast<double>(os.beta1), t));
      const float bc2 = static_cast<float>(1.0 - std::pow(static_cast<double>(os.beta2), t));
      const float lr = os.lr * lr_scale;
      for (int64_t i = 0; i < kRows * kWidth; ++i) {
        const float w_old = rw[i];
        float gi = dense_g[i];
        if (!os.decoupled_weight_decay) gi = gi + os.weight_decay * w_old;
        rm[i] = os.beta1 * rm[i] + (1.0f - os.beta1) * gi;
        rv[i] = os.beta2 * rv[i] + (1.0f - os.beta2) * gi * gi;
        float nw = w_old - lr * (rm[i] / bc1) / (std::sqrt(rv[i] / bc2) + os.eps);
        if (os.decoupled_weight_decay) nw = nw - lr * os.weight_decay * w_old;
        rw[i] = nw;
      }
      const std::string what = std::string(text) + " step " + std::to_string(step);
      ASSERT_TRUE(BitEqual(w.data(), rw.data(), w.size(), what + " w"));
      ASSERT_TRUE(BitEqual(m.data(), rm.data(), m.size(), what + " m"));
      ASSERT_TRUE(BitEqual(v.data(), rv.data(), v.size(), what + " v"));
      for (int64_t r = 0; r < kRows; ++r) ASSERT_EQ(steps[r], t) << what << " row " << r;
    }
  }
}

// Lazy (the default): StepUntouchedRows leaves every row alone.
TEST(DenseAdamKernel, LazyDefaultLeavesUntouchedRows) {
  const OptimizerSpec os = ParseSpec("type: ADAM learning_rate: 0.01");
  ASSERT_FALSE(os.dense_update);
  const OptimizerParams p = MakeOptimizerParams(os, 4, false);
  ASSERT_EQ(p.dense_update, 0);
  std::vector<float> w = {1, 2, 3, 4, 5, 6, 7, 8}, m(8, 0.5f), v(8, 0.25f);
  const std::vector<float> w0 = w, m0 = m, v0 = v;
  std::vector<int32_t> steps = {3, 4};
  ShardView s;
  s.weights = w.data();
  s.state0 = m.data();
  s.state1 = v.data();
  s.steps = steps.data();
  s.num_rows = 2;
  s.width = 4;
  UntouchedArgs da;
  da.num_shards = 1;
  da.shards = &s;
  da.params = &p;
  StepUntouchedRows(ExecContext::Cpu(), da);
  EXPECT_TRUE(BitEqual(w.data(), w0.data(), 8, "w"));
  EXPECT_TRUE(BitEqual(m.data(), m0.data(), 8, "m"));
  EXPECT_TRUE(BitEqual(v.data(), v0.data(), 8, "v"));
  EXPECT_EQ(steps, (std::vector<int32_t>{3, 4}));
}

TEST(DenseAdamSpec, RefusedForNonAdam) {
  proto::EmbeddingConfig config =
      testing::TestConfig("type: ADAGRAD learning_rate: 0.01 update_mode: UPDATE_DENSE");
  auto spec = BuildEmbeddingSpec(config, 1);
  ASSERT_FALSE(spec.ok());
  EXPECT_NE(spec.status().ToString().find("optimizer.update_mode"), std::string::npos)
      << spec.status();
}

// ---------------------------------------------------------------------------------------
// The collection.

// Dense-gradient Adam over whole tables: the row gradients accumulated in canonical order
// (sample, feature, position) as PlainReference::Step does, zero for rows outside the batch,
// then every row updated with the global step count; the update in double.
class DenseAdamReference {
 public:
  explicit DenseAdamReference(const EmbeddingSpec& spec) : spec_(spec), plain_(spec) {
    for (size_t t = 0; t < spec.tables.size(); ++t) {
      w_.push_back(plain_.table(static_cast<int>(t)).w);
      m_.emplace_back(w_.back().size(), 0.0f);
      v_.emplace_back(w_.back().size(), 0.0f);
    }
  }

  void Step(const testing::GlobalBatch& gb, const testing::GlobalGrads& gg) {
    ++t_;
    std::vector<std::vector<float>> grad(spec_.tables.size());
    for (size_t t = 0; t < spec_.tables.size(); ++t) grad[t].assign(w_[t].size(), 0.0f);
    std::vector<int64_t> rows;
    std::vector<float> scales;
    for (int64_t b = 0; b < gb.samples; ++b) {
      for (size_t f = 0; f < spec_.features.size(); ++f) {
        const FeatureSpec& fs = spec_.features[f];
        const int D = spec_.tables[fs.table].dim;
        plain_.Bag(gb, static_cast<int>(f), b, &rows, &scales);
        const int64_t len = static_cast<int64_t>(rows.size());
        for (int64_t p = 0; p < len; ++p) {
          const float* go = fs.is_sequence()
                                ? gg.sequences[fs.sequence_index].data() +
                                      (b * fs.max_length + fs.max_length - len + p) * D
                                : gg.pooled.data() + b * spec_.pooled_width + fs.pooled_col;
          float* acc = grad[fs.table].data() + rows[p] * D;
          for (int c = 0; c < D; ++c) acc[c] = acc[c] + scales[p] * go[c];
        }
      }
    }
    for (size_t t = 0; t < spec_.tables.size(); ++t) {
      const OptimizerSpec& o = spec_.tables[t].optimizer;
      const double bc1 = 1.0 - std::pow(static_cast<double>(o.beta1), t_);
      const double bc2 = 1.0 - std::pow(static_cast<double>(o.beta2), t_);
      for (size_t i = 0; i < w_[t].size(); ++i) {
        const float w_old = w_[t][i];
        float g = grad[t][i];
        if (!o.decoupled_weight_decay) g += o.weight_decay * w_old;
        float& m = m_[t][i];
        float& v = v_[t][i];
        m = o.beta1 * m + (1.0f - o.beta1) * g;
        v = o.beta2 * v + (1.0f - o.beta2) * g * g;
        w_[t][i] -= static_cast<float>(o.lr * (m / bc1) / (std::sqrt(v / bc2) + o.eps));
        if (o.decoupled_weight_decay) w_[t][i] -= o.lr * o.weight_decay * w_old;
      }
    }
  }

  const std::vector<float>& w(int t) const { return w_[t]; }
  const std::vector<float>& m(int t) const { return m_[t]; }
  const std::vector<float>& v(int t) const { return v_[t]; }
  int steps() const { return t_; }

 private:
  EmbeddingSpec spec_;
  testing::PlainReference plain_;  // initial weights and bags
  std::vector<std::vector<float>> w_, m_, v_;
  int t_ = 0;
};

TEST(DenseAdamCollection, SingleRankMatchesDenseGradientAdam) {
  World& w = GetWorld();
  for (const char* opt : kDenseAdams) {
    const proto::EmbeddingConfig config = testing::TestConfig(opt);
    auto c = MakeCollection(config, w.self.get(), kGlobalBatch, nullptr);
    DenseAdamReference ref(c->spec());
    for (int step = 0; step < kSteps; ++step) {
      const testing::GlobalBatch gb = testing::MakeGlobalBatch(c->spec(), kGlobalBatch, step);
      testing::LocalBatch all = testing::SliceBatch(gb, 0, kGlobalBatch);
      c->Forward(all.batch);
      const testing::GlobalGrads gg = testing::MakeGlobalGrads(c->spec(), kGlobalBatch, step);
      testing::LocalGrads all_grads = testing::SliceGrads(c->spec(), gg, 0, kGlobalBatch);
      c->Backward(all_grads.grads);
      ref.Step(gb, gg);
    }
    for (size_t t = 0; t < c->spec().tables.size(); ++t) {
      const TableContents x = c->GatherTable(static_cast<int>(t));
      const std::string what = std::string(opt) + " table " + c->spec().tables[t].name;
      // abs 1e-7: the kernel rounds w to float at each step and every row moves by ~lr per
      // step, so a weight that crossed zero (|w0| <= 0.1, 5 steps of up to 0.02) carries the
      // rounding of |w| ~ 0.1 (ulp 7.5e-9, a few per step), not of its own small magnitude.
      EXPECT_TRUE(testing::AllClose(x.weights, ref.w(t), 1e-6, 1e-7, what + " weights"));
      EXPECT_TRUE(testing::AllClose(x.state0, ref.m(t), 1e-6, 1e-8, what + " m"));
      EXPECT_TRUE(testing::AllClose(x.state1, ref.v(t), 1e-6, 1e-12, what + " v"));
      // Every row stepped at every step: the per-row counts are the global step count.
      EXPECT_EQ(x.steps, std::vector<int32_t>(x.steps.size(), ref.steps())) << what;
    }
  }
}

// The plans of embedding_collection_test.cc (TW, RW, CW, DP) at world size R.
class DenseAdamSharding : public ::testing::TestWithParam<const char*> {};

TEST_P(DenseAdamSharding, BitIdenticalToSingleRank) {
  World& w = GetWorld();
  const int R = w.world->size(), rank = w.world->rank();
  const int64_t B = kGlobalBatch / R;
  for (const char* opt : kDenseAdams) {
    const proto::EmbeddingConfig config = testing::TestConfig(opt);
    auto spec = BuildEmbeddingSpec(config, R);
    ASSERT_TRUE(spec.ok()) << spec.status();
    const ShardingPlan plan = NamedPlan(*spec, GetParam(), R);
    auto sharded = MakeCollection(config, w.world.get(), B, &plan);
    auto reference = MakeCollection(config, w.self.get(), kGlobalBatch, nullptr);
    const std::string what = std::string(GetParam()) + " R=" + std::to_string(R) + " " + opt;
    for (int step = 0; step < kSteps; ++step) {
      const testing::GlobalBatch gb = testing::MakeGlobalBatch(*spec, kGlobalBatch, step);
      testing::LocalBatch mine = testing::SliceBatch(gb, rank * B, B);
      testing::LocalBatch all = testing::SliceBatch(gb, 0, kGlobalBatch);
      sharded->Forward(mine.batch);
      reference->Forward(all.batch);
      const testing::GlobalGrads gg = testing::MakeGlobalGrads(*spec, kGlobalBatch, step);
      testing::LocalGrads my_grads = testing::SliceGrads(*spec, gg, rank * B, B);
      testing::LocalGrads all_grads = testing::SliceGrads(*spec, gg, 0, kGlobalBatch);
      sharded->Backward(my_grads.grads);
      reference->Backward(all_grads.grads);
    }
    ExpectSameTables(sharded.get(), reference.get(), what);
    for (size_t t = 0; t < spec->tables.size(); ++t) {
      const TableContents x = sharded->GatherTable(static_cast<int>(t));
      EXPECT_EQ(x.steps, std::vector<int32_t>(x.steps.size(), kSteps))
          << what << " table " << spec->tables[t].name;
    }
    if (::testing::Test::HasFailure()) return;
  }
}

INSTANTIATE_TEST_SUITE_P(Plans, DenseAdamSharding, ::testing::Values("TW", "RW", "CW", "DP"),
                         [](const ::testing::TestParamInfo<const char*>& p) {
                           return std::string(p.param);
                         });

}  // namespace
}  // namespace loom::embedding
