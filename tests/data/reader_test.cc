// The streaming reader: rank slicing, shuffle determinism, epochs, exact positions, bad blocks,
// bounded memory.
#include "csrc/data/reader.h"

#include <algorithm>
#include <filesystem>
#include <set>

#include <gtest/gtest.h>

#include "csrc/data/data_config.h"
#include "csrc/data/writer.h"
#include "tests/data/data_test_util.h"

namespace loom::data {
namespace {

using testing::AllKindsSchema;
using testing::ContainsAll;
using testing::MakeExample;
using testing::SameBatch;
using testing::TempDir;

constexpr int kRowFeature = 0;  // AllKindsSchema: sparse "row" holds the global row index

// Three files of 400, 350 and 251 rows (1001 rows), 64-row blocks.
class ReaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const proto::DataSchema schema = AllKindsSchema();
    int64_t row = 0;
    Example ex;
    for (int64_t n : {400, 350, 251}) {
      WriterOptions o;
      o.block_rows = 64;
      const std::string path = tmp_ / ("f" + std::to_string(files_.size()) + ".loom");
      auto w = ShardWriter::Create(path, schema, o);
      ASSERT_TRUE(w.ok());
      for (int64_t i = 0; i < n; ++i, ++row) {
        MakeExample(schema, row, &ex);
        ASSERT_TRUE((*w)->Add(ex).ok());
      }
      ASSERT_TRUE((*w)->Close().ok());
      files_.push_back(path);
    }
    total_ = row;
  }

  std::unique_ptr<Reader> Open(int rank, int world, const ReaderOptions& o) {
    auto r = Reader::Open(files_, nullptr, rank, world, o);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? std::move(r).value() : nullptr;
  }

  // Row indices of one epoch, in the order read.
  static std::vector<int64_t> ReadEpoch(Reader* r, int64_t batch_size) {
    std::vector<int64_t> rows;
    Batch b;
    while (r->Next(&b, batch_size)) {
      EXPECT_LE(b.size, batch_size);
      const auto& col = b.sparse[kRowFeature];
      EXPECT_EQ(col.offsets.size(), static_cast<size_t>(b.size + 1));
      rows.insert(rows.end(), col.ids.begin(), col.ids.end());
    }
    EXPECT_TRUE(r->status().ok()) << r->status();
    return rows;
  }

  TempDir tmp_;
  std::vector<std::string> files_;
  int64_t total_ = 0;
};

TEST_F(ReaderTest, BatchesHoldTheWrittenExamples) {
  ReaderOptions o;
  auto r = Open(0, 1, o);
  Batch b;
  Example want, got;
  int64_t row = 0;
  while (r->Next(&b, 100)) {
    ASSERT_EQ(b.labels.size(), static_cast<size_t>(b.size));
    ASSERT_EQ(b.dense.size(), static_cast<size_t>(b.size * 2));
    ASSERT_EQ(b.group_ids.size(), static_cast<size_t>(b.size));
    for (int64_t i = 0; i < b.size; ++i, ++row) {
      MakeExample(r->schema(), row, &want);
      ExampleFromBatch(b, i, &got);
      testing::ExpectSameExample(want, got, "row " + std::to_string(row));
    }
  }
  EXPECT_EQ(row, total_);
  EXPECT_EQ(r->rows_per_epoch(), total_);
  EXPECT_EQ(r->epoch(), 1);
}

TEST_F(ReaderTest, RanksCoverEveryRecordExactlyOnce) {
  for (int world : {1, 2, 4}) {
    for (int64_t shuffle : {int64_t{0}, int64_t{100}}) {
      ReaderOptions o;
      o.shuffle_buffer_rows = shuffle;
      std::vector<int64_t> all;
      for (int rank = 0; rank < world; ++rank) {
        auto r = Open(rank, world, o);
        const auto rows = ReadEpoch(r.get(), 37);
        EXPECT_EQ(static_cast<int64_t>(rows.size()), r->rows_per_epoch());
        EXPECT_EQ(r->rows_per_epoch(), r->SliceRows(rank));
        EXPECT_NEAR(static_cast<double>(rows.size()), static_cast<double>(total_) / world, 1.0);
        if (shuffle == 0) {
          // Data order: a contiguous, increasing range.
          for (size_t i = 1; i < rows.size(); ++i) ASSERT_EQ(rows[i], rows[i - 1] + 1);
        }
        all.insert(all.end(), rows.begin(), rows.end());
      }
      std::sort(all.begin(), all.end());
      ASSERT_EQ(static_cast<int64_t>(all.size()), total_) << world << " ranks";
      for (int64_t i = 0; i < total_; ++i) ASSERT_EQ(all[i], i) << world << " ranks";
    }
  }
}

