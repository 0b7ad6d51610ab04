// Tests of the checkpoint conversion tools (csrc/train/ckpt_convert.h, ckpt_export.h,
// ckpt_cli.h). Checkpoints are written by the trainer's own Checkpointer at N ranks (threads,
// ckpt_test_util.h) with closed-form contents; every converted checkpoint is checked against
// those values bit for bit through the tools' reader, through the trainer's VerifyCheckpoint,
// and by restoring it with the trainer's Checkpointer into a live M-rank job.
#include "csrc/train/ckpt_convert.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "csrc/core/safetensors.h"
#include "csrc/data/crc32c.h"
#include "csrc/train/checkpoint.h"
#include "csrc/train/ckpt_cli.h"
#include "csrc/train/ckpt_export.h"
#include "tests/train/ckpt_test_util.h"

namespace loom::train {
namespace {

namespace fs = std::filesystem;
using testing::Expected;
using testing::ExpectedStep;
using testing::RestoreAndCheck;
using testing::SaveTestCheckpoint;
using testing::TempDir;
using testing::TestConfig;

// Plans as sharding overrides.
constexpr char kPlanA4[] = R"pb(
  sharding_overrides {
    table: "users"
    strategy: ROW_WISE
    ranks: [ 0, 1, 2, 3 ]
  }
  sharding_overrides {
    table: "items"
    strategy: COLUMN_WISE
    ranks: [ 1, 2, 3 ]
  }
  sharding_overrides { table: "cats" strategy: DATA_PARALLEL }
  sharding_overrides {
    table: "tags"
    strategy: TABLE_WISE
    ranks: [ 2 ]
  }
)pb";
constexpr char kPlanB2[] = R"pb(
  sharding_overrides {
    table: "users"
    strategy: TABLE_WISE
    ranks: [ 1 ]
  }
  sharding_overrides {
    table: "items"
    strategy: ROW_WISE
    ranks: [ 0, 1 ]
  }
  sharding_overrides {
    table: "cats"
    strategy: COLUMN_WISE
    ranks: [ 0, 1 ]
  }
  sharding_overrides { table: "tags" strategy: DATA_PARALLEL }
)pb";
constexpr char kPlanC3[] = R"pb(
  sharding_overrides {
    table: "users"
    strategy: ROW_WISE
    ranks: [ 0, 1, 2 ]
  }
  sharding_overrides {
    table: "items"
    strategy: COLUMN_WISE
    ranks: [ 2, 0 ]
  }
  sharding_overrides {
    table: "cats"
    strategy: TABLE_WISE
    ranks: [ 1 ]
  }
  sharding_overrides {
    table: "tags"
    strategy: ROW_WISE
    ranks: [ 2, 0 ]
  }
)pb";
// TW -> RW and RW -> CW at 2 ranks, starting from kPlanB2.
constexpr char kPlanRw2[] = R"pb(
  sharding_overrides {
    table: "users"
    strategy: ROW_WISE
    ranks: [ 0, 1 ]
  }
  sharding_overrides {
    table: "items"
    strategy: TABLE_WISE
    ranks: [ 0 ]
  }
  sharding_overrides {
    table: "cats"
    strategy: TABLE_WISE
    ranks: [ 1 ]
  }
  sharding_overrides {
    table: "tags"
    strategy: TABLE_WISE
    ranks: [ 0 ]
  }
)pb";
constexpr char kPlanCw2[] = R"pb(
  sharding_overrides {
    table: "users"
    strategy: COLUMN_WISE
    ranks: [ 1, 0 ]
  }
  sharding_overrides {
    table: "items"
    strategy: COLUMN_WISE
    ranks: [ 0, 1 ]
  }
  sharding_overrides {
    table: "cats"
    strategy: ROW_WISE
    ranks: [ 1, 0 ]
  }
  sharding_overrides {
    table: "tags"
    strategy: COLUMN_WISE
    ranks: [ 0, 1 ]
  }
)pb";
constexpr char kPlanAllDp[] = R"pb(
  sharding_overrides { table: "users" strategy: DATA_PARALLEL }
  sharding_overrides { table: "items" strategy: DATA_PARALLEL }
  sharding_overrides { table: "cats" strategy: DATA_PARALLEL }
  sharding_overrides { table: "tags" strategy: DATA_PARALLEL }
)pb";
// Valid at 2 and at 4 ranks.
constexpr char kPlanValidAt2[] = R"pb(
  sharding_overrides {
    table: "users"
    strategy: ROW_WISE
    ranks: [ 0, 1 ]
  }
  sharding_overrides {
    table: "items"
    strategy: TABLE_WISE
    ranks: [ 1 ]
  }
  sharding_overrides { table: "cats" strategy: DATA_PARALLEL }
  sharding_overrides {
    table: "tags"
    strategy: COLUMN_WISE
    ranks: [ 0, 1 ]
  }
)pb";

proto::EmbeddingConfig PlanOf(const std::string& text) { return TestConfig(text).embedding(); }

// Every global tensor of the checkpoint at `path`, read through CheckpointSource in blocks of
// about block_bytes, equals the closed-form values bit for bit.
void ExpectOracle(const std::string& path, int64_t block_bytes = 300) {
  auto src = CheckpointSource::Open(path);
  ASSERT_TRUE(src.ok()) << src.status();
  std::vector<std::string> names;
  for (const GlobalTensor& gt : (*src)->tensors()) {
    names.push_back(gt.name);
    auto stream = (*src)->Stream(gt);
    ASSERT_TRUE(stream.ok()) << stream.status();
    const int64_t block_rows = std::max<int64_t>(block_bytes / gt.row_bytes(), 1);
    std::vector<char> buf;
    int64_t row = 0;
    int64_t mismatches = 0;
    while (true) {
      auto n = (*stream)->Next(block_rows, &buf);
      ASSERT_TRUE(n.ok()) << n.status();
      if (*n == 0) break;
      for (int64_t r = 0; r < *n; ++r, ++row) {
        for (int64_t c = 0; c < gt.row_elements(); ++c) {
          const int64_t i = r * gt.row_elements() + c;
          if (gt.dtype == DType::kI32) {
            int32_t v;
            std::memcpy(&v, buf.data() + i * 4, 4);
            mismatches += v != ExpectedStep(gt.parameter, row);
          } else {
            float v;
            std::memcpy(&v, buf.data() + i * 4, 4);
            const float want = gt.table >= 0 ? Expected(gt.name, row, c)
                                             : Expected(gt.name, 0, row * gt.row_elements() + c);
            mismatches += std::memcmp(&v, &want, 4) != 0;
          }
        }
      }
    }
    EXPECT_EQ(row, gt.rows()) << gt.name;
    EXPECT_EQ(mismatches, 0) << gt.name;
  }
  const std::vector<std::string> want = {
      "dense/layers.0.norm.weight",
      "dense/head.out.weight",
      "dense_opt/layers.0.norm.weight/exp_avg",
      "dense_opt/head.out.weight/exp_avg",
      "dense_opt/layers.0.norm.weight/exp_avg_sq",
      "dense_opt/head.out.weight/exp_avg_sq",
      "embedding/users/weight",
      "embedding/users/adagrad_sum",
      "embedding/items/weight",
      "embedding/items/rowwise_adagrad_sum",
      "embedding/cats/weight",
      "embedding/cats/adam_m",
      "embedding/cats/adam_v",
      "embedding/cats/adam_step",
      "embedding/tags/weight",
  };
  std::vector<std::string> sorted_names = names, sorted_want = want;
  std::sort(sorted_names.begin(), sorted_names.end());
  std::sort(sorted_want.begin(), sorted_want.end());
  EXPECT_EQ(sorted_names, sorted_want);
}

