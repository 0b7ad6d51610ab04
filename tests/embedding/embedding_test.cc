// Single-process tests of csrc/embedding: config validation, the planner and its memory
// accounting, each stage kernel against a plain oracle, each stage of the collection run
// alone, and bad input.
#include <algorithm>
#include <cstdint>
#include <numeric>
#include <random>
#include <string>

#include <gtest/gtest.h>
#include <omp.h>

#include "csrc/embedding/embedding_kernels.h"
#include "csrc/embedding/sparse_optimizer.h"
#include "tests/embedding/embedding_test_util.h"

namespace loom::embedding {
namespace {

using testing::LocalCommunicator;

proto::EmbeddingConfig Parse(const std::string& text) {
  proto::EmbeddingConfig c;
  CHECK(google::protobuf::TextFormat::ParseFromString(text, &c)) << text;
  return c;
}

// ---- Config validation ------------------------------------------------------------------

TEST(EmbeddingSpec, NamesTheFieldAtFault) {
  struct Case {
    const char* text;
    const char* message;
  } cases[] = {
      {R"pb(tables { name: "t" num_rows: 10 dim: 4 }
            features { name: "f" table: "u" })pb",
       "EmbeddingConfig.features[0] (f).table: no table named 'u'"},
      {R"pb(tables { name: "t" num_rows: 0 dim: 4 }
            features { name: "f" table: "t" })pb",
       "EmbeddingConfig.tables[0] (t).num_rows: 0 is outside [1, 2^40)"},
      {R"pb(tables { name: "t" num_rows: 10 dim: 4 }
            features { name: "f" table: "t" kind: MULTI_HOT })pb",
       "EmbeddingConfig.features[0] (f).max_ids_per_sample: 0 is outside [1, 65536]"},
      {R"pb(tables { name: "t" num_rows: 10 dim: 4 }
            features { name: "f" table: "t" kind: SEQUENCE })pb",
       "EmbeddingConfig.features[0] (f).max_length: 0 is outside [1, 65536]"},
      {R"pb(tables {
              name: "t"
              num_rows: 10
              dim: 4
              optimizer { learning_rate: -1 }
            }
            features { name: "f" table: "t" })pb",
       "EmbeddingConfig.tables[0] (t).optimizer.learning_rate"},
      {R"pb(tables { name: "t" num_rows: 10 dim: 4 }
            tables { name: "u" num_rows: 1 dim: 1 }
            features { name: "f" table: "t" })pb",
       "EmbeddingConfig.tables[1] (u).name: no feature looks this table up"},
      {R"pb(tables { name: "t" num_rows: 10 dim: 4 }
            features { name: "f" table: "t" }
            sharding_overrides { table: "t" strategy: TABLE_WISE ranks: 5 })pb",
       "EmbeddingConfig.sharding_overrides[0] (t).ranks: rank 5 is outside [0, 2)"},
      {R"pb(tables { name: "t" num_rows: 10 dim: 4 }
            features { name: "f" table: "t" }
            sharding_overrides { table: "t" strategy: COLUMN_WISE ranks: 0 ranks: 1 })pb",
       "2 column slices of D = 4"},
  };
  for (const Case& c : cases) {
    auto spec = BuildEmbeddingSpec(Parse(c.text), 2);
    ASSERT_FALSE(spec.ok()) << c.text;
    EXPECT_NE(spec.status().message().find(c.message), std::string::npos)
        << spec.status() << "\nexpected: " << c.message;
  }
  auto bf16 = BuildEmbeddingSpec(
      Parse(R"pb(tables { name: "t" num_rows: 10 dim: 4 storage_type: STORAGE_BF16 }
                 features { name: "f" table: "t" })pb"),
      1);
  EXPECT_EQ(bf16.status().code(), StatusCode::kUnimplemented);
}

TEST(EmbeddingSpec, PooledLayoutFollowsConfigOrder) {
  auto spec = BuildEmbeddingSpec(testing::TestConfig("type: SGD"), 1);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->num_pooled, 5);
  EXPECT_EQ(spec->num_sequence, 2);
  EXPECT_EQ(spec->pooled_width, 8 + 16 + 8 + 12 + 8);
  EXPECT_EQ(spec->features[3].pooled_col, 24);  // cat_bag after user_id (8) and item_id (16)
  EXPECT_EQ(spec->tables[1].features, (std::vector<int>{1, 2}));  // items is shared
}

// ---- Id mapping ---------------------------------------------------------------------------

TEST(IdMap, ModuloHashDirect) {
  EXPECT_EQ(MapId(17, 0, 10, 0), 7);
  EXPECT_EQ(MapId(-1, 0, 10, 0), static_cast<int64_t>(~uint64_t{0} % 10));
  EXPECT_EQ(MapId(5, 2, 10, 0), 5);
  EXPECT_EQ(MapId(10, 2, 10, 0), -1);
  EXPECT_EQ(MapId(-3, 2, 10, 0), -1);
  EXPECT_EQ(MapId(123, 1, 1000, 9), static_cast<int64_t>(Hash64(123, 9) % 1000));
  EXPECT_NE(Hash64(123, 9), Hash64(123, 10));
  // Hash rows are spread: 10000 consecutive ids hit most of 1000 rows.
  std::vector<int> hit(1000, 0);
  for (int i = 0; i < 10000; ++i) hit[MapId(i, 1, 1000, 3)] = 1;
  EXPECT_GT(std::accumulate(hit.begin(), hit.end(), 0), 990);
}

