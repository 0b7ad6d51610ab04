// Converts the real MovieLens 100K in ../shared/data (read in place; output to a temporary
// directory, never into the repository: the licence forbids redistribution) and checks the
// protocol's counts and invariants. Skipped, saying why, when the data is absent.
#include <sys/stat.h>

#include <cmath>
#include <cstdlib>

#include <gtest/gtest.h>

#include "csrc/data/movielens.h"
#include "csrc/data/reader.h"
#include "tests/data/data_test_util.h"

namespace loom::data {
namespace {

std::string DataDir() {
  if (const char* env = std::getenv("LOOM_SHARED_DATA")) {
    return std::string(env) + "/movielens-100k";
  }
  return std::string(LOOM_SHARED_DATA_DIR) + "/movielens-100k";
}

TEST(MovieLensE2eTest, Converts100KUnderProtocolV1) {
  const std::string dir = DataDir();
  struct stat st;
  if (::stat((dir + "/u.data").c_str(), &st) != 0) {
    GTEST_SKIP() << "MovieLens 100K not found at " << dir
                 << " (set LOOM_SHARED_DATA to the folder holding movielens-100k/)";
  }
  testing::TempDir tmp;
  MovieLensOptions o;
  o.variant = MovieLensVariant::k100K;
  o.input_dir = dir;
  o.out_dir = tmp / "ml100k";
  auto r = ConvertMovieLens(o);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->ratings, 100000);
  EXPECT_EQ(r->train_rows, 80000);
  EXPECT_EQ(r->test_rows, 20000);
  EXPECT_EQ(r->bad_records, 0);
  EXPECT_EQ(r->train_positives + r->test_positives, 55375);  // SOURCE.md: ratings >= 4

  const proto::DataSchema& s = r->schema;
  auto vocab = [&](const std::string& name) {
    for (const auto& f : s.sparse()) {
      if (f.name() == name) return f.vocabulary_size();
    }
    return int64_t{-1};
  };
  EXPECT_LE(vocab("user_id"), 944);
  EXPECT_GE(vocab("user_id"), 700);
  EXPECT_LE(vocab("item_id"), 1683);
  EXPECT_EQ(vocab("gender"), 3);
  EXPECT_EQ(vocab("age"), 8);          // all 7 buckets occur
  EXPECT_LE(vocab("occupation"), 22);  // 21 occupations
  EXPECT_LE(vocab("genres"), 20);      // 19 genres
  EXPECT_LE(vocab("hour"), 25);
  EXPECT_LE(vocab("weekday"), 8);
  EXPECT_LE(vocab("release_decade"), 10);

  for (int split = 0; split < 2; ++split) {
    const auto& files = split == 0 ? r->train_files : r->test_files;
    auto reader = Reader::Open(files, &s, 0, 1, ReaderOptions());
    ASSERT_TRUE(reader.ok()) << reader.status();
    Batch b;
    int64_t rows = 0, positives = 0, empty_histories = 0;
    std::vector<int64_t> last_group;
    while ((*reader)->Next(&b, 4096)) {
      for (int64_t i = 0; i < b.size; ++i) {
        ++rows;
        positives += b.labels[i] == 1.f;
        ASSERT_TRUE(b.labels[i] == 0.f || b.labels[i] == 1.f);
        ASSERT_GE(b.group_ids[i], 1);
        ASSERT_LE(b.group_ids[i], 943);
        // Every train value was seen in train: no unknown (0) ids in single-hot train features
        // except release_decade (one item has no date).
        for (int f = 0; f < 9; ++f) {
          const int64_t id = b.sparse[f].ids[b.sparse[f].offsets[i]];
          ASSERT_GE(id, 0);
          ASSERT_LT(id, s.sparse(f).vocabulary_size());
          if (split == 0 && s.sparse(f).name() != "release_decade") {
            ASSERT_GE(id, 1);
          }
        }
        const int64_t len = b.sequences[0].length(i);
        ASSERT_LE(len, 50);
        ASSERT_EQ(b.sequences[1].length(i), len);
        ASSERT_EQ(b.sequences[2].length(i), len);
        for (int64_t k = 0; k < len; ++k) {
          const int64_t rating = b.sequences[2].ids_of(i)[k];
          ASSERT_GE(rating, 1);
          ASSERT_LE(rating, 5);
        }
        // dense[0] = log1p(earlier events of the user) >= the history length, equal below T.
        const double earlier = std::expm1(static_cast<double>(b.dense[i * 2]));
        const int64_t earlier_count = std::llround(earlier);
        ASSERT_NEAR(earlier, earlier_count, 1e-3 * (1 + earlier_count));
        if (earlier_count < 50) {
          ASSERT_EQ(len, earlier_count);
        } else {
          ASSERT_EQ(len, 50);
        }
        empty_histories += len == 0;
        ASSERT_GE(b.dense[i * 2 + 1], 0.f);
      }
    }
    ASSERT_TRUE((*reader)->status().ok());
    EXPECT_EQ(rows, split == 0 ? 80000 : 20000);
    EXPECT_EQ(positives, split == 0 ? r->train_positives : r->test_positives);
    if (split == 0) {
      EXPECT_GE(empty_histories, 1);
    }
  }

  // Deterministic: converting again gives byte-identical shards.
  o.out_dir = tmp / "again";
  auto again = ConvertMovieLens(o);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(testing::ReadFile(again->train_files[0]), testing::ReadFile(r->train_files[0]));
  EXPECT_EQ(testing::ReadFile(again->test_files[0]), testing::ReadFile(r->test_files[0]));
}

}  // namespace
}  // namespace loom::data