TEST_F(ReaderTest, EvenSlicesGiveEveryRankTheSameCount) {
  ReaderOptions o;
  o.even_slices = true;
  std::set<int64_t> seen;
  for (int rank = 0; rank < 4; ++rank) {
    auto r = Open(rank, 4, o);
    const auto rows = ReadEpoch(r.get(), 50);
    EXPECT_EQ(static_cast<int64_t>(rows.size()), total_ / 4);
    for (int64_t x : rows) EXPECT_TRUE(seen.insert(x).second);
  }
  EXPECT_EQ(static_cast<int64_t>(seen.size()), total_ / 4 * 4);
}

TEST_F(ReaderTest, ShuffleIsDeterministicAndChangesPerEpochAndSeed) {
  ReaderOptions o;
  o.shuffle_buffer_rows = 150;
  o.seed = 7;
  auto a = Open(0, 1, o);
  auto b = Open(0, 1, o);
  const auto a1 = ReadEpoch(a.get(), 64), a2 = ReadEpoch(a.get(), 64);
  const auto b1 = ReadEpoch(b.get(), 64);
  EXPECT_EQ(a1, b1);
  EXPECT_NE(a1, a2);
  auto sorted = [](std::vector<int64_t> v) {
    std::sort(v.begin(), v.end());
    return v;
  };
  EXPECT_EQ(sorted(a1), sorted(a2));
  // Rows really move: few stay in place, and not only inside their block.
  int64_t in_place = 0;
  for (size_t i = 0; i < a1.size(); ++i) in_place += a1[i] == static_cast<int64_t>(i);
  EXPECT_LT(in_place, 20);
  o.seed = 8;
  auto c = Open(0, 1, o);
  EXPECT_NE(ReadEpoch(c.get(), 64), a1);
  // The batch size does not change the row order.
  auto d = Open(0, 1, [&] {
    ReaderOptions p = o;
    p.seed = 7;
    return p;
  }());
  EXPECT_EQ(ReadEpoch(d.get(), 5), a1);
}

TEST_F(ReaderTest, DropRemainderReturnsOnlyFullBatches) {
  ReaderOptions o;
  o.drop_remainder = true;
  auto r = Open(1, 2, o);
  Batch b;
  int64_t batches = 0;
  while (r->Next(&b, 64)) {
    EXPECT_EQ(b.size, 64);
    ++batches;
  }
  EXPECT_EQ(batches, r->rows_per_epoch() / 64);
  EXPECT_EQ(r->epoch(), 1);
}

// Reads `n` batches, returns them.
std::vector<Batch> ReadBatches(Reader* r, int n, int64_t batch_size) {
  std::vector<Batch> out;
  for (int i = 0; i < n; ++i) {
    Batch b;
    if (!r->Next(&b, batch_size)) b.size = -1;  // marks an epoch end
    out.push_back(std::move(b));
  }
  return out;
}

TEST_F(ReaderTest, SeekReproducesTheFollowingBatchesExactly) {
  for (int64_t shuffle : {int64_t{0}, int64_t{100}, int64_t{1000}}) {
    for (int skip : {0, 3, 7, 15, 16}) {  // 16 batches of 33 end the first epoch on rank 1
      ReaderOptions o;
      o.shuffle_buffer_rows = shuffle;
      o.seed = 11;
      auto a = Open(1, 2, o);
      ReadBatches(a.get(), skip, 33);
      proto::ReaderPosition pos = a->Position();
      std::string saved;
      ASSERT_TRUE(pos.SerializeToString(&saved));
      const auto want = ReadBatches(a.get(), 40, 33);  // crosses one or two epoch ends

      auto b = Open(1, 2, o);
      proto::ReaderPosition restored;
      ASSERT_TRUE(restored.ParseFromString(saved));
      ASSERT_TRUE(b->Seek(restored).ok());
      const auto got = ReadBatches(b.get(), 40, 33);
      for (size_t i = 0; i < want.size(); ++i) {
        ASSERT_TRUE(SameBatch(want[i], got[i]))
            << "shuffle " << shuffle << " skip " << skip << " batch " << i;
      }
      EXPECT_EQ(a->epoch(), b->epoch());
    }
  }
}

TEST_F(ReaderTest, SeekOnTheSameReaderGoesBack) {
  ReaderOptions o;
  o.shuffle_buffer_rows = 200;
  auto r = Open(0, 1, o);
  ReadBatches(r.get(), 2, 50);
  const auto pos = r->Position();
  const auto want = ReadBatches(r.get(), 30, 50);
  ASSERT_TRUE(r->Seek(pos).ok());
  const auto got = ReadBatches(r.get(), 30, 50);
  for (size_t i = 0; i < want.size(); ++i) ASSERT_TRUE(SameBatch(want[i], got[i])) << i;
}