// ---- Planner --------------------------------------------------------------------------------

TEST(Planner, HonoursOverridesReplicatesSmallTablesAndPrints) {
  proto::EmbeddingConfig config = testing::TestConfig("type: ADAGRAD");
  config.set_data_parallel_max_bytes(3000);  // cats: 40 x 8 x (4 + 4) = 2560 bytes
  auto* o = config.add_sharding_overrides();
  o->set_table("items");
  o->set_strategy(proto::ShardingOverride::COLUMN_WISE);
  o->add_ranks(3);
  o->add_ranks(1);
  auto spec = BuildEmbeddingSpec(config, 4);
  ASSERT_TRUE(spec.ok()) << spec.status();
  PlannerOptions po;
  po.world_size = 4;
  po.batch_size = 16;
  auto plan = PlanSharding(*spec, po);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->tables[2].strategy, Strategy::kDataParallel);
  EXPECT_EQ(plan->tables[1].strategy, Strategy::kColumnWise);
  EXPECT_EQ(plan->tables[1].ranks, (std::vector<int>{3, 1}));
  EXPECT_TRUE(plan->tables[1].overridden);
  const Shard& s0 = plan->shards[plan->tables[1].shards[0]];
  const Shard& s1 = plan->shards[plan->tables[1].shards[1]];
  EXPECT_EQ(s0.rank, 3);
  EXPECT_EQ(s0.col_begin, 0);
  EXPECT_EQ(s0.width, 8);
  EXPECT_EQ(s1.col_begin, 8);
  EXPECT_EQ(s1.width, 8);
  // Table-wise tables are spread over ranks.
  std::vector<int> owners;
  for (int t : {0, 3, 4}) {
    if (plan->tables[t].strategy == Strategy::kTableWise)
      owners.push_back(plan->tables[t].ranks[0]);
  }
  std::sort(owners.begin(), owners.end());
  EXPECT_EQ(std::unique(owners.begin(), owners.end()), owners.end()) << plan->ToString(*spec);
  const std::string text = plan->ToString(*spec);
  for (const char* needle : {"users", "items", "CW", "DP", "(override)", "total bytes"}) {
    EXPECT_NE(text.find(needle), std::string::npos) << needle << "\n" << text;
  }
}

TEST(Planner, MemoryIsExact) {
  // One Adam table, TW on rank 1 of 2: weights 1000*8*4, m and v the same, steps 1000*4.
  auto spec = BuildEmbeddingSpec(
      Parse(R"pb(tables {
                   name: "t"
                   num_rows: 1000
                   dim: 8
                   optimizer { type: ADAM }
                 }
                 features { name: "f" table: "t" }
                 sharding_overrides { table: "t" strategy: TABLE_WISE ranks: 1 })pb"),
      2);
  ASSERT_TRUE(spec.ok());
  PlannerOptions po;
  po.world_size = 2;
  po.batch_size = 4;
  auto plan = PlanSharding(*spec, po);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->memory[1].weights, 32000);
  EXPECT_EQ(plan->memory[1].optimizer, 32000 * 2 + 4032);  // 4000 rounded up to 64
  EXPECT_EQ(plan->memory[0].weights, 0);
  // Buffers from the batch: N = 4 items per rank; rank 1 receives <= 4 keys from rank 0.
  EXPECT_EQ(plan->buffers[1].elements[kRecvKeys], 4);
  EXPECT_EQ(plan->buffers[1].elements[kSendVec], 32);
  EXPECT_EQ(plan->buffers[0].elements[kRecvKeys], 0);
  EXPECT_EQ(plan->buffers[0].elements[kItemKey], 4);
  int64_t comm = 0, work = 0;
  for (int i = 0; i < kNumBuffers; ++i) {
    const int64_t b =
        BufferSizes::Aligned(plan->buffers[1].elements[i] * BufferSizes::ElementBytes(i));
    (BufferSizes::IsComm(i) ? comm : work) += b;
  }
  EXPECT_EQ(plan->memory[1].comm, comm);
  EXPECT_EQ(plan->memory[1].workspace, work);
  // And the collection allocates exactly that (1 rank here).
  LocalCommunicator local;
  CollectionOptions co;
  co.batch_size = 4;
  co.log_plan = false;
  auto spec1 = Parse(R"pb(tables {
                            name: "t"
                            num_rows: 1000
                            dim: 8
                            optimizer { type: ADAM }
                          }
                          features { name: "f" table: "t" })pb");
  auto c = EmbeddingCollection::Create(spec1, &local, co);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ((*c)->allocated_bytes(), (*c)->plan().memory[0].total());
  EXPECT_EQ((*c)->plan().memory[0].weights, 32000);
}