// No committed and no temporary checkpoint below `dir`.
void ExpectNothingWritten(const std::string& dir) {
  std::error_code ec;
  if (!fs::exists(dir, ec)) return;
  for (const auto& e : fs::directory_iterator(dir)) {
    ADD_FAILURE() << "left behind: " << e.path();
  }
}

// A tool refused: `st` is an error whose message holds every substring of `want` (an error
// must name the file and the fault, not merely fail), and `out`, when given, holds nothing.
void ExpectRefused(const Status& st, const std::vector<std::string>& want,
                   const std::string& out = "") {
  ASSERT_FALSE(st.ok()) << "want an error mentioning " << ::testing::PrintToString(want);
  for (const auto& w : want)
    EXPECT_NE(st.message().find(w), std::string::npos) << "no '" << w << "' in: " << st;
  if (!out.empty()) ExpectNothingWritten(out);
}

// Every regular file below `dir`: path relative to `dir` -> contents.
std::map<std::string, std::string> FilesOf(const std::string& dir) {
  std::map<std::string, std::string> files;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (!e.is_regular_file()) continue;
    std::ifstream f(e.path(), std::ios::binary);
    files[fs::relative(e.path(), dir).string()] =
        std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
  }
  return files;
}

std::string StrategyOf(const proto::CheckpointManifest& m, const std::string& table) {
  for (const auto& t : m.tables()) {
    if (t.name() == table) {
      std::string s = proto::EmbeddingPiece::Strategy_Name(t.strategy()) + ":";
      for (int r : t.ranks()) s += std::to_string(r) + ",";
      return s;
    }
  }
  return "?";
}

// ---------------------------------------------------------------------------------------------

TEST(Crc32cCombine, EqualsTheCrcOfTheConcatenation) {
  std::mt19937 rng(3);
  for (size_t la : {0, 1, 7, 64, 1000}) {
    for (size_t lb : {0, 1, 3, 63, 4097}) {
      std::string a(la, '\0'), b(lb, '\0');
      for (auto& c : a) c = static_cast<char>(rng());
      for (auto& c : b) c = static_cast<char>(rng());
      const std::string ab = a + b;
      EXPECT_EQ(Crc32cCombine(data::Crc32c(a.data(), a.size()), data::Crc32c(b.data(), b.size()),
                              b.size()),
                data::Crc32c(ab.data(), ab.size()))
          << la << " + " << lb;
    }
  }
}

TEST(CheckpointSource, ReadsEveryGlobalTensorOfAFourRankCheckpoint) {
  TempDir dir;
  const std::string path = SaveTestCheckpoint(dir / "src", 4, TestConfig(kPlanA4));
  ExpectOracle(path, 1);                           // one row per block
  ExpectOracle(path, 4096);                        // many rows per block
  auto src = CheckpointSource::Open(dir / "src");  // a directory of checkpoints resolves
  ASSERT_TRUE(src.ok()) << src.status();
  EXPECT_EQ((*src)->path(), path);
  const GlobalTensor* users = (*src)->Find("embedding/users/weight");
  ASSERT_NE(users, nullptr);
  EXPECT_EQ(users->shape, (std::vector<int64_t>{1000, 8}));
  EXPECT_EQ(users->entries.size(), 4u);  // one piece per rank (ROW_WISE)
  const GlobalTensor* rowwise = (*src)->Find("embedding/items/rowwise_adagrad_sum");
  ASSERT_NE(rowwise, nullptr);
  EXPECT_TRUE(rowwise->per_row);
  EXPECT_EQ(rowwise->entries.size(), 3u);  // one copy per column slice
}

// ---------------------------------------------------------------------------------------------
// Resharding: N ranks, one plan -> M ranks, another plan.

struct ReshardCase {
  const char* name;
  int from;
  const char* from_plan;
  int to;
  const char* to_plan;  // nullptr: "auto" (the planner's own choice at M ranks)
};

void PrintTo(const ReshardCase& c, std::ostream* os) { *os << c.name; }

class ReshardTest : public ::testing::TestWithParam<ReshardCase> {};

TEST_P(ReshardTest, GlobalContentsBitIdenticalAndTheTrainerRestoresThem) {
  const ReshardCase& c = GetParam();
  TempDir dir;
  const std::string src = SaveTestCheckpoint(dir / "src", c.from, TestConfig(c.from_plan));
  ReshardOptions o;
  o.world_size = c.to;
  o.has_plan = true;
  o.plan = PlanOf(c.to_plan != nullptr ? c.to_plan : "");
  o.block_bytes = 700;  // many blocks per table
  auto r = Reshard(src, dir / "out", o);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->path, dir / "out/step-000000000120");
  ExpectOracle(r->path);
  auto m = ReadManifest(r->path);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->world_size(), c.to);
  EXPECT_EQ(m->ranks_size(), c.to);
  EXPECT_EQ(m->step(), testing::kTestStep);
  EXPECT_EQ(m->model_hash(), testing::kTestModelHash);
  // The trainer's own verifier accepts every size and CRC.
  EXPECT_TRUE(VerifyCheckpoint(r->path, *m, /*checksums=*/true).ok());
  // The trainer's Checkpointer restores it into a job planned from the target config.
  const proto::LoomConfig target = TestConfig(c.to_plan != nullptr ? c.to_plan : "");
  RestoreAndCheck(r->path, c.to, target);
  // The plan recorded is the one the live job computes.
  auto spec = embedding::BuildEmbeddingSpec(target.embedding(), c.to);
  ASSERT_TRUE(spec.ok());
  embedding::PlannerOptions po;
  po.world_size = c.to;
  po.batch_size = 4;
  auto plan = embedding::PlanSharding(*spec, po);
  ASSERT_TRUE(plan.ok());
  for (size_t t = 0; t < spec->tables.size(); ++t) {
    EXPECT_EQ(static_cast<int>(m->tables(t).strategy()), static_cast<int>(plan->tables[t].strategy))
        << spec->tables[t].name;
    EXPECT_EQ(std::vector<int>(m->tables(t).ranks().begin(), m->tables(t).ranks().end()),
              plan->tables[t].ranks)
        << spec->tables[t].name;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Cases, ReshardTest,
    ::testing::Values(ReshardCase{"R4to2auto", 4, kPlanA4, 2, nullptr},
                      ReshardCase{"R4to1auto", 4, kPlanA4, 1, nullptr},
                      ReshardCase{"R4to3uneven", 4, kPlanA4, 3, kPlanC3},
                      ReshardCase{"R2to4", 2, kPlanB2, 4, kPlanA4},
                      ReshardCase{"TWtoRW", 2, kPlanB2, 2, kPlanRw2},
                      ReshardCase{"RWtoCW", 2, kPlanB2, 2, kPlanCw2},
                      ReshardCase{"ToDP", 4, kPlanA4, 2, kPlanAllDp},
                      ReshardCase{"DPtoRW", 2, kPlanAllDp, 3, kPlanC3},
                      ReshardCase{"R4to4replan", 4, kPlanA4, 4, kPlanValidAt2}),
    [](const ::testing::TestParamInfo<ReshardCase>& p) { return p.param.name; });

