// Helpers shared by the tests of csrc/data: temporary directories, a schema with every column
// kind, deterministic example generation, and example comparison.
#ifndef LOOM_TESTS_DATA_DATA_TEST_UTIL_H_
#define LOOM_TESTS_DATA_DATA_TEST_UTIL_H_

#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "csrc/core/philox.h"
#include "csrc/data/batch.h"
#include "csrc/data/reader.h"
#include "csrc/data/schema.h"
#include "csrc/proto/data.pb.h"

namespace loom::data::testing {

// Every row of a data set's files, in file order, read batch_rows at a time by one reader.
inline std::vector<Example> ReadAll(const std::vector<std::string>& files,
                                    int64_t batch_rows = 64) {
  auto r = Reader::Open(files, nullptr, 0, 1, ReaderOptions());
  EXPECT_TRUE(r.ok()) << r.status();
  std::vector<Example> out;
  Batch b;
  while (r.ok() && (*r)->Next(&b, batch_rows)) {
    for (int64_t i = 0; i < b.size; ++i) {
      out.emplace_back();
      ExampleFromBatch(b, i, &out.back());
    }
  }
  return out;
}

// A fresh directory under $TMPDIR (or /tmp), removed when the object dies.
class TempDir {
 public:
  TempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl = std::string(base ? base : "/tmp") + "/loom_data_test_XXXXXX";
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    char* p = mkdtemp(buf.data());
    EXPECT_NE(p, nullptr);
    path_ = p ? p : "/tmp";
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

inline void WriteFile(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

inline std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Every column kind: 2 dense, single-hot "row" (the row's global index, for coverage checks),
// single-hot with vocabulary, wide ids (> 2^32), multi-hot mean-pooled, weighted multi-hot
// with max_values, two sequences (one sharing a table), and a group id.
inline proto::DataSchema AllKindsSchema() {
  proto::DataSchema s;
  const char* text = R"pb(
    name: "all_kinds"
    dense { name: "d0" }
    dense { name: "d1" }
    sparse { name: "row" }
    sparse { name: "item" vocabulary_size: 1000 }
    sparse { name: "wide" }
    sparse { name: "tags" multi_hot: true pooling: POOLING_MEAN vocabulary_size: 50 }
    sparse { name: "wtags" multi_hot: true weighted: true max_values: 4 }
    sequence { name: "item_history" max_length: 6 shares_table_with: "item" vocabulary_size: 1000 }
    sequence { name: "clicks" max_length: 3 }
    label: "click"
    group_id: "user"
  )pb";
  EXPECT_TRUE(ParseTextProto(text, "AllKindsSchema", &s).ok());
  return s;
}

// Deterministic example `row` for AllKindsSchema (and any schema of the same kinds).
inline void MakeExample(const proto::DataSchema& schema, int64_t row, Example* ex) {
  ex->Reset(schema);
  uint64_t draw = 0;
  auto u32 = [&]() {
    const uint64_t d = draw++;
    return PhiloxBlock(1234, 99, static_cast<uint64_t>(row) * 64 + d / 4).v[d & 3];
  };
  ex->label = (u32() & 1) ? 1.f : 0.f;
  ex->group_id = row % 17 + (int64_t{1} << 40);
  for (auto& d : ex->dense) d = static_cast<float>(static_cast<int32_t>(u32() % 2001) - 1000) / 7.f;
  for (int f = 0; f < schema.sparse_size(); ++f) {
    const auto& spec = schema.sparse(f);
    const int64_t vocab = spec.vocabulary_size() > 0 ? spec.vocabulary_size() : 1 << 20;
    if (spec.name() == "row") {
      ex->sparse_ids[f] = {row};
    } else if (spec.name() == "wide") {
      ex->sparse_ids[f] = {(int64_t{1} << 33) + static_cast<int64_t>(u32() % 1000)};
    } else if (!spec.multi_hot()) {
      ex->sparse_ids[f] = {static_cast<int64_t>(u32() % vocab)};
    } else {
      const int max_n = spec.max_values() > 0 ? spec.max_values() : 5;
      const int n = static_cast<int>(u32() % (max_n + 1));
      for (int i = 0; i < n; ++i) {
        ex->sparse_ids[f].push_back(static_cast<int64_t>(u32() % vocab));
        if (spec.weighted()) ex->sparse_weights[f].push_back(static_cast<float>(u32() % 100) / 8.f);
      }
    }
  }
  for (int j = 0; j < schema.sequence_size(); ++j) {
    const auto& spec = schema.sequence(j);
    const int64_t vocab = spec.vocabulary_size() > 0 ? spec.vocabulary_size() : 1 << 20;
    const int n = static_cast<int>(u32() % (spec.max_length() + 1));
    for (int i = 0; i < n; ++i) ex->sequences[j].push_back(static_cast<int64_t>(u32() % vocab));
  }
}

inline void ExpectSameExample(const Example& a, const Example& b, const std::string& where) {
  EXPECT_EQ(a.label, b.label) << where;
  EXPECT_EQ(a.group_id, b.group_id) << where;
  EXPECT_EQ(a.dense, b.dense) << where;
  ASSERT_EQ(a.sparse_ids.size(), b.sparse_ids.size()) << where;
  for (size_t f = 0; f < a.sparse_ids.size(); ++f) {
    EXPECT_EQ(a.sparse_ids[f], b.sparse_ids[f]) << where << " sparse " << f;
    EXPECT_EQ(a.sparse_weights[f], b.sparse_weights[f]) << where << " weights " << f;
  }
  ASSERT_EQ(a.sequences.size(), b.sequences.size()) << where;
  for (size_t j = 0; j < a.sequences.size(); ++j) {
    EXPECT_EQ(a.sequences[j], b.sequences[j]) << where << " sequence " << j;
  }
}

inline bool SameBatch(const Batch& a, const Batch& b) {
  if (a.size != b.size || a.labels != b.labels || a.dense != b.dense ||
      a.group_ids != b.group_ids || a.sparse.size() != b.sparse.size() ||
      a.sequences.size() != b.sequences.size()) {
    return false;
  }
  for (size_t f = 0; f < a.sparse.size(); ++f) {
    if (a.sparse[f].offsets != b.sparse[f].offsets || a.sparse[f].ids != b.sparse[f].ids ||
        a.sparse[f].weights != b.sparse[f].weights) {
      return false;
    }
  }
  for (size_t j = 0; j < a.sequences.size(); ++j) {
    if (a.sequences[j].offsets != b.sequences[j].offsets ||
        a.sequences[j].ids != b.sequences[j].ids) {
      return false;
    }
  }
  return true;
}

// True iff `haystack` contains every one of `needles`.
inline ::testing::AssertionResult ContainsAll(const std::string& haystack,
                                              const std::vector<std::string>& needles) {
  for (const auto& n : needles) {
    if (haystack.find(n) == std::string::npos) {
      return ::testing::AssertionFailure() << "'" << haystack << "' lacks '" << n << "'";
    }
  }
  return ::testing::AssertionSuccess();
}

}  // namespace loom::data::testing

#endif  // LOOM_TESTS_DATA_DATA_TEST_UTIL_H_