TEST(Planner, RefusesAPlanOverBudgetAndSaysWhatFits) {
  proto::EmbeddingConfig config = Parse(R"pb(
    tables {
      name: "big"
      num_rows: 100000
      dim: 32
      optimizer { type: ADAGRAD }
    }
    tables {
      name: "small"
      num_rows: 1000
      dim: 32
      optimizer { type: SGD }
    }
    features { name: "a" table: "big" kind: MULTI_HOT max_ids_per_sample: 10 }
    features { name: "b" table: "small" }
    data_parallel_max_bytes: 0
    per_rank_memory_budget_bytes: 10000000)pb");
  auto spec = BuildEmbeddingSpec(config, 2);
  ASSERT_TRUE(spec.ok());
  PlannerOptions po;
  po.world_size = 2;
  po.batch_size = 64;
  auto plan = PlanSharding(*spec, po);
  ASSERT_FALSE(plan.ok());
  EXPECT_EQ(plan.status().code(), StatusCode::kResourceExhausted);
  const std::string& m = plan.status().message();
  EXPECT_NE(m.find("does not fit per_rank_memory_budget_bytes = 10000000"), std::string::npos) << m;
  EXPECT_NE(m.find("would fit with per_rank_memory_budget_bytes >= "), std::string::npos) << m;
  EXPECT_NE(m.find("or at world size 3"), std::string::npos) << m;  // 25.6 MB / 3 < 10 MB
  // The number it names does fit.
  const size_t at = m.find(">= ") + 3;
  const int64_t needed = std::stoll(m.substr(at));
  po.budget_bytes = needed;
  EXPECT_TRUE(PlanSharding(*spec, po).ok());
  po.budget_bytes = needed - 1;
  EXPECT_FALSE(PlanSharding(*spec, po).ok());
  // The collection refuses it before allocating.
  LocalCommunicator local;
  CollectionOptions co;
  co.batch_size = 64;
  auto c = EmbeddingCollection::Create(config, &local, co);
  EXPECT_EQ(c.status().code(), StatusCode::kResourceExhausted);
}

// ---- Kernels --------------------------------------------------------------------------------

// Runs the CPU SortUnique on a copy of keys (< 2^bits) and checks every output against a
// plain stable sort: perm, the distinct keys in order, their runs, the inverse. Returns U.
int64_t ExpectSortUniqueIsStableSort(const std::vector<uint64_t>& orig, int bits,
                                     const std::string& what) {
  const int64_t n = static_cast<int64_t>(orig.size());
  std::vector<uint64_t> keys = orig, scratch(n), uk(n);
  std::vector<int32_t> perm(n), vt(n), ub(n + 1), inv(n);
  std::vector<int64_t> hist(omp_get_max_threads() * 2048);
  SortUniqueArgs a;
  a.keys = keys.data();
  a.n = n;
  a.bits = bits;
  a.keys_tmp = scratch.data();
  a.vals_tmp = vt.data();
  a.histogram = hist.data();
  a.histogram_threads = omp_get_max_threads();
  a.perm = perm.data();
  a.unique_keys = uk.data();
  a.unique_begin = ub.data();
  a.inverse = inv.data();
  const int64_t u = SortUnique(ExecContext::Cpu(), a);
  std::vector<int32_t> expect(n);
  std::iota(expect.begin(), expect.end(), 0);
  std::stable_sort(expect.begin(), expect.end(),
                   [&](int32_t x, int32_t y) { return orig[x] < orig[y]; });
  EXPECT_EQ(perm, expect) << what;
  std::vector<uint64_t> distinct = orig;
  std::sort(distinct.begin(), distinct.end());
  distinct.erase(std::unique(distinct.begin(), distinct.end()), distinct.end());
  EXPECT_EQ(u, static_cast<int64_t>(distinct.size())) << what;
  if (u != static_cast<int64_t>(distinct.size())) return u;
  for (int64_t k = 0; k < u; ++k) {
    EXPECT_EQ(uk[k], distinct[k]) << what;
    for (int32_t j = ub[k]; j < ub[k + 1]; ++j) EXPECT_EQ(orig[perm[j]], uk[k]) << what;
  }
  EXPECT_EQ(ub[u], n) << what;
  for (int64_t i = 0; i < n; ++i) EXPECT_EQ(uk[inv[i]], orig[i]) << what;
  return u;
}

TEST(SortUnique, MatchesStableSortAndRuns) {
  std::mt19937_64 rng(5);
  for (int bits : {3, 11, 12, 23, 40, 64}) {
    for (int64_t n : {int64_t{0}, int64_t{1}, int64_t{1000}, int64_t{200000}}) {
      const uint64_t range = bits == 64 ? ~uint64_t{0} : (uint64_t{1} << bits) - 1;
      // Draw from a pool of n / 3 values so duplicates are common.
      std::vector<uint64_t> pool(std::max<int64_t>(1, n / 3)), keys(n);
      for (auto& v : pool) v = rng() & range;
      for (auto& k : keys) k = pool[rng() % pool.size()];
      ExpectSortUniqueIsStableSort(keys, bits,
                                   "bits " + std::to_string(bits) + " n " + std::to_string(n));
    }
  }
}