TEST(Reshard, WithoutAPlanKeepsTheConfigsOverrides) {
  TempDir dir;
  const proto::LoomConfig cfg = TestConfig(kPlanValidAt2);
  const std::string src = SaveTestCheckpoint(dir / "src", 4, cfg);
  ReshardOptions o;
  o.world_size = 2;
  auto r = Reshard(src, dir / "out", o);
  ASSERT_TRUE(r.ok()) << r.status();
  auto before = ReadManifest(src);
  auto after = ReadManifest(r->path);
  ASSERT_TRUE(before.ok() && after.ok());
  EXPECT_EQ(after->config_text(), before->config_text());
  EXPECT_EQ(after->config_hash(), before->config_hash());
  EXPECT_EQ(StrategyOf(*after, "users"), "ROW_WISE:0,1,");
  EXPECT_EQ(StrategyOf(*after, "tags"), "COLUMN_WISE:0,1,");
  ExpectOracle(r->path);
  RestoreAndCheck(r->path, 2, cfg);
}

TEST(Reshard, AnOverrideNamingAMissingRankAsksForAPlan) {
  TempDir dir;
  const std::string src = SaveTestCheckpoint(dir / "src", 4, TestConfig(kPlanA4));
  ReshardOptions o;
  o.world_size = 2;
  ExpectRefused(Reshard(src, dir / "out", o).status(), {"outside [0, 2)", "--plan"}, dir / "out");
}

TEST(Reshard, APlanRecordsItsOverridesInTheConfigText) {
  TempDir dir;
  const std::string src = SaveTestCheckpoint(dir / "src", 4, TestConfig(kPlanA4));
  ReshardOptions o;
  o.world_size = 3;
  o.has_plan = true;
  o.plan = PlanOf(kPlanC3);
  auto r = Reshard(src, dir / "out", o);
  ASSERT_TRUE(r.ok()) << r.status();
  auto m = ReadManifest(r->path);
  ASSERT_TRUE(m.ok());
  proto::LoomConfig cfg;
  ASSERT_TRUE(config::ParseTextProto(m->config_text(), "config_text", &cfg).ok());
  EXPECT_EQ(cfg.embedding().sharding_overrides_size(), 4);
  EXPECT_EQ(cfg.embedding().sharding_overrides(0).ranks_size(), 3);
  EXPECT_EQ(m->config_hash(), Fnv1a64(m->config_text()));
  EXPECT_EQ(StrategyOf(*m, "items"), "COLUMN_WISE:2,0,");
}

TEST(Reshard, ExistingOutputNeedsOverwriteAndInPlaceWorks) {
  TempDir dir;
  const std::string src = SaveTestCheckpoint(dir / "ck", 4, TestConfig(kPlanA4));
  ReshardOptions o;
  o.world_size = 2;
  o.has_plan = true;
  // In place: the output directory is the source's own, so its step exists.
  ASSERT_NO_FATAL_FAILURE(ExpectRefused(Reshard(src, dir / "ck", o).status(), {"exists"}));
  o.overwrite = true;
  auto r = Reshard(src, dir / "ck", o);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->path, src);
  auto m = ReadManifest(src);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->world_size(), 2);
  ExpectOracle(src);
  RestoreAndCheck(src, 2, TestConfig(""));
  int entries = 0;
  for (const auto& e : fs::directory_iterator(dir / "ck")) {
    ++entries;
    EXPECT_EQ(e.path().filename(), "step-000000000120");
  }
  EXPECT_EQ(entries, 1);
}

TEST(Reshard, WorksWithFewerOpenFilesThanShards) {
  // Every table's pieces are spread over all ranks' files; with at most 2 descriptors open the
  // readers and writers reopen files as they go.
  TempDir dir;
  const std::string src = SaveTestCheckpoint(dir / "src", 4, TestConfig(kPlanA4));
  ::setenv("LOOM_CKPT_MAX_OPEN_FILES", "2", 1);
  ReshardOptions o;
  o.world_size = 3;
  o.has_plan = true;
  o.plan = PlanOf(kPlanC3);
  o.block_bytes = 200;
  auto r = Reshard(src, dir / "out", o);
  ::unsetenv("LOOM_CKPT_MAX_OPEN_FILES");
  ASSERT_TRUE(r.ok()) << r.status();
  ExpectOracle(r->path);
  RestoreAndCheck(r->path, 3, TestConfig(kPlanC3));
}

// ---------------------------------------------------------------------------------------------
// Reader positions.

TEST(ReshardPositions, RestartEpochKeepsExactPositionsAndAddsEpochStarts) {
  TempDir dir;
  const std::string src = SaveTestCheckpoint(dir / "src", 4, TestConfig(kPlanA4), 5);
  ReshardOptions o;
  o.world_size = 2;
  o.has_plan = true;
  auto r = Reshard(src, dir / "out", o);
  ASSERT_TRUE(r.ok()) << r.status();
  auto m = ReadManifest(r->path);
  ASSERT_TRUE(m.ok());
  ASSERT_EQ(m->ranks_size(), 2);
  for (int rank = 0; rank < 2; ++rank) {
    const proto::RankState& rs = m->ranks(rank);
    ASSERT_EQ(rs.data_slices_size(), 3);  // slices 2r, 2r+1 of 4 (exact) and r of 2
    for (int k = 0; k < 2; ++k) {
      const auto& exact = rs.data_slices(k);
      EXPECT_EQ(exact.slice(), 2 * rank + k);
      EXPECT_EQ(exact.num_slices(), 4);
      EXPECT_EQ(exact.position().rows_in_epoch(), 5);
      EXPECT_EQ(exact.position().world_size(), 4);
    }
    const auto& fresh = rs.data_slices(2);
    EXPECT_EQ(fresh.slice(), rank);
    EXPECT_EQ(fresh.num_slices(), 2);
    EXPECT_EQ(fresh.position().epoch(), 2);
    EXPECT_EQ(fresh.position().rows_in_epoch(), 0);
    EXPECT_EQ(fresh.position().chunk_cursor(), 0);
    EXPECT_EQ(fresh.position().window_offset(), 0);
    EXPECT_EQ(fresh.position().rank(), rank);
    EXPECT_EQ(fresh.position().world_size(), 2);
    EXPECT_EQ(fresh.position().seed(), 77u);
    EXPECT_EQ(fresh.position().data_fingerprint(), 0xfeedbeefull);
    EXPECT_EQ(fresh.position().shuffle_buffer_rows(), 16);
  }
  EXPECT_EQ(m->trainer().epoch(), 2);
  EXPECT_EQ(m->trainer().step(), testing::kTestStep);
  bool noted = false;
  for (const auto& n : r->notes) noted = noted || n.find("restart epoch 2") != std::string::npos;
  EXPECT_TRUE(noted);
  // A trainer reading 2 slices and one reading 4 both find their positions.
  RestoreAndCheck(r->path, 2, TestConfig(""), 2);
  RestoreAndCheck(r->path, 2, TestConfig(""), 4);
}