TEST_F(ReaderTest, PositionNamesFileBlockAndRecordWithoutShuffle) {
  auto r = Open(0, 1, ReaderOptions());
  ReadBatches(r.get(), 1, 450);  // rows 0..449: the next is row 450 = file 1, row 50
  const auto p = r->Position();
  EXPECT_EQ(p.file_index(), 1);
  EXPECT_EQ(p.block(), 0);
  EXPECT_EQ(p.record(), 50);
  EXPECT_EQ(p.epoch(), 0);
  EXPECT_EQ(p.rows_in_epoch(), 450);
}

TEST_F(ReaderTest, SeekRejectsPositionsOfAnotherSetup) {
  ReaderOptions o;
  o.shuffle_buffer_rows = 100;
  auto a = Open(0, 2, o);
  const auto pos = a->Position();
  o.seed = 99;
  auto b = Open(0, 2, o);
  Status s = b->Seek(pos);
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition);
  EXPECT_TRUE(ContainsAll(s.message(), {"seed"}));
  auto c = Open(1, 2, ReaderOptions());
  EXPECT_TRUE(ContainsAll(c->Seek(pos).message(), {"rank"}));
  // Other files: same layout but different rows.
  auto d = Reader::Open({files_[0], files_[1]}, nullptr, 0, 2, [] {
    ReaderOptions p;
    p.shuffle_buffer_rows = 100;
    return p;
  }());
  ASSERT_TRUE(d.ok());
  EXPECT_TRUE(ContainsAll((*d)->Seek(pos).message(), {"data_fingerprint"}));
}

TEST_F(ReaderTest, MemoryIsBoundedByTheConfiguredBuffers) {
  ReaderOptions o;
  o.shuffle_buffer_rows = 128;  // two 64-row blocks per window
  o.prefetch_blocks = 3;
  auto r = Open(0, 1, o);
  for (int e = 0; e < 3; ++e) ReadEpoch(r.get(), 10);
  // prefetch + window blocks (up to 3 chunks when a window starts on a short chunk) + the
  // block being decoded.
  EXPECT_LE(r->blocks_alive(), 3 + 3 + 1);
  EXPECT_GE(r->blocks_alive(), 2);
}

TEST_F(ReaderTest, MaxIdComesFromTheFooters) {
  auto r = Open(0, 1, ReaderOptions());
  auto m = r->MaxId("row");
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(*m, total_ - 1);
  EXPECT_EQ(r->MaxId("nope").status().code(), StatusCode::kNotFound);
}

TEST_F(ReaderTest, SchemaMismatchNamesTheFile) {
  proto::DataSchema other = AllKindsSchema();
  other.mutable_sequence(1)->set_max_length(4);
  auto r = Reader::Open(files_, &other, 0, 1, ReaderOptions());
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(ContainsAll(r.status().message(), {files_[0], "clicks"}));
}

TEST_F(ReaderTest, ExpandFilePatternsSortsMatchesAndReportsMisses) {
  auto files = ExpandFilePatterns({tmp_ / "f*.loom"});
  ASSERT_TRUE(files.ok());
  EXPECT_EQ(*files, files_);
  EXPECT_EQ(ExpandFilePatterns({tmp_ / "g*.loom"}).status().code(), StatusCode::kNotFound);
  EXPECT_TRUE(
      ContainsAll(ExpandFilePatterns({tmp_ / "nope.loom"}).status().message(), {"nope.loom"}));
}

// Flips a byte in block `b` of `path`.
void Corrupt(const std::string& path, int b) {
  auto f = ShardFile::Open(path);
  ASSERT_TRUE(f.ok());
  const auto& info = (*f)->footer().block(b);
  std::string bytes = testing::ReadFile(path);
  bytes[info.offset() + info.bytes() - 9] ^= 0x10;
  testing::WriteFile(path, bytes);
}

TEST_F(ReaderTest, CorruptBlockStopsTheReaderNamingFileAndBlock) {
  Corrupt(files_[1], 2);  // 64 rows > max_bad_records (10)
  auto r = Open(0, 1, ReaderOptions());
  Batch b;
  int64_t rows = 0;
  while (r->Next(&b, 16)) rows += b.size;
  EXPECT_EQ(rows, 400 + 128);  // everything before the bad block (16 divides it)
  EXPECT_EQ(r->status().code(), StatusCode::kDataLoss);
  EXPECT_TRUE(ContainsAll(r->status().message(),
                          {files_[1], "block 2", "checksum mismatch", "max_bad_records"}));
  EXPECT_FALSE(r->Next(&b, 100));  // stays stopped
}