// Strictly ascending keys are their own sort (the identity, each key a run); keys in order but
// with a repeat, or with one pair swapped, are sorted for real.
TEST(SortUnique, StrictlyAscendingKeysAreTheirOwnSort) {
  for (const int64_t n : {int64_t{1}, int64_t{2}, int64_t{1000}, int64_t{200000}}) {
    for (const int shape : {0, 1, 2}) {  // strictly ascending, one repeat, one pair swapped
      std::vector<uint64_t> keys(n);
      for (int64_t i = 0; i < n; ++i) keys[i] = 3 * static_cast<uint64_t>(i) + 1;
      if (shape == 1 && n > 1) keys[n / 2] = keys[n / 2 - 1];
      if (shape == 2 && n > 1) std::swap(keys[n / 2], keys[n / 2 - 1]);
      const int64_t u = ExpectSortUniqueIsStableSort(
          keys, 20, "n " + std::to_string(n) + " shape " + std::to_string(shape));
      EXPECT_EQ(u, shape == 1 && n > 1 ? n - 1 : n);
    }
  }
}

// Above 2^21 keys the sort runs on several threads (each scattering its chunk in order).
TEST(SortUnique, MultiThreadedIsStableToo) {
  const int64_t n = (int64_t{1} << 21) + 5;
  std::mt19937_64 rng(8);
  std::vector<uint64_t> keys(n), scratch(n), uk(n);
  for (auto& k : keys) k = rng() % 100000;
  const std::vector<uint64_t> orig = keys;
  std::vector<int32_t> perm(n), vt(n), ub(n + 1);
  std::vector<int64_t> hist(4 * 2048);
  SortUniqueArgs a;
  a.keys = keys.data();
  a.n = n;
  a.bits = 17;
  a.keys_tmp = scratch.data();
  a.vals_tmp = vt.data();
  a.histogram = hist.data();
  a.histogram_threads = 4;
  a.perm = perm.data();
  a.unique_keys = uk.data();
  a.unique_begin = ub.data();
  const int threads_before = omp_get_max_threads();
  omp_set_num_threads(2);
  const int64_t u = SortUnique(ExecContext::Cpu(), a);
  omp_set_num_threads(threads_before);
  EXPECT_GT(u, 90000);
  for (int64_t j = 1; j < n; ++j) {
    const uint64_t a0 = orig[perm[j - 1]], a1 = orig[perm[j]];
    ASSERT_TRUE(a0 < a1 || (a0 == a1 && perm[j - 1] < perm[j])) << j;
  }
}

// Bucketize on a hand-made batch: a row-wise table (2 shards), a column-wise one (2 slices)
// and a truncated sequence.
TEST(Bucketize, RoutesTruncatesAndOrdersItems) {
  // Parts: feature 0 (RW, rows r -> part r % 2), feature 1 (CW slices [0,4) and [4,8)).
  std::vector<RoutePart> parts = {
      {0, 0, 1, 0, 8, 0}, {0, 1, 0, 0, 8, 0}, {1, 2, 2, 0, 4, 0}, {1, 3, 3, 4, 4, 0}};
  std::vector<int64_t> ids0 = {5, 2, 7}, off0 = {0, 2, 3};     // bags {5, 2}, {7}
  std::vector<int64_t> ids1 = {1, 2, 3, 4}, off1 = {0, 3, 4};  // sequence T = 2: {2, 3}, {4}
  std::vector<FeatureRoute> fr(2);
  fr[0].num_rows = 10;
  fr[0].kind = static_cast<int>(FeatureKind::kMultiHot);
  fr[0].pooling = static_cast<int>(Pooling::kMean);
  fr[0].max_ids = 2;
  fr[0].strategy = static_cast<int>(Strategy::kRowWise);
  fr[0].part_begin = 0;
  fr[0].num_parts = 2;
  fr[0].dim = 8;
  fr[0].out_stride = 8;
  fr[0].ids = ids0.data();
  fr[0].offsets = off0.data();
  fr[1].num_rows = 10;
  fr[1].kind = static_cast<int>(FeatureKind::kSequence);
  fr[1].max_ids = 2;
  fr[1].max_length = 2;
  fr[1].strategy = static_cast<int>(Strategy::kColumnWise);
  fr[1].part_begin = 2;
  fr[1].num_parts = 2;
  fr[1].dim = 8;
  fr[1].out_stride = 16;
  fr[1].ids = ids1.data();
  fr[1].offsets = off1.data();
  std::vector<int64_t> begin(5), out(16);
  std::vector<uint64_t> key(16);
  std::vector<int32_t> part(16);
  std::vector<float> scale(16);
  BucketizeArgs a;
  a.features = fr.data();
  a.num_features = 2;
  a.parts = parts.data();
  a.batch = 2;
  a.row_bits = 4;
  a.bag_item_begin = begin.data();
  a.item_key = key.data();
  a.item_part = part.data();
  a.item_scale = scale.data();
  a.item_out = out.data();
  BucketizeError err;
  ASSERT_EQ(Bucketize(ExecContext::Cpu(), a, &err), 9);
  EXPECT_EQ(begin, (std::vector<int64_t>{0, 2, 6, 7, 9}));
  // Bag (0, 0): id 5 -> row 5 = part 1 (slot 0), local 2; id 2 -> part 0 (slot 1), local 1.
  EXPECT_EQ(key[0], (0u << 4) | 2u);
  EXPECT_EQ(key[1], (1u << 4) | 1u);
  EXPECT_FLOAT_EQ(scale[0], 0.5f);
  EXPECT_EQ(out[0], 0);
  // Bag (0, 1): ids {2, 3} (1 dropped), 2 slices each, at t = 0, 1 of T = 2.
  EXPECT_EQ(part[2], 2);
  EXPECT_EQ(part[3], 3);
  EXPECT_EQ(key[2], (2u << 4) | 2u);
  EXPECT_EQ(key[3], (3u << 4) | 2u);
  EXPECT_EQ(out[2], 0);
  EXPECT_EQ(out[3], 4);
  EXPECT_EQ(out[4], 8);  // t = 1
  // Bag (1, 1): one id, pre-padded to t = 1 of sample 1: (1 * 2 + 1) * 8.
  EXPECT_EQ(out[7], 24);
  EXPECT_EQ(out[8], 28);
  // Errors: a DIRECT id out of range, then a bag over max_ids.
  fr[0].mapping = static_cast<int>(IdMapping::kDirect);
  ids0[2] = 10;
  EXPECT_EQ(Bucketize(ExecContext::Cpu(), a, &err), -1);
  EXPECT_EQ(err.kind, 1);
  EXPECT_EQ(err.feature, 0);
  EXPECT_EQ(err.sample, 1);
  EXPECT_EQ(err.id, 10);
  fr[0].max_ids = 1;
  EXPECT_EQ(Bucketize(ExecContext::Cpu(), a, &err), -1);
  EXPECT_EQ(err.kind, 2);
  EXPECT_EQ(err.sample, 0);
  EXPECT_EQ(err.count, 2);
}