TEST(ReshardPositions, NextEpochAdvancesTheEpoch) {
  TempDir dir;
  const std::string src = SaveTestCheckpoint(dir / "src", 4, TestConfig(kPlanA4), 5);
  ReshardOptions o;
  o.world_size = 3;
  o.has_plan = true;
  o.positions = PositionPolicy::kNextEpoch;
  auto r = Reshard(src, dir / "out", o);
  ASSERT_TRUE(r.ok()) << r.status();
  auto m = ReadManifest(r->path);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->trainer().epoch(), 3);
  for (int rank = 0; rank < 3; ++rank) {
    ASSERT_EQ(m->ranks(rank).data_slices_size(), 1);  // 4 is not a multiple of 3
    EXPECT_EQ(m->ranks(rank).data_slices(0).position().epoch(), 3);
    EXPECT_EQ(m->ranks(rank).data_slices(0).slice(), rank);
  }
  RestoreAndCheck(r->path, 3, TestConfig(""), 3);
}

TEST(ReshardPositions, AtAnEpochBoundaryBothPoliciesAreExact) {
  TempDir dir;
  const std::string src = SaveTestCheckpoint(dir / "src", 4, TestConfig(kPlanA4), 0);
  ReshardOptions o;
  o.world_size = 3;
  o.has_plan = true;
  o.positions = PositionPolicy::kNextEpoch;
  auto r = Reshard(src, dir / "out", o);
  ASSERT_TRUE(r.ok()) << r.status();
  auto m = ReadManifest(r->path);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->trainer().epoch(), 2);  // not advanced: nothing of epoch 2 was read yet
  EXPECT_EQ(m->ranks(0).data_slices(0).position().epoch(), 2);
}

TEST(ReshardPositions, SameWorldSizeKeepsPositionsExactly) {
  TempDir dir;
  const std::string src = SaveTestCheckpoint(dir / "src", 4, TestConfig(kPlanA4), 5);
  ReshardOptions o;
  o.world_size = 4;
  o.has_plan = true;
  o.plan = PlanOf(kPlanValidAt2);
  auto r = Reshard(src, dir / "out", o);
  ASSERT_TRUE(r.ok()) << r.status();
  auto before = ReadManifest(src);
  auto after = ReadManifest(r->path);
  ASSERT_TRUE(before.ok() && after.ok());
  for (int rank = 0; rank < 4; ++rank) {
    EXPECT_EQ(after->ranks(rank).SerializeAsString(), before->ranks(rank).SerializeAsString());
  }
}

// ---------------------------------------------------------------------------------------------
// Merge.

TEST(Merge, OneRankEveryTableWholeOnRankZero) {
  TempDir dir;
  const std::string src = SaveTestCheckpoint(dir / "src", 4, TestConfig(kPlanA4));
  auto r = Merge(src, dir / "out", ReshardOptions());
  ASSERT_TRUE(r.ok()) << r.status();
  auto m = ReadManifest(r->path);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->world_size(), 1);
  std::set<std::string> files;
  for (const auto& f : m->files()) files.insert(f.name());
  EXPECT_EQ(files, (std::set<std::string>{"dense.bin", "embedding-r00000.bin"}));
  for (const auto& t : m->tables()) {
    EXPECT_TRUE(t.strategy() == proto::EmbeddingPiece::TABLE_WISE ||
                t.strategy() == proto::EmbeddingPiece::DATA_PARALLEL)
        << t.name();
  }
  proto::LoomConfig cfg;
  ASSERT_TRUE(config::ParseTextProto(m->config_text(), "config_text", &cfg).ok());
  EXPECT_EQ(cfg.embedding().sharding_overrides_size(), 0);
  ExpectOracle(r->path);
  RestoreAndCheck(r->path, 1, TestConfig(""));
}

// ---------------------------------------------------------------------------------------------
// Diff.

TEST(Diff, AResharedCheckpointIsIdenticalToItsSource) {
  TempDir dir;
  const std::string src = SaveTestCheckpoint(dir / "src", 4, TestConfig(kPlanA4));
  ReshardOptions o;
  o.world_size = 3;
  o.has_plan = true;
  o.plan = PlanOf(kPlanC3);
  auto r = Reshard(src, dir / "out", o);
  ASSERT_TRUE(r.ok()) << r.status();
  DiffOptions d;
  d.block_bytes = 500;
  auto diffs = DiffCheckpoints(src, r->path, d);
  ASSERT_TRUE(diffs.ok()) << diffs.status();
  EXPECT_EQ(diffs->size(), 15u);
  for (const TensorDiff& t : *diffs) {
    EXPECT_TRUE(t.identical()) << t.name << " " << t.note;
    EXPECT_EQ(t.max_abs_diff, 0.0) << t.name;
    EXPECT_NEAR(t.cosine, 1.0, 1e-12) << t.name;
    int64_t n = 1;
    for (int64_t s : t.shape) n *= s;
    EXPECT_EQ(t.numel, n) << t.name;
  }
  d.optimizer_state = false;
  diffs = DiffCheckpoints(src, r->path, d);
  ASSERT_TRUE(diffs.ok());
  EXPECT_EQ(diffs->size(), 6u);  // 2 dense parameters + 4 tables
}

// Writes a safetensors file holding every weight of the test model, `delta` added to element
// (row, col) of users' table.
void WriteWeights(const std::string& path, int64_t row, int64_t col, float delta) {
  SafetensorsWriter w;
  auto dense = [&](const std::string& name, const Shape& shape) {
    Tensor t = Tensor::Zeros(shape, DType::kF32);
    for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = Expected("dense/" + name, 0, i);
    w.Add(name, t.view());
  };
  dense("layers.0.norm.weight", Shape{6});
  dense("head.out.weight", Shape{1, 6});
  const std::vector<std::pair<std::string, std::vector<int64_t>>> tables = {
      {"users", {1000, 8}}, {"items", {501, 16}}, {"cats", {40, 8}}, {"tags", {37, 12}}};
  for (const auto& [name, shape] : tables) {
    Tensor t = Tensor::Zeros(Shape(shape), DType::kF32);
    for (int64_t g = 0; g < shape[0]; ++g) {
      for (int64_t c = 0; c < shape[1]; ++c) {
        t.data<float>()[g * shape[1] + c] = Expected("embedding/" + name + "/weight", g, c);
      }
    }
    if (name == "users") t.data<float>()[row * shape[1] + col] += delta;
    w.Add("embedding." + name + ".weight", t.view());
  }
  LOOM_CHECK_OK(w.Write(path));
}

