// Round trips of every column kind through the writer and the shard reader, and the damage
// checks: corrupted and truncated blocks are reported with the file and block.
#include "csrc/data/format.h"

#include <cmath>
#include <filesystem>
#include <functional>

#include <gtest/gtest.h>

#include "csrc/data/shard_file.h"
#include "csrc/data/writer.h"
#include "tests/data/data_test_util.h"

namespace loom::data {
namespace {

using testing::AllKindsSchema;
using testing::ContainsAll;
using testing::MakeExample;
using testing::TempDir;

// Writes rows [0, n) of AllKindsSchema into dir; returns the files.
std::vector<std::string> WriteRows(const std::string& dir, int64_t n, int64_t block_rows,
                                   int64_t shard_rows) {
  const proto::DataSchema schema = AllKindsSchema();
  WriterOptions options;
  options.block_rows = block_rows;
  options.shard_rows = shard_rows;
  options.producer = "format_test";
  auto w = DatasetWriter::Create(dir, schema, options);
  EXPECT_TRUE(w.ok()) << w.status();
  Example ex;
  for (int64_t r = 0; r < n; ++r) {
    MakeExample(schema, r, &ex);
    EXPECT_TRUE((*w)->Add(ex).ok());
  }
  EXPECT_TRUE((*w)->Close().ok());
  return (*w)->files();
}

TEST(FormatTest, RoundTripsEveryColumnKindAcrossBlocksAndShards) {
  TempDir tmp;
  const proto::DataSchema schema = AllKindsSchema();
  const int64_t n = 230;
  const auto files = WriteRows(tmp.path(), n, /*block_rows=*/16, /*shard_rows=*/100);
  ASSERT_EQ(files.size(), 3u);  // 100 + 100 + 30 rows
  int64_t row = 0;
  Example want, got;
  std::string scratch;
  DecodedBlock block;
  for (size_t i = 0; i < files.size(); ++i) {
    auto f = ShardFile::Open(files[i]);
    ASSERT_TRUE(f.ok()) << f.status();
    EXPECT_EQ((*f)->header().producer(), "format_test");
    EXPECT_EQ((*f)->header().shard_index(), static_cast<int64_t>(i));
    EXPECT_TRUE(CheckSameLayout((*f)->schema(), schema).ok());
    EXPECT_EQ((*f)->num_blocks(), i < 2 ? 7 : 2);  // ceil(100 / 16), ceil(30 / 16)
    for (int64_t b = 0; b < (*f)->num_blocks(); ++b) {
      ASSERT_TRUE((*f)->ReadBlock(b, &scratch, &block).ok());
      for (int64_t r = 0; r < block.rows; ++r, ++row) {
        MakeExample(schema, row, &want);
        block.GetExample(r, &got);
        testing::ExpectSameExample(want, got, "row " + std::to_string(row));
      }
    }
    EXPECT_TRUE((*f)->Verify().ok());
  }
  EXPECT_EQ(row, n);
}

TEST(FormatTest, FooterKeepsIdStatisticsAndLabelSum) {
  TempDir tmp;
  const proto::DataSchema schema = AllKindsSchema();
  const auto files = WriteRows(tmp.path(), 50, 8, 0);
  ASSERT_EQ(files.size(), 1u);
  auto f = ShardFile::Open(files[0]);
  ASSERT_TRUE(f.ok());
  Example ex;
  double label_sum = 0;
  int64_t max_wide = -1, num_tags = 0;
  for (int64_t r = 0; r < 50; ++r) {
    MakeExample(schema, r, &ex);
    label_sum += ex.label;
    max_wide = std::max(max_wide, ex.sparse_ids[2][0]);
    num_tags += static_cast<int64_t>(ex.sparse_ids[3].size());
  }
  const auto& footer = (*f)->footer();
  EXPECT_EQ(footer.rows(), 50);
  EXPECT_EQ(footer.label_sum(), label_sum);
  ASSERT_EQ(footer.id_stats_size(), schema.sparse_size() + schema.sequence_size());
  EXPECT_EQ(footer.id_stats(0).feature(), "row");
  EXPECT_EQ(footer.id_stats(0).max_id(), 49);
  EXPECT_EQ(footer.id_stats(2).max_id(), max_wide);
  EXPECT_EQ(footer.id_stats(3).num_ids(), num_tags);
}

TEST(FormatTest, OutputIsByteIdenticalAcrossRuns) {
  TempDir a, b;
  const auto fa = WriteRows(a.path(), 70, 9, 0);
  const auto fb = WriteRows(b.path(), 70, 9, 0);
  EXPECT_EQ(testing::ReadFile(fa[0]), testing::ReadFile(fb[0]));
}

TEST(FormatTest, WriterRejectsInvalidExamplesNamingTheFeature) {
  TempDir tmp;
  const proto::DataSchema schema = AllKindsSchema();
  auto w = ShardWriter::Create(tmp / "x.loom", schema, WriterOptions());
  ASSERT_TRUE(w.ok());
  Example ex;
  struct Case {
    std::function<void(Example*)> spoil;
    std::vector<std::string> words;
  };
  const std::vector<Case> cases = {
      {[](Example* e) { e->sparse_ids[1] = {1000}; }, {"'item'", "1000", "vocabulary_size"}},
      {[](Example* e) { e->sparse_ids[0] = {-3}; }, {"'row'", "negative"}},
      {[](Example* e) {
         e->sparse_ids[1] = {1, 2};
       },
       {"'item'", "single-hot"}},
      {[](Example* e) {
         e->sparse_ids[4] = {1, 2, 3, 4, 5};
         e->sparse_weights[4].assign(5, 1.f);
       },
       {"'wtags'", "max_values"}},
      {[](Example* e) {
         e->sparse_ids[4] = {1};
         e->sparse_weights[4].clear();
       },
       {"'wtags'", "weights"}},
      {[](Example* e) {
         e->sequences[1] = {1, 2, 3, 4};
       },
       {"'clicks'", "T = 3"}},
      {[](Example* e) { e->label = 2.f; }, {"label"}},
      {[](Example* e) { e->dense[1] = std::nanf(""); }, {"'d1'", "finite"}},
  };
  for (const Case& c : cases) {
    MakeExample(schema, 5, &ex);
    c.spoil(&ex);
    Status s = (*w)->Add(ex);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
    EXPECT_TRUE(ContainsAll(s.message(), c.words));
    EXPECT_TRUE(ContainsAll(s.message(), {"x.loom", "row 0"}));
  }
  MakeExample(schema, 5, &ex);
  EXPECT_TRUE((*w)->Add(ex).ok());
  EXPECT_TRUE((*w)->Close().ok());
  auto f = ShardFile::Open(tmp / "x.loom");
  ASSERT_TRUE(f.ok());
  EXPECT_EQ((*f)->rows(), 1);
}

TEST(FormatTest, UnclosedWriterLeavesNoFileUnderTheFinalName) {
  TempDir tmp;
  {
    auto w = ShardWriter::Create(tmp / "x.loom", AllKindsSchema(), WriterOptions());
    ASSERT_TRUE(w.ok());
    Example ex;
    MakeExample(AllKindsSchema(), 0, &ex);
    ASSERT_TRUE((*w)->Add(ex).ok());
  }
  EXPECT_FALSE(std::filesystem::exists(tmp / "x.loom"));
  EXPECT_FALSE(std::filesystem::exists(tmp / "x.loom.tmp"));
}

// Flips one byte of block `b`'s payload.
void CorruptBlock(const std::string& path, int64_t b) {
  auto f = ShardFile::Open(path);
  ASSERT_TRUE(f.ok());
  const auto& info = (*f)->footer().block(static_cast<int>(b));
  std::string bytes = testing::ReadFile(path);
  bytes[info.offset() + kBlockHeaderBytes + info.bytes() / 3] ^= 0x20;
  testing::WriteFile(path, bytes);
}

TEST(FormatTest, CorruptedBlockFailsItsChecksumNamingFileAndBlock) {
  TempDir tmp;
  const auto files = WriteRows(tmp.path(), 64, 8, 0);
  CorruptBlock(files[0], 2);
  auto f = ShardFile::Open(files[0]);
  ASSERT_TRUE(f.ok()) << f.status();  // header and footer are intact
  std::string scratch;
  DecodedBlock block;
  EXPECT_TRUE((*f)->ReadBlock(1, &scratch, &block).ok());
  Status s = (*f)->ReadBlock(2, &scratch, &block);
  EXPECT_EQ(s.code(), StatusCode::kDataLoss);
  EXPECT_TRUE(ContainsAll(s.message(), {files[0], "block 2", "checksum mismatch"}));
  Status v = (*f)->Verify();
  EXPECT_TRUE(ContainsAll(v.message(), {files[0], "block 2", "checksum"}));
}

TEST(FormatTest, CorruptedBlockHeaderIsReported) {
  TempDir tmp;
  const auto files = WriteRows(tmp.path(), 64, 8, 0);
  auto f0 = ShardFile::Open(files[0]);
  ASSERT_TRUE(f0.ok());
  const uint64_t at = (*f0)->footer().block(4).offset();
  std::string bytes = testing::ReadFile(files[0]);
  bytes[at + 5] ^= 1;  // the row count
  testing::WriteFile(files[0], bytes);
  auto f = ShardFile::Open(files[0]);
  ASSERT_TRUE(f.ok());
  std::string scratch;
  DecodedBlock block;
  Status s = (*f)->ReadBlock(4, &scratch, &block);
  EXPECT_TRUE(ContainsAll(s.message(), {files[0], "block 4", "header checksum"}));
}

TEST(FormatTest, TruncatedBlockFailsAtOpenNamingFileAndBlock) {
  TempDir tmp;
  const auto files = WriteRows(tmp.path(), 64, 8, 0);
  uint64_t cut;
  {
    auto f = ShardFile::Open(files[0]);
    ASSERT_TRUE(f.ok());
    const auto& b3 = (*f)->footer().block(3);
    cut = b3.offset() + b3.bytes() / 2;
  }
  std::filesystem::resize_file(files[0], cut);
  auto f = ShardFile::Open(files[0]);
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().code(), StatusCode::kDataLoss);
  EXPECT_TRUE(ContainsAll(f.status().message(), {files[0], "block 3", "truncated"}));