TEST(GatherRows, CopiesEachKeysRowSlice) {
  std::vector<float> w(5 * 4);
  for (size_t i = 0; i < w.size(); ++i) w[i] = static_cast<float>(i);
  std::vector<ShardView> shards(2);
  shards[1].weights = w.data();
  shards[1].width = 4;
  shards[1].num_rows = 5;
  std::vector<uint64_t> keys = {(1u << 3) | 4u, (1u << 3) | 0u};
  std::vector<int64_t> off = {0, 4};
  std::vector<float> out(8);
  GatherRows(ExecContext::Cpu(), keys.data(), 2, 3, shards.data(), off.data(), out.data());
  EXPECT_EQ(out, (std::vector<float>{16, 17, 18, 19, 0, 1, 2, 3}));
}

// Pool, per bag in item order: a sequence feature and a pooled one (scaled sums, an empty bag
// gives zeros), pre-padded with a mask. The same outputs with plain and with streaming stores,
// and with rows found through the dedup (unique_ptr) or read in place by key (item_key, the
// one-rank forward). The sequence at width 8 takes the streaming path; at width 6 its rows
// are not 16-byte multiples and fall back to plain stores.
TEST(Pool, SameOutputsWithStreamingStoresAndRowsReadByKey) {
  for (const int D : {8, 6}) {
    const int64_t B = 3, T = 4;
    std::vector<float> rows(5 * D);
    for (size_t i = 0; i < rows.size(); ++i) rows[i] = static_cast<float>(i) + 0.5f;
    std::vector<const float*> uptr;
    for (int r = 0; r < 5; ++r) uptr.push_back(rows.data() + r * D);
    // By key: the rows are local row r of slot 1 (row_bits 3).
    const std::vector<const float*> slot_weights = {nullptr, rows.data()};
    std::vector<FeatureRoute> fr(2);
    fr[0].kind = static_cast<int>(FeatureKind::kSequence);
    fr[0].dim = D;
    fr[0].max_length = T;
    fr[0].num_parts = 1;
    fr[1].kind = static_cast<int>(FeatureKind::kMultiHot);
    fr[1].dim = D;
    fr[1].out_stride = D;
    std::vector<RoutePart> parts = {{0, 0, 0, 0, D, 0}, {1, 0, 0, 0, D, 0}};
    // Bags (b, f), b-major: sequences of 2, 0 and 4 tokens; pooled bags {3, 1}, {}, {2}.
    std::vector<int64_t> begin = {0, 2, 4, 4, 4, 8, 9};
    std::vector<int32_t> to_unique = {4, 0, 3, 1, 0, 1, 2, 3, 2};
    std::vector<int32_t> item_part = {0, 0, 1, 1, 0, 0, 0, 0, 1};
    std::vector<float> scale = {1, 1, 2.0f, 0.5f, 1, 1, 1, 1, 3.0f};
    std::vector<int64_t> item_out = {
        (0 * T + 2) * D, (0 * T + 3) * D, 0,    0, (2 * T + 0) * D, (2 * T + 1) * D,
        (2 * T + 2) * D, (2 * T + 3) * D, 2 * D};
    std::vector<float> expect_seq(B * T * D, 0.0f), expect_mask(B * T, 0.0f),
        expect_pooled(B * D, 0.0f);
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t i = begin[b * 2]; i < begin[b * 2 + 1]; ++i) {
        for (int c = 0; c < D; ++c) expect_seq[item_out[i] + c] = uptr[to_unique[i]][c];
        expect_mask[item_out[i] / D] = 1.0f;
      }
      for (int64_t i = begin[b * 2 + 1]; i < begin[b * 2 + 2]; ++i) {
        for (int c = 0; c < D; ++c)
          expect_pooled[item_out[i] + c] += scale[i] * uptr[to_unique[i]][c];
      }
    }
    std::vector<uint64_t> keys;
    for (const int32_t u : to_unique) keys.push_back((uint64_t{1} << 3) | static_cast<uint64_t>(u));
    for (const int mode : {0, 1, 2, 3}) {
      const bool stream = mode & 1, by_key = mode & 2;
      // 64-byte aligned outputs, as the collection's arena gives, filled with garbage first.
      std::vector<float> seq_buf(B * T * D + 16, -7.0f), mask(B * T, -7.0f), pooled(B * D, -7.0f);
      float* seq = seq_buf.data();
      while (reinterpret_cast<uintptr_t>(seq) % 64 != 0) ++seq;
      std::vector<float*> fo = {seq, pooled.data()};
      std::vector<float*> fm = {mask.data(), nullptr};
      PoolArgs a;
      a.features = fr.data();
      a.num_features = 2;
      a.parts = parts.data();
      a.batch = B;
      a.bag_item_begin = begin.data();
      a.item_part = item_part.data();
      a.item_scale = scale.data();
      a.item_out = item_out.data();
      if (by_key) {
        a.item_key = keys.data();
        a.slot_weights = slot_weights.data();
        a.row_bits = 3;
      } else {
        a.item_to_unique = to_unique.data();
        a.unique_ptr = uptr.data();
      }
      a.feature_out = fo.data();
      a.feature_mask = fm.data();
      a.stream_outputs = stream;
      PoolForward(ExecContext::Cpu(), a);
      const std::string what = "D " + std::to_string(D) + " stream " + std::to_string(stream) +
                               " by key " + std::to_string(by_key);
      EXPECT_EQ(std::vector<float>(seq, seq + B * T * D), expect_seq) << what;
      EXPECT_EQ(mask, expect_mask) << what;
      EXPECT_EQ(pooled, expect_pooled) << what;
    }
  }
}