TEST(Diff, ReportsMaxAbsoluteDifferenceAndCosine) {
  TempDir dir;
  const std::string src = SaveTestCheckpoint(dir / "src", 2, TestConfig(kPlanB2));
  WriteWeights(dir / "w.safetensors", 17, 3, 0.5f);
  auto r = ImportSafetensors(dir / "w.safetensors", src, dir / "out", ImportOptions());
  ASSERT_TRUE(r.ok()) << r.status();
  auto diffs = DiffCheckpoints(src, r->path, DiffOptions());
  ASSERT_TRUE(diffs.ok()) << diffs.status();
  // Oracle: one element changed by +0.5.
  double dot = 0, na = 0, nb = 0;
  const float a17 = Expected("embedding/users/weight", 17, 3);
  const float b17 = a17 + 0.5f;
  for (int64_t g = 0; g < 1000; ++g) {
    for (int64_t c = 0; c < 8; ++c) {
      const double x = Expected("embedding/users/weight", g, c);
      const double y = (g == 17 && c == 3) ? static_cast<double>(b17) : x;
      dot += x * y;
      na += x * x;
      nb += y * y;
    }
  }
  for (const TensorDiff& t : *diffs) {
    if (t.name == "embedding/users/weight") {
      EXPECT_EQ(t.num_different, 1);
      EXPECT_EQ(t.max_abs_diff, std::fabs(static_cast<double>(b17) - a17));
      EXPECT_NEAR(t.cosine, dot / std::sqrt(na * nb), 1e-12);
      EXPECT_LT(t.cosine, 1.0);
    } else {
      EXPECT_TRUE(t.identical()) << t.name;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Export.

TEST(Export, F32NamesValuesAndMetadata) {
  TempDir dir;
  const std::string src = SaveTestCheckpoint(dir / "src", 4, TestConfig(kPlanA4));
  ExportOptions o;
  o.block_bytes = 400;
  auto r = ExportSafetensors(src, dir / "model.safetensors", o);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->tensors, 6);
  // The core reader (an independent implementation) reads it.
  auto f = SafetensorsFile::Read(dir / "model.safetensors");
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->names(), (std::vector<std::string>{"embedding.cats.weight", "embedding.items.weight",
                                                  "embedding.tags.weight", "embedding.users.weight",
                                                  "head.out.weight", "layers.0.norm.weight"}));
  for (const char* table : {"users", "items", "cats", "tags"}) {
    auto t = f->Get(std::string("embedding.") + table + ".weight");
    ASSERT_TRUE(t.ok());
    const int64_t rows = t->shape()[0], d = t->shape()[1];
    int64_t bad = 0;
    for (int64_t g = 0; g < rows; ++g) {
      for (int64_t c = 0; c < d; ++c) {
        bad += t->data<float>()[g * d + c] !=
               Expected(std::string("embedding/") + table + "/weight", g, c);
      }
    }
    EXPECT_EQ(bad, 0) << table;
  }
  auto head = f->Get("head.out.weight");
  ASSERT_TRUE(head.ok());
  EXPECT_EQ(head->shape(), Shape({1, 6}));
  for (int i = 0; i < 6; ++i)
    EXPECT_EQ(head->data<float>()[i], Expected("dense/head.out.weight", 0, i));
  const auto& md = f->metadata();
  EXPECT_EQ(md.at("format"), "loom-export");
  EXPECT_EQ(md.at("model_type"), "interformer");
  EXPECT_EQ(md.at("step"), "120");
  EXPECT_EQ(md.at("world_size"), "4");
  EXPECT_EQ(md.at("quantization"), "none");
  EXPECT_NE(md.at("embedding_config").find("\"num_rows\""), std::string::npos);
  EXPECT_NE(md.at("model_config").find("\"embedding_dim\""), std::string::npos);
  // Existing output needs overwrite.
  auto again = ExportSafetensors(src, dir / "model.safetensors", o);
  EXPECT_FALSE(again.ok());
  o.overwrite = true;
  EXPECT_TRUE(ExportSafetensors(src, dir / "model.safetensors", o).ok());
}

TEST(Export, Bf16AndF16RoundToNearestEven) {
  TempDir dir;
  const std::string src = SaveTestCheckpoint(dir / "src", 2, TestConfig(kPlanB2));
  for (DType dt : {DType::kBF16, DType::kF16}) {
    ExportOptions o;
    o.dtype = dt;
    const std::string out = dir / (std::string(DTypeName(dt)) + ".safetensors");
    auto r = ExportSafetensors(src, out, o);
    ASSERT_TRUE(r.ok()) << r.status();
    auto f = SafetensorsReader::Open(out);
    ASSERT_TRUE(f.ok()) << f.status();
    const auto* e = f->Find("embedding.items.weight");
    ASSERT_NE(e, nullptr);
    EXPECT_EQ(e->dtype, dt == DType::kBF16 ? "BF16" : "F16");
    std::vector<uint16_t> bits(static_cast<size_t>(e->numel()));
    ASSERT_TRUE(f->Read(*e, 0, bits.size() * 2, bits.data()).ok());
    int64_t bad = 0;
    for (int64_t g = 0; g < 501; ++g) {
      for (int64_t c = 0; c < 16; ++c) {
        const float v = Expected("embedding/items/weight", g, c);
        const uint16_t want = dt == DType::kBF16 ? FloatToBf16(v).bits : FloatToF16(v).bits;
        bad += bits[static_cast<size_t>(g * 16 + c)] != want;
      }
    }
    EXPECT_EQ(bad, 0);
    // 2-byte tensors follow no 4-byte one: every tensor is aligned to its element size.
    for (const auto& x : f->entries())
      EXPECT_EQ(x.begin % static_cast<uint64_t>(x.element_size), 0u);
  }
}

// The documented bound: |w - (s q + b)| <= s / 2 + 4 max|w| 2^-24.
void ExpectInt8Bound(const float* w, int64_t d, const int8_t* q, float s, float b) {
  float lo = w[0], hi = w[0];
  for (int64_t c = 0; c < d; ++c) {
    lo = std::min(lo, w[c]);
    hi = std::max(hi, w[c]);
  }
  const double maxabs = std::max(std::fabs(lo), std::fabs(hi));
  EXPECT_NEAR(s, (static_cast<double>(hi) - lo) / 255.0, 1e-7 * (hi - lo) + 1e-30);
  std::vector<float> back(static_cast<size_t>(d));
  DequantizeRowInt8(q, d, s, b, back.data());
  for (int64_t c = 0; c < d; ++c) {
    EXPECT_LE(std::fabs(static_cast<double>(w[c]) - back[c]), s / 2.0 + 4 * maxabs * 0x1p-24)
        << "c=" << c << " w=" << w[c] << " lo=" << lo << " hi=" << hi;
  }
}

TEST(Int8Rowwise, QuantizationErrorIsAtMostHalfAStepPerRow) {
  std::mt19937 rng(11);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (int trial = 0; trial < 200; ++trial) {
    const int64_t d = 1 + trial % 70;
    const float scale = std::pow(10.0f, static_cast<float>(trial % 9) - 4.0f);
    const float shift = (trial % 3 == 0) ? 100.0f * scale : 0.0f;
    std::vector<float> w(static_cast<size_t>(d));
    for (auto& x : w) x = shift + scale * normal(rng);
    std::vector<int8_t> q(static_cast<size_t>(d));
    float s = 0, b = 0;
    QuantizeRowInt8(w.data(), d, q.data(), &s, &b);
    ExpectInt8Bound(w.data(), d, q.data(), s, b);
    // The extremes use the whole code range.
    if (d > 1 && s > 0) {
      EXPECT_EQ(*std::min_element(q.begin(), q.end()), -128);
      EXPECT_EQ(*std::max_element(q.begin(), q.end()), 127);
    }
  }
  // A constant row is exact.
  std::vector<float> c(5, -0.75f);
  std::vector<int8_t> q(5);
  float s = 1, b = 0;
  QuantizeRowInt8(c.data(), 5, q.data(), &s, &b);
  EXPECT_EQ(s, 0.0f);
  std::vector<float> back(5);
  DequantizeRowInt8(q.data(), 5, s, b, back.data());
  for (float x : back) EXPECT_EQ(x, -0.75f);
}

TEST(Export, Int8RowwiseTablesAndImportDequantizes) {
  TempDir dir;
  const std::string src = SaveTestCheckpoint(dir / "src", 4, TestConfig(kPlanA4));
  ExportOptions o;
  o.quantize_embeddings_int8 = true;
  auto r = ExportSafetensors(src, dir / "q.safetensors", o);
  ASSERT_TRUE(r.ok()) << r.status();
  auto f = SafetensorsReader::Open(dir / "q.safetensors");
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->Find("embedding.users.weight"), nullptr);
  const auto* q = f->Find("embedding.users.weight_int8");
  const auto* s = f->Find("embedding.users.weight_scale");
  const auto* b = f->Find("embedding.users.weight_bias");
  ASSERT_TRUE(q && s && b);
  EXPECT_EQ(q->dtype, "I8");
  EXPECT_EQ(q->shape, (std::vector<int64_t>{1000, 8}));
  EXPECT_EQ(s->shape, (std::vector<int64_t>{1000}));
  EXPECT_EQ(b->dtype, "F32");
  std::vector<int8_t> qv(8000);
  std::vector<float> sv(1000), bv(1000);
  ASSERT_TRUE(f->Read(*q, 0, qv.size(), qv.data()).ok());
  ASSERT_TRUE(f->Read(*s, 0, 4000, sv.data()).ok());
  ASSERT_TRUE(f->Read(*b, 0, 4000, bv.data()).ok());
  for (int64_t g = 0; g < 1000; ++g) {
    std::vector<float> w(8);
    for (int c = 0; c < 8; ++c) w[c] = Expected("embedding/users/weight", g, c);
    ExpectInt8Bound(w.data(), 8, qv.data() + g * 8, sv[g], bv[g]);
    if (::testing::Test::HasFailure()) break;
  }
  EXPECT_EQ(f->metadata().at("quantization"), "int8-rowwise");
  // Import brings the dequantized table back.
  auto imp = ImportSafetensors(dir / "q.safetensors", src, dir / "out", ImportOptions());
  ASSERT_TRUE(imp.ok()) << imp.status();
  auto ck = CheckpointSource::Open(imp->path);
  ASSERT_TRUE(ck.ok());
  auto bytes = (*ck)->ReadAll(*(*ck)->Find("embedding/users/weight"));
  ASSERT_TRUE(bytes.ok());
  const float* got = reinterpret_cast<const float*>(bytes->data());
  int64_t bad = 0;
  for (int64_t g = 0; g < 1000; ++g) {
    float want[8];
    DequantizeRowInt8(qv.data() + g * 8, 8, sv[g], bv[g], want);
    for (int c = 0; c < 8; ++c) bad += got[g * 8 + c] != want[c];
  }
  EXPECT_EQ(bad, 0);
}