TEST_F(ReaderTest, SkipPolicyCountsTheBadBlockRowsAndReadsTheRest) {
  Corrupt(files_[1], 2);
  ReaderOptions o;
  o.bad_record_policy = proto::BAD_RECORDS_SKIP;
  o.shuffle_buffer_rows = 100;
  auto r = Open(0, 1, o);
  const auto rows = ReadEpoch(r.get(), 100);
  EXPECT_EQ(static_cast<int64_t>(rows.size()), total_ - 64);
  EXPECT_EQ(r->bad_records(), 64);
  const std::set<int64_t> got(rows.begin(), rows.end());
  for (int64_t x = 400 + 128; x < 400 + 192; ++x) EXPECT_EQ(got.count(x), 0u);
  // A position taken after the bad block carries the count, and Seek does not recount it.
  const auto pos = r->Position();
  auto s = Open(0, 1, o);
  ASSERT_TRUE(s->Seek(pos).ok());
  ReadEpoch(s.get(), 100);
  EXPECT_EQ(s->bad_records(), 128);  // 64 carried + 64 for the second epoch
}

TEST_F(ReaderTest, TruncatedFileIsRefusedUnlessItsLostRowsMayBeSkipped) {
  uint64_t cut;
  {
    auto f = ShardFile::Open(files_[2]);
    ASSERT_TRUE(f.ok());
    cut = (*f)->footer().block(1).offset() + 100;
  }
  std::filesystem::resize_file(files_[2], cut);
  auto r = Reader::Open(files_, nullptr, 0, 1, ReaderOptions());
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(ContainsAll(r.status().message(), {files_[2], "block 1", "truncated"}));

  ReaderOptions o;
  o.bad_record_policy = proto::BAD_RECORDS_SKIP;
  auto s = Reader::Open(files_, nullptr, 0, 1, o);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ((*s)->bad_records(), 64);
  EXPECT_EQ(static_cast<int64_t>(ReadEpoch(s->get(), 100).size()), 400 + 350 + 64);
}

TEST_F(ReaderTest, DataConfigOpensTrainAndEvalReaders) {
  proto::DataConfig c;
  c.add_train_files(tmp_ / "f*.loom");
  c.add_eval_files(files_[2]);
  c.mutable_reader()->set_shuffle_buffer_rows(64);
  ASSERT_TRUE(ValidateDataConfig(c).ok());
  auto train = OpenTrainReader(c, 1, 2);
  ASSERT_TRUE(train.ok()) << train.status();
  EXPECT_EQ((*train)->total_rows(), total_);
  auto eval = OpenEvalReader(c, 0, 1);
  ASSERT_TRUE(eval.ok());
  // Eval keeps file order.
  const auto rows = ReadEpoch(eval->get(), 100);
  ASSERT_EQ(rows.size(), 251u);
  EXPECT_EQ(rows.front(), 750);
  EXPECT_EQ(rows.back(), 1000);

  c.mutable_reader()->set_prefetch_blocks(0);
  EXPECT_TRUE(ContainsAll(ValidateDataConfig(c).message(), {"data.reader.prefetch_blocks"}));
  c.mutable_reader()->set_prefetch_blocks(2);
  c.set_schema_file(tmp_ / "missing.pbtxt");
  EXPECT_TRUE(ContainsAll(OpenTrainReader(c, 0, 1).status().message(),
                          {"data.schema_file", "missing.pbtxt"}));
  c.clear_schema_file();
  c.clear_train_files();
  c.add_train_files(tmp_ / "nothing*.loom");
  EXPECT_TRUE(
      ContainsAll(OpenTrainReader(c, 0, 1).status().message(), {"data.train_files", "nothing"}));
}

TEST(ReaderOptionsTest, FromConfigUsesTheProtoDefaults) {
  proto::ReaderConfig c;
  ReaderOptions o = ReaderOptions::FromConfig(c);
  EXPECT_EQ(o.prefetch_blocks, 8);
  EXPECT_EQ(o.shuffle_buffer_rows, 65536);
  EXPECT_EQ(o.max_bad_records, 10);
  EXPECT_EQ(o.bad_record_policy, proto::BAD_RECORDS_FAIL_PAST_THRESHOLD);
  EXPECT_EQ(o.ForEval().shuffle_buffer_rows, 0);
}

}  // namespace
}  // namespace loom::data