// Each optimizer's kernel against the plain formula on random rows, with L2 and decoupled
// weight decay, duplicates reduced from several entries; at a generic width and at each width
// the CPU kernels specialize (16, 32, 64, 128).
TEST(SparseOptimizer, EveryOptimizerMatchesThePlainUpdate) {
  const int rows = 5;
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  for (const int W : {6, 16, 32, 64, 128}) {
    for (int type = 0; type < 4; ++type) {
      for (int decay_mode = 0; decay_mode < 3; ++decay_mode) {  // none, L2, decoupled
        OptimizerSpec os;
        os.type = static_cast<OptimizerType>(type);
        os.lr = 0.1f;
        os.eps = 1e-3f;
        os.weight_decay = decay_mode == 0 ? 0.0f : 0.05f;
        os.decoupled_weight_decay = decay_mode == 2;
        std::vector<float> w(rows * W), s0(rows * W, 0.2f), s1(rows * W, 0.1f);
        std::vector<int32_t> steps(rows, 3);
        for (float& x : w) x = dist(rng);
        std::vector<float> w_ref = w, s0_ref = s0, s1_ref = s1;
        std::vector<int32_t> steps_ref = steps;
        ShardView v;
        v.weights = w.data();
        v.state0 = s0.data();
        v.state1 = s1.data();
        v.steps = steps.data();
        v.num_rows = rows;
        v.width = W;
        const OptimizerParams p = MakeOptimizerParams(os, W, false);
        // Rows 1 and 3 touched; row 3 by two entries (2 + 1 contributions).
        std::vector<float> contrib(4 * W);
        for (float& x : contrib) x = dist(rng);
        std::vector<const float*> econtrib = {contrib.data(), contrib.data() + W,
                                              contrib.data() + 3 * W};
        std::vector<int32_t> ecount = {1, 2, 1}, eperm = {0, 1, 2}, begin = {0, 1, 3};
        std::vector<uint64_t> keys = {1, 3};
        std::vector<int64_t> roff = {0, W};
        std::vector<float> reduced(2 * W);
        ReduceArgs ra;
        ra.num_rows = 2;
        ra.keys = keys.data();
        ra.begin = begin.data();
        ra.entry_perm = eperm.data();
        ra.entry_contrib = econtrib.data();
        ra.entry_count = ecount.data();
        ra.row_bits = 8;
        ra.shards = &v;
        ra.params = &p;
        ra.reduced_off = roff.data();
        ra.reduced = reduced.data();
        ReduceRows(ExecContext::Cpu(), ra);
        UpdateArgs ua;
        ua.num_rows = 2;
        ua.keys = keys.data();
        ua.row_bits = 8;
        ua.shards = &v;
        ua.params = &p;
        ua.reduced_off = roff.data();
        ua.reduced = reduced.data();
        ua.lr_scale = 0.5f;
        UpdateRows(ExecContext::Cpu(), ua);
        // Plain reference.
        const float lr = 0.05f;
        for (int r : {1, 3}) {
          std::vector<double> g(W, 0.0);
          const std::vector<int> which = r == 1 ? std::vector<int>{0} : std::vector<int>{1, 2, 3};
          for (int k : which) {
            for (int c = 0; c < W; ++c) g[c] += contrib[k * W + c];
          }
          float* wr = w_ref.data() + r * W;
          const std::vector<double> w_old(wr, wr + W);
          if (decay_mode == 1) {
            for (int c = 0; c < W; ++c) g[c] += 0.05 * w_old[c];
          }
          double sq = 0;
          for (int c = 0; c < W; ++c) sq += g[c] * g[c];
          const int k = steps_ref[r] + 1;
          for (int c = 0; c < W; ++c) {
            double upd = 0;
            switch (type) {
              case 0:
                upd = g[c];
                break;
              case 1:
                s0_ref[r * W + c] += static_cast<float>(g[c] * g[c]);
                upd = g[c] / (std::sqrt(static_cast<double>(s0_ref[r * W + c])) + 1e-3);
                break;
              case 2:
                if (c == 0) s0_ref[r] += static_cast<float>(sq / W);
                upd = g[c] / (std::sqrt(static_cast<double>(s0_ref[r])) + 1e-3);
                break;
              default: {
                const double m = 0.9 * s0_ref[r * W + c] + 0.1 * g[c];
                const double vv = 0.999 * s1_ref[r * W + c] + 0.001 * g[c] * g[c];
                s0_ref[r * W + c] = static_cast<float>(m);
                s1_ref[r * W + c] = static_cast<float>(vv);
                upd = (m / (1 - std::pow(0.9, k))) /
                      (std::sqrt(vv / (1 - std::pow(0.999, k))) + 1e-3);
              }
            }
            double nw = w_old[c] - lr * upd;
            if (decay_mode == 2) nw -= lr * 0.05 * w_old[c];
            wr[c] = static_cast<float>(nw);
          }
          if (type == 3) steps_ref[r] = k;
        }
        const std::string what = std::string(OptimizerName(os.type)) + " decay " +
                                 std::to_string(decay_mode) + " width " + std::to_string(W);
        EXPECT_TRUE(testing::AllClose(w, w_ref, 2e-6, 1e-7, what + " w"));
        EXPECT_TRUE(testing::AllClose(s0, s0_ref, 2e-6, 1e-7, what + " s0"));
        EXPECT_TRUE(testing::AllClose(s1, s1_ref, 2e-6, 1e-9, what + " s1"));
        EXPECT_EQ(steps, steps_ref) << what;
        // Untouched rows did not move.
        for (int c = 0; c < W; ++c) EXPECT_EQ(w[c], w_ref[c]);
      }
    }
  }
}