// ---------------------------------------------------------------------------------------------
// Import.

TEST(Import, ExportThenImportIsTheIdentity) {
  TempDir dir;
  const std::string src = SaveTestCheckpoint(dir / "src", 4, TestConfig(kPlanA4));
  ASSERT_TRUE(ExportSafetensors(src, dir / "m.safetensors", ExportOptions()).ok());
  ImportOptions o;
  o.block_bytes = 333;
  auto r = ImportSafetensors(dir / "m.safetensors", src, dir / "out", o);
  ASSERT_TRUE(r.ok()) << r.status();
  auto diffs = DiffCheckpoints(src, r->path, DiffOptions());
  ASSERT_TRUE(diffs.ok());
  for (const TensorDiff& t : *diffs) EXPECT_TRUE(t.identical()) << t.name;
  RestoreAndCheck(r->path, 4, TestConfig(kPlanA4));
}

TEST(Import, ResetTrainingStateStartsAfresh) {
  TempDir dir;
  const std::string src = SaveTestCheckpoint(dir / "src", 2, TestConfig(kPlanB2));
  WriteWeights(dir / "w.safetensors", 0, 0, 0.0f);
  ImportOptions o;
  o.reset_training_state = true;
  auto r = ImportSafetensors(dir / "w.safetensors", src, dir / "out", o);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->path, dir / "out/step-000000000000");
  auto m = ReadManifest(r->path);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->step(), 0);
  EXPECT_EQ(m->trainer().step(), 0);
  EXPECT_EQ(m->trainer().samples_seen(), 0);
  EXPECT_EQ(m->dense_optimizer().step(), 0);
  EXPECT_EQ(m->rng().next_step(), 0);
  for (const auto& rs : m->ranks()) {
    for (const auto& d : rs.data_slices()) {
      EXPECT_EQ(d.position().epoch(), 0);
      EXPECT_EQ(d.position().rows_in_epoch(), 0);
    }
  }
  auto ck = CheckpointSource::Open(r->path);
  ASSERT_TRUE(ck.ok());
  for (const GlobalTensor& gt : (*ck)->tensors()) {
    auto bytes = (*ck)->ReadAll(gt);
    ASSERT_TRUE(bytes.ok());
    const bool weight = gt.kind == proto::TensorEntry::DENSE_PARAMETER ||
                        gt.kind == proto::TensorEntry::EMBEDDING_WEIGHT;
    if (weight) continue;
    const float want = gt.slot == "adagrad_sum" ? 0.25f : 0.0f;  // users' initial accumulator
    int64_t bad = 0;
    for (size_t i = 0; i < bytes->size(); i += 4) {
      if (gt.dtype == DType::kI32) {
        int32_t v;
        std::memcpy(&v, bytes->data() + i, 4);
        bad += v != 0;
      } else {
        float v;
        std::memcpy(&v, bytes->data() + i, 4);
        bad += v != want;
      }
    }
    EXPECT_EQ(bad, 0) << gt.name;
  }
  auto users = (*ck)->ReadAll(*(*ck)->Find("embedding/users/weight"));
  ASSERT_TRUE(users.ok());
  EXPECT_EQ(reinterpret_cast<const float*>(users->data())[17 * 8 + 3],
            Expected("embedding/users/weight", 17, 3));
}