  // Salvage keeps the three intact blocks and counts the lost one's rows.
  ShardFile::OpenOptions salvage;
  salvage.salvage = true;
  auto g = ShardFile::Open(files[0], salvage);
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_TRUE((*g)->salvaged());
  EXPECT_EQ((*g)->num_blocks(), 3);
  EXPECT_EQ((*g)->rows(), 24);
  EXPECT_EQ((*g)->lost_rows(), 8);
  EXPECT_TRUE((*g)->Verify().ok());
}

TEST(FormatTest, FileCutAtABlockBoundaryReportsTheMissingFooter) {
  TempDir tmp;
  const auto files = WriteRows(tmp.path(), 64, 8, 0);
  uint64_t cut;
  {
    auto f = ShardFile::Open(files[0]);
    ASSERT_TRUE(f.ok());
    cut = (*f)->footer().block(5).offset();
  }
  std::filesystem::resize_file(files[0], cut);
  auto f = ShardFile::Open(files[0]);
  ASSERT_FALSE(f.ok());
  EXPECT_TRUE(ContainsAll(f.status().message(), {files[0], "no footer", "after block 4"}));
}

TEST(FormatTest, DamagedFileHeaderAndForeignFilesAreRejected) {
  TempDir tmp;
  const auto files = WriteRows(tmp.path(), 10, 8, 0);
  std::string bytes = testing::ReadFile(files[0]);
  bytes[20] ^= 0x40;  // inside the ShardHeader
  testing::WriteFile(tmp / "bad_header.loom", bytes);
  auto f = ShardFile::Open(tmp / "bad_header.loom");
  ASSERT_FALSE(f.ok());
  EXPECT_TRUE(ContainsAll(f.status().message(), {"bad_header.loom", "file header checksum"}));

  testing::WriteFile(tmp / "text.loom", "label,a,b\n1,2,3\n");
  auto g = ShardFile::Open(tmp / "text.loom");
  EXPECT_TRUE(ContainsAll(g.status().message(), {"text.loom", "not a Loom data file"}));

  auto h = ShardFile::Open(tmp / "missing.loom");
  EXPECT_EQ(h.status().code(), StatusCode::kNotFound);
}

TEST(FormatTest, EmptyDataSetHasOneEmptyShard) {
  TempDir tmp;
  const auto files = WriteRows(tmp.path(), 0, 8, 0);
  ASSERT_EQ(files.size(), 1u);
  auto f = ShardFile::Open(files[0]);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ((*f)->rows(), 0);
  EXPECT_EQ((*f)->num_blocks(), 0);
}

TEST(SchemaTest, ValidationNamesTheField) {
  proto::DataSchema s = AllKindsSchema();
  EXPECT_TRUE(ValidateSchema(s).ok());
  proto::DataSchema t = s;
  t.mutable_sequence(1)->set_max_length(0);
  EXPECT_TRUE(ContainsAll(ValidateSchema(t).message(), {"sequence[1]", "'clicks'", "max_length"}));
  t = s;
  t.mutable_sparse(2)->set_name("item");
  EXPECT_TRUE(ContainsAll(ValidateSchema(t).message(), {"sparse[2]", "duplicate", "'item'"}));
  t = s;
  t.mutable_sequence(0)->set_shares_table_with("nope");
  EXPECT_TRUE(ContainsAll(ValidateSchema(t).message(), {"item_history", "'nope'"}));
  t = s;
  t.mutable_sparse(1)->set_weighted(true);
  EXPECT_TRUE(ContainsAll(ValidateSchema(t).message(), {"'item'", "weighted requires multi_hot"}));

  EXPECT_TRUE(CheckSameLayout(s, s).ok());
  t = s;
  t.mutable_sparse(1)->set_vocabulary_size(7);  // vocabulary sizes may differ
  EXPECT_TRUE(CheckSameLayout(s, t).ok());
  t.mutable_sequence(0)->set_max_length(9);
  EXPECT_TRUE(ContainsAll(CheckSameLayout(s, t).message(), {"item_history", "T=6", "T=9"}));
}

TEST(SchemaTest, TextProtoErrorsCarryFileLineAndColumn) {
  TempDir tmp;
  testing::WriteFile(tmp / "s.pbtxt", "dense { name: \"a\" }\nsparse { nme: \"b\" }\n");
  proto::DataSchema s;
  Status st = ReadTextProto(tmp / "s.pbtxt", &s);
  EXPECT_TRUE(ContainsAll(st.message(), {"s.pbtxt:2:", "nme"}));
}

}  // namespace
}  // namespace loom::data