TEST(RowSquareSum, BlocksThenBlocks) {
  const float g[6] = {1, 2, 3, 4, 5, 6};
  // (1 + 4 + 9 + 16) + (25 + 36)
  EXPECT_EQ(RowSquareSum(g, 6), 91.0f);
  EXPECT_EQ(BlockSquareSum(g, 4, 6), 61.0f);
}

// ---- The collection, stage by stage, on one rank ------------------------------------------

// Both one-rank orders: the full forward pipeline, and the forward that pools right after
// bucketize with the dedup run in the backward (DefersDedup). Same outputs (the plain
// reference's), same tables after the update.
TEST(EmbeddingCollection, StagesRunOneByOne) {
  LocalCommunicator local;
  CollectionOptions co;
  co.batch_size = 8;
  co.log_plan = false;
  const proto::EmbeddingConfig config = testing::TestConfig("type: SGD");
  std::vector<TableContents> tables[2];
  for (const bool defer : {false, true}) {
    SCOPED_TRACE(defer ? "dedup in the backward" : "dedup in the forward");
    auto c = EmbeddingCollection::Create(config, &local, co);
    ASSERT_TRUE(c.ok()) << c.status();
    EmbeddingCollection& col = **c;
    EXPECT_TRUE(col.DefersDedup());
    const testing::GlobalBatch gb = testing::MakeGlobalBatch(col.spec(), 8, 0);
    testing::LocalBatch lb = testing::SliceBatch(gb, 0, 8);
    int64_t ids = 0;
    for (const auto& v : gb.ids) ids += static_cast<int64_t>(v.size());
    const int64_t n = col.StageBucketize(lb.batch);
    EXPECT_GT(n, 0);
    EXPECT_LE(n, ids);  // sequences were truncated
    auto dedup = [&]() {
      const int64_t u = col.StageDedup();
      EXPECT_GT(u, 0);
      EXPECT_LT(u, n);                    // the skewed ids repeat
      EXPECT_EQ(col.unique_count(0), u);  // one rank: every key stays here
      return u;
    };
    int64_t u = 0;
    if (!defer) {
      u = dedup();
      col.StageExchangeCounts();
      col.StageExchangeIds();
      col.StageLookup();
      col.StageExchangeVectors();
    }
    const EmbeddingOutputs& out = col.StagePool();
    EXPECT_EQ(out.pooled.shape(), (Shape{8, 52}));
    ASSERT_EQ(out.sequences.size(), 2u);
    EXPECT_EQ(out.sequences[0].shape(), (Shape{8, 6, 16}));
    EXPECT_EQ(out.masks[1].shape(), (Shape{8, 4}));
    std::vector<float> pooled;
    std::vector<std::vector<float>> seqs, masks;
    testing::PlainReference(col.spec()).Forward(gb, &pooled, &seqs, &masks);
    EXPECT_TRUE(
        testing::BitEqual(out.pooled.data<float>(), pooled.data(), pooled.size(), "pooled"));
    for (size_t k = 0; k < seqs.size(); ++k) {
      EXPECT_TRUE(testing::BitEqual(out.sequences[k].data<float>(), seqs[k].data(), seqs[k].size(),
                                    "sequence"));
      EXPECT_TRUE(
          testing::BitEqual(out.masks[k].data<float>(), masks[k].data(), masks[k].size(), "mask"));
    }
    if (defer) u = dedup();  // after the pool: the backward's dedup
    const testing::GlobalGrads gg = testing::MakeGlobalGrads(col.spec(), 8, 0);
    testing::LocalGrads lg = testing::SliceGrads(col.spec(), gg, 0, 8);
    col.StagePackGradients(lg.grads);
    col.StageExchangeGradients();
    EXPECT_EQ(col.StageMerge(), u);  // one source: merged rows = unique keys
    col.StageReduce();
    col.StageExchangeRowSums();
    col.StageUpdate(1.0f);
    for (int t = 0; t < static_cast<int>(col.spec().tables.size()); ++t) {
      tables[defer].push_back(col.GatherTable(t));
    }
  }
  for (size_t t = 0; t < tables[0].size(); ++t) {
    EXPECT_EQ(tables[0][t].weights, tables[1][t].weights) << "table " << t;
  }
}