TEST(Import, NamesMissingUnknownAndMisshapenTensors) {
  TempDir dir;
  const std::string src = SaveTestCheckpoint(dir / "src", 2, TestConfig(kPlanB2));
  {
    SafetensorsWriter w;
    w.Add("head.out.weight", Tensor::Zeros(Shape{1, 7}, DType::kF32).view());
    w.Add("not.a.parameter", Tensor::Zeros(Shape{3}, DType::kF32).view());
    LOOM_CHECK_OK(w.Write(dir / "bad.safetensors"));
  }
  ASSERT_NO_FATAL_FAILURE(ExpectRefused(
      ImportSafetensors(dir / "bad.safetensors", src, dir / "out", ImportOptions()).status(),
      {"head.out.weight is (1, 7) in bad.safetensors, the checkpoint's is (1, 6)",
       "lacks layers.0.norm.weight", "embedding.users.weight", "not.a.parameter"},
      dir / "out"));
  // Allowed partial import: only head.out.weight replaced (with the right shape).
  {
    SafetensorsWriter w;
    Tensor t = Tensor::Zeros(Shape{1, 6}, DType::kF64);
    for (int i = 0; i < 6; ++i) t.data<double>()[i] = 0.125 * i;
    w.Add("head.out.weight", t.view());
    w.Add("extra", Tensor::Zeros(Shape{2}, DType::kF32).view());
    LOOM_CHECK_OK(w.Write(dir / "part.safetensors"));
  }
  ImportOptions o;
  o.allow_missing = true;
  o.ignore_unknown = true;
  auto r = ImportSafetensors(dir / "part.safetensors", src, dir / "out", o);
  ASSERT_TRUE(r.ok()) << r.status();
  auto diffs = DiffCheckpoints(src, r->path, DiffOptions());
  ASSERT_TRUE(diffs.ok());
  for (const TensorDiff& t : *diffs) {
    EXPECT_EQ(t.identical(), t.name != "dense/head.out.weight") << t.name;
  }
}

// ---------------------------------------------------------------------------------------------
// Damaged checkpoints: an error naming the file and the fault, never a crash, nothing written,
// the damaged source left as it was.

struct Damaged {
  TempDir dir;
  std::string src;
  proto::CheckpointManifest manifest;
  Damaged() {
    src = SaveTestCheckpoint(dir / "src", 4, TestConfig(kPlanA4));
    manifest = *ReadManifest(src);
  }
  // A byte in the middle of the first non-empty tensor stored in `file`.
  uint64_t ByteInTensor(const std::string& file, std::string* tensor) const {
    for (const auto& e : manifest.tensors()) {
      if (e.file() == file && e.size_bytes() > 0) {
        *tensor = e.name();
        return e.offset() + e.size_bytes() / 2;
      }
    }
    return 0;
  }
  // A byte between two tensors (alignment padding) of some file: in no tensor, but in the
  // file's CRC.
  uint64_t PaddingByte(std::string* file) const {
    for (const auto& f : manifest.files()) {
      std::vector<std::pair<uint64_t, uint64_t>> spans;
      for (const auto& e : manifest.tensors()) {
        if (e.file() == f.name()) spans.push_back({e.offset(), e.offset() + e.size_bytes()});
      }
      std::sort(spans.begin(), spans.end());
      for (size_t i = 1; i < spans.size(); ++i) {
        if (spans[i].first > spans[i - 1].second) {
          *file = f.name();
          return spans[i - 1].second;
        }
      }
    }
    return 0;
  }
  // The size of `file` the manifest records.
  uint64_t FileSize(const std::string& file) const {
    for (const auto& f : manifest.files()) {
      if (f.name() == file) return f.size_bytes();
    }
    return 0;
  }
  void FlipByte(const std::string& file, uint64_t at) const {
    std::fstream f(src + "/" + file, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(static_cast<std::streamoff>(at));
    char c = 0;
    f.read(&c, 1);
    c = static_cast<char>(c ^ 0x10);
    f.seekp(static_cast<std::streamoff>(at));
    f.write(&c, 1);
  }
  // Flips a byte inside a tensor of `file`; *tensor names that tensor.
  void FlipTensorByte(const std::string& file, std::string* tensor) const {
    const uint64_t at = ByteInTensor(file, tensor);
    ASSERT_GT(at, 0u) << file;
    FlipByte(file, at);
  }
  // Replaces the manifest with `m`, its CRC line rewritten so that it reads as intact.
  void RewriteManifest(const proto::CheckpointManifest& m) const {
    std::string bytes;
    m.SerializeToString(&bytes);
    char line[64];
    std::snprintf(line, sizeof(line), "crc32c=%08x size=%zu\n",
                  data::Crc32c(bytes.data(), bytes.size()), bytes.size());
    std::ofstream(src + "/manifest.pb", std::ios::binary) << bytes;
    std::ofstream(src + "/manifest.crc32c") << line;
  }
  // Every tool refuses with an error mentioning `want` (all substrings), writes nothing and
  // leaves every file of the source as it was.
  void ExpectEveryToolFails(const std::vector<std::string>& want) const {
    const std::map<std::string, std::string> before = FilesOf(src);
    ReshardOptions o;
    o.world_size = 2;
    o.has_plan = true;
    ASSERT_NO_FATAL_FAILURE(
        ExpectRefused(Reshard(src, dir / "out", o).status(), want, dir / "out"));
    ASSERT_NO_FATAL_FAILURE(
        ExpectRefused(Merge(src, dir / "out", ReshardOptions()).status(), want, dir / "out"));
    ASSERT_NO_FATAL_FAILURE(
        ExpectRefused(ExportSafetensors(src, dir / "x/model.safetensors", ExportOptions()).status(),
                      want, dir / "x"));
    ASSERT_NO_FATAL_FAILURE(ExpectRefused(DiffCheckpoints(src, src, DiffOptions()).status(), want));
    EXPECT_TRUE(FilesOf(src) == before) << "a tool changed the damaged source " << src;
  }
};

// One damage per row: `damage` breaks d's checkpoint and sets what every tool's error must
// mention.
struct DamageCase {
  const char* name;
  void (*damage)(const Damaged& d, std::vector<std::string>* want);
};

void PrintTo(const DamageCase& c, std::ostream* os) { *os << c.name; }

const DamageCase kDamageCases[] = {
    {"ACorruptedByteIsAChecksumErrorNamingTheFileAndTensor",
     [](const Damaged& d, std::vector<std::string>* want) {
       std::string tensor;
       d.FlipTensorByte("embedding-r00001.bin", &tensor);
       *want = {"step-000000000120/embedding-r00001.bin", "tensor " + tensor, "CRC-32C",
                "the manifest says", "(corrupted)"};
     }},
    {"ACorruptedDenseByteToo",
     [](const Damaged& d, std::vector<std::string>* want) {
       std::string tensor;
       d.FlipTensorByte("dense.bin", &tensor);
       *want = {"step-000000000120/dense.bin", "tensor " + tensor, "(corrupted)"};
     }},
    {"ACorruptedPaddingByteIsFoundToo",
     [](const Damaged& d, std::vector<std::string>* want) {
       std::string file;
       const uint64_t at = d.PaddingByte(&file);
       ASSERT_GT(at, 0u);
       d.FlipByte(file, at);
       *want = {"step-000000000120/" + file, "corrupted outside the tensors"};
     }},
    {"ATruncatedFileIsNamedWithItsExpectedSize",
     [](const Damaged& d, std::vector<std::string>* want) {
       const uint64_t size = d.FileSize("embedding-r00002.bin");
       ASSERT_GT(size, 10u);
       fs::resize_file(d.src + "/embedding-r00002.bin", size - 10);
       *want = {"step-000000000120/embedding-r00002.bin: size " + std::to_string(size - 10) +
                ", the manifest says " + std::to_string(size) + " (truncated)"};
     }},
    {"AMissingShardFileIsNamed",
     [](const Damaged& d, std::vector<std::string>* want) {
       fs::remove(d.src + "/embedding-r00003.bin");
       *want = {"step-000000000120/embedding-r00003.bin: missing (written by rank 3)"};
     }},
    {"ACorruptedManifestIsNamed",
     [](const Damaged& d, std::vector<std::string>* want) {
       d.FlipByte("manifest.pb", 20);
       *want = {"step-000000000120/manifest.pb", "(corrupted)"};
     }},
    // An intact manifest (CRC rewritten) that lists no piece for some rows: the tiling check
    // names the table and the rows.
    {"AManifestLackingAShardIsNamed",
     [](const Damaged& d, std::vector<std::string>* want) {
       proto::CheckpointManifest m = d.manifest;
       auto* tensors = m.mutable_tensors();
       for (int i = 0; i < tensors->size(); ++i) {
         if (tensors->Get(i).name() == "embedding/users/shard2/weight") {
           tensors->DeleteSubrange(i, 1);
           break;
         }
       }
       d.RewriteManifest(m);
       *want = {"table 'users' weight", "no piece holds rows 2 mod 4"};
     }},
};

class DamagedTest : public ::testing::TestWithParam<DamageCase> {};

TEST_P(DamagedTest, EveryToolNamesTheFaultWritesNothingAndKeepsTheSource) {
  Damaged d;
  std::vector<std::string> want;
  ASSERT_NO_FATAL_FAILURE(GetParam().damage(d, &want));
  d.ExpectEveryToolFails(want);
}

INSTANTIATE_TEST_SUITE_P(Cases, DamagedTest, ::testing::ValuesIn(kDamageCases),
                         [](const ::testing::TestParamInfo<DamageCase>& p) {
                           return p.param.name;
                         });

TEST(Safetensors, DamagedFilesAreNamed) {
  TempDir dir;
  const std::string src = SaveTestCheckpoint(dir / "src", 2, TestConfig(kPlanB2));
  ASSERT_TRUE(ExportSafetensors(src, dir / "m.safetensors", ExportOptions()).ok());
  const uint64_t size = fs::file_size(dir / "m.safetensors");
  fs::copy_file(dir / "m.safetensors", dir / "t.safetensors");
  fs::resize_file(dir / "t.safetensors", size - 4);
  std::ofstream(dir / "j.safetensors", std::ios::binary)
      << std::string("\x05\0\0\0\0\0\0\0{\"a\":", 13);
  // One row per damaged file: what the reader's error must mention. Importing it fails too
  // and writes nothing.
  const std::vector<std::pair<std::string, std::vector<std::string>>> cases = {
      {dir / "t.safetensors", {dir / "t.safetensors", "truncated"}},  // data cut short
      {dir / "j.safetensors", {"header JSON"}},                       // header cut mid-JSON
  };
  for (const auto& [file, want] : cases) {
    SCOPED_TRACE(file);
    ASSERT_NO_FATAL_FAILURE(ExpectRefused(SafetensorsReader::Open(file).status(), want));
    ASSERT_NO_FATAL_FAILURE(ExpectRefused(
        ImportSafetensors(file, src, dir / "out", ImportOptions()).status(), {file}, dir / "out"));
  }
}

// ---------------------------------------------------------------------------------------------
// The command line.

int RunCli(const std::string& sub, std::vector<std::string> args) {
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  return RunCkptCommand(sub, static_cast<int>(argv.size()), argv.data());
}

TEST(Cli, SubcommandsExitCodes) {
  TempDir dir;
  const std::string src = SaveTestCheckpoint(dir / "src", 4, TestConfig(kPlanA4));
  for (const char* sub : {"reshard", "merge", "export", "import", "diff"}) {
    EXPECT_TRUE(IsCkptConvertCommand(sub));
    EXPECT_EQ(RunCli(sub, {"--help"}), 0) << sub;
    EXPECT_EQ(RunCli(sub, {"--no-such-flag"}), 2) << sub;
  }
  EXPECT_FALSE(IsCkptConvertCommand("inspect"));
  EXPECT_EQ(RunCli("reshard", {src, "--out", dir / "o"}), 2);  // no --world-size
  EXPECT_EQ(RunCli("reshard", {src, "--world-size", "2", "--out", dir / "o", "--quiet"}), 1)
      << "the config's overrides name rank 3";
  { std::ofstream(dir / "plan.pbtxt") << kPlanValidAt2; }
  EXPECT_EQ(RunCli("reshard", {src, "--world-size=2", "--plan", dir / "plan.pbtxt", "--out",
                               dir / "o", "--quiet"}),
            0);
  EXPECT_EQ(RunCli("reshard", {src, "--world-size", "3", "--plan", "auto", "--dry-run"}), 0);
  EXPECT_EQ(RunCli("diff", {src, dir / "o", "--quiet"}), 0);
  EXPECT_EQ(RunCli("merge", {dir / "o", "--out", dir / "m", "--quiet"}), 0);
  EXPECT_EQ(RunCli("export", {dir / "m", "--format", "safetensors", "--out", dir / "m.st",
                              "--dtype", "bf16", "--quiet"}),
            0);
  EXPECT_EQ(RunCli("export", {dir / "m", "--format", "onnx", "--out", dir / "x"}), 2);
  EXPECT_EQ(RunCli("import", {dir / "m.st", "--template", src, "--out", dir / "i", "--quiet"}), 0);
  // bf16 round trip: weights differ from the source.
  EXPECT_EQ(RunCli("diff", {src, dir / "i", "--quiet", "--weights-only", "--only-different"}), 1);
  EXPECT_EQ(RunCli("diff", {src, dir / "i", "--quiet", "--weights-only", "--atol", "0.01"}), 0);
  EXPECT_EQ(RunCli("diff", {src, dir / "nothing-here", "--quiet"}), 2);
}

}  // namespace
}  // namespace loom::train