// Bad bags: ValidateBatch returns OutOfRange naming the feature, the sample and the fault, and
// Forward refuses the batch with the same words. The bag of sample 7 (the last) of cat_bag
// (DIRECT over 40 rows, at most 5 ids) gets an id out of range, or a sixth id.
TEST(EmbeddingCollection, BadBagsAreClearErrors) {
  // Re-executes the binary for the death test: a plain fork would inherit OpenMP's thread
  // pool half-alive and hang in the next parallel region.
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  LocalCommunicator local;
  CollectionOptions co;
  co.batch_size = 8;
  co.log_plan = false;
  auto c = EmbeddingCollection::Create(testing::TestConfig("type: SGD"), &local, co);
  ASSERT_TRUE(c.ok());
  const int cat = 3;
  struct Case {
    int64_t bad_id;       // appended to the bag, or -1
    int64_t length;       // valid ids appended until the bag has this many, or 0
    const char* message;  // in ValidateBatch's status
    const char* death;    // Forward's fatal message (a regex)
  };
  const Case cases[] = {
      {77, 0, "feature 'cat_bag': id 77 (sample 7) is outside [0, 40) of table 'cats'",
       "feature 'cat_bag': id 77 \\(sample 7\\)"},
      {-1, 6, "feature 'cat_bag': sample 7 carries 6 ids, more than max_ids_per_sample = 5",
       "feature 'cat_bag': sample 7 carries 6 ids"},
  };
  for (const Case& k : cases) {
    SCOPED_TRACE(k.message);
    testing::GlobalBatch gb = testing::MakeGlobalBatch((*c)->spec(), 8, 0);
    auto append = [&](int64_t id) {
      gb.ids[cat].push_back(id);
      gb.weights[cat].push_back(1.0f);
      ++gb.offsets[cat][8];
    };
    if (k.bad_id >= 0) {
      ASSERT_LT(gb.offsets[cat][8] - gb.offsets[cat][7], 5) << "the bag is already full";
      append(k.bad_id);
    }
    while (gb.offsets[cat][8] - gb.offsets[cat][7] < k.length) append(0);
    testing::LocalBatch lb = testing::SliceBatch(gb, 0, 8);
    const Status s = (*c)->ValidateBatch(lb.batch);
    EXPECT_EQ(s.code(), StatusCode::kOutOfRange);
    EXPECT_NE(s.message().find(k.message), std::string::npos) << s;
    EXPECT_DEATH((*c)->Forward(lb.batch), k.death);
  }
}

}  // namespace
}  // namespace loom::embedding
