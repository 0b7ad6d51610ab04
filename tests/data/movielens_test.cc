// MovieLens CTR protocol v1 on tiny hand-written fixtures (100K and 1M file formats). Every
// expected value below was computed by hand from the fixture; the derivation is in comments.
#include "csrc/data/movielens.h"

#include <cmath>

#include <gtest/gtest.h>

#include "csrc/data/reader.h"
#include "tests/data/data_test_util.h"

namespace loom::data {
namespace {

using testing::ContainsAll;
using testing::TempDir;
using testing::WriteFile;

// Small batches: the data sets span many.
std::vector<Example> ReadAll(const std::vector<std::string>& files) {
  return testing::ReadAll(files, 4);
}

// A u.item line: id, title, release date, 19 genre flags set at `genres` (u.genre indices:
// 1 Action, 5 Comedy, 8 Drama, 14 Romance).
std::string ItemLine(int id, const std::string& date, std::vector<int> genres) {
  std::string line =
      std::to_string(id) + "|Movie " + std::to_string(id) + "|" + date + "||http://x";
  for (int g = 0; g < 19; ++g) {
    line += std::find(genres.begin(), genres.end(), g) != genres.end() ? "|1" : "|0";
  }
  return line + "\n";
}

// B = 259200 is Sunday 1970-01-04 00:00 UTC (weekday 0).
//   rating  user item stars ts        label
//   r1      1    10   5     B+100     1
//   r2      1    20   3     B+100     0   (same second as r1: not r1's history, nor r1 its)
//   r3      2    10   4     B+50      1
//   r4      1    30   2     B+200     0
//   r5      2    30   5     B+200     1
//   r6      3    20   1     B+300     0
//   r7      1    40   4     B+400     1
//   r8      2    20   4     B+18000   1   (05:00)
//   r9      1    10   1     B+93600   0   (Monday 02:00)
//   r10     3    40   5     B+172800  1   (Tuesday 00:00)
// Sorted by (ts, user, item): r3 r1 r2 r4 r5 r6 r7 r8 | r9 r10  (train = first 8 of 10).
void WriteFixture100K(const std::string& dir) {
  WriteFile(dir + "/u.user",
            "1|23|M|student|12345\n"                                     // age 23 -> 18, zip3 123
            "2|56|F|artist|9A8B7\n"                                      // age 56 -> 56, zip3 9A8
            "3|40|M|none|55555\n");                                      // age 40 -> 35, zip3 555
  WriteFile(dir + "/u.item", ItemLine(10, "01-Jan-1995", {5, 8}) +       // 1990s, Comedy Drama
                                 ItemLine(20, "", {1}) +                 // unknown decade, Action
                                 ItemLine(30, "12-Mar-1987", {8, 14}) +  // 1980s, Drama Romance
                                 ItemLine(40, "01-Jan-2001", {1, 5}));   // 2000s, Action Comedy
  const int64_t b = 259200;
  auto line = [](int u, int i, int r, int64_t ts) {
    return std::to_string(u) + "\t" + std::to_string(i) + "\t" + std::to_string(r) + "\t" +
           std::to_string(ts) + "\n";
  };
  // Input order scrambled on purpose.
  WriteFile(dir + "/u.data", line(2, 30, 5, b + 200) + line(1, 10, 5, b + 100) +
                                 line(1, 10, 1, b + 93600) + line(2, 10, 4, b + 50) +
                                 line(1, 20, 3, b + 100) + line(3, 40, 5, b + 172800) +
                                 line(1, 40, 4, b + 400) + line(1, 30, 2, b + 200) +
                                 line(2, 20, 4, b + 18000) + line(3, 20, 1, b + 300));
}

struct Want {
  float label;
  int64_t group;
  // user item gender age occupation zip3 decade hour weekday
  std::vector<int64_t> sparse;
  std::vector<int64_t> genres;
  std::vector<int64_t> item_history, genre_history, rating_history;
  double user_earlier, item_earlier;
};

TEST(MovieLensTest, Protocol100KOnAHandWrittenFixture) {
  TempDir tmp;
  WriteFixture100K(tmp.path());
  MovieLensOptions o;
  o.variant = MovieLensVariant::k100K;
  o.input_dir = tmp.path();
  o.out_dir = tmp / "out";
  auto r = ConvertMovieLens(o);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->ratings, 10);
  EXPECT_EQ(r->train_rows, 8);
  EXPECT_EQ(r->test_rows, 2);
  EXPECT_EQ(r->train_positives, 5);
  EXPECT_EQ(r->test_positives, 1);

  // Vocabularies, by first appearance in train order r3 r1 r2 r4 r5 r6 r7 r8:
  //   user 2,1,3 | item 10,20,30,40 | gender F,M | age 56,18,35 | occupation artist,student,
  //   none | zip3 9A8,123,555 | decade 1990,1980,2000 (item 20's unknown stays 0) | hour 0,5 |
  //   weekday 0 | genres Comedy,Drama,Action,Romance.  Sizes are V + 1.
  const std::vector<int64_t> sizes = {4, 5, 3, 4, 4, 4, 4, 3, 2, 5};
  ASSERT_EQ(r->schema.sparse_size(), 10);
  for (int f = 0; f < 10; ++f) {
    EXPECT_EQ(r->schema.sparse(f).vocabulary_size(), sizes[f]) << r->schema.sparse(f).name();
  }
  EXPECT_EQ(r->schema.sequence(0).vocabulary_size(), 5);
  EXPECT_EQ(r->schema.sequence(1).vocabulary_size(), 5);
  EXPECT_EQ(r->schema.sequence(2).vocabulary_size(), 6);
  EXPECT_EQ(r->schema.sequence(0).max_length(), 50);
  EXPECT_TRUE(r->schema.sparse(9).multi_hot());
  EXPECT_EQ(r->schema.sparse(9).pooling(), proto::SparseFeatureSpec::POOLING_MEAN);

  // Encoded: item 10->1 20->2 30->3 40->4; first genre: 10 Comedy->1, 20 Action->3,
  // 30 Drama->2, 40 Action->3.  Earlier events: user timelines (ts, item)
  //   u1: r1 r2 | r4 | r7 | r9     u2: r3 | r5 | r8     u3: r6 | r10
  // items: 10: r3 < r1 < r9; 20: r2 < r6 < r8; 30: r4 = r5; 40: r7 < r10.
  const std::vector<Want> train = {
      // r3
      {1, 2, {1, 1, 1, 1, 1, 1, 1, 1, 1}, {1, 2}, {}, {}, {}, 0, 0},
      // r1
      {1, 1, {2, 1, 2, 2, 2, 2, 1, 1, 1}, {1, 2}, {}, {}, {}, 0, 1},
      // r2: same second as r1, so no history
      {0, 1, {2, 2, 2, 2, 2, 2, 0, 1, 1}, {3}, {}, {}, {}, 0, 0},
      // r4: history r1 r2
      {0, 1, {2, 3, 2, 2, 2, 2, 2, 1, 1}, {2, 4}, {1, 2}, {1, 3}, {5, 3}, 2, 0},
      // r5: history r3; item 30 was rated by u1 in the same second: 0 earlier
      {1, 2, {1, 3, 1, 1, 1, 1, 2, 1, 1}, {2, 4}, {1}, {1}, {4}, 1, 0},
      // r6
      {0, 3, {3, 2, 2, 3, 3, 3, 0, 1, 1}, {3}, {}, {}, {}, 0, 1},
      // r7: history r1 r2 r4
      {1, 1, {2, 4, 2, 2, 2, 2, 3, 1, 1}, {3, 1}, {1, 2, 3}, {1, 3, 2}, {5, 3, 2}, 3, 0},
      // r8: 05:00 -> hour id 2
      {1, 2, {1, 2, 1, 1, 1, 1, 0, 2, 1}, {3}, {1, 3}, {1, 2}, {4, 5}, 2, 2},
  };
  const std::vector<Want> test = {
      // r9: hour 2 and weekday 1 (Monday) never occur in train -> 0
      {0, 1, {2, 1, 2, 2, 2, 2, 1, 0, 0}, {1, 2}, {1, 2, 3, 4}, {1, 3, 2, 3}, {5, 3, 2, 4}, 4, 2},
      // r10: weekday 2 unseen -> 0; hour 0 -> 1
      {1, 3, {3, 4, 2, 3, 3, 3, 3, 1, 0}, {3, 1}, {2}, {3}, {1}, 1, 1},
  };
  auto check = [](const std::vector<Example>& got, const std::vector<Want>& want,
                  const std::string& split) {
    ASSERT_EQ(got.size(), want.size()) << split;
    for (size_t k = 0; k < want.size(); ++k) {
      const Example& e = got[k];
      const Want& w = want[k];
      const std::string where = split + " sample " + std::to_string(k);
      EXPECT_EQ(e.label, w.label) << where;
      EXPECT_EQ(e.group_id, w.group) << where;
      for (int f = 0; f < 9; ++f) {
        EXPECT_EQ(e.sparse_ids[f], std::vector<int64_t>({w.sparse[f]})) << where << " f" << f;
      }
      EXPECT_EQ(e.sparse_ids[9], w.genres) << where;
      EXPECT_EQ(e.sequences[0], w.item_history) << where;
      EXPECT_EQ(e.sequences[1], w.genre_history) << where;
      EXPECT_EQ(e.sequences[2], w.rating_history) << where;
      EXPECT_EQ(e.dense[0], static_cast<float>(std::log1p(w.user_earlier))) << where;
      EXPECT_EQ(e.dense[1], static_cast<float>(std::log1p(w.item_earlier))) << where;
    }
  };
  check(ReadAll(r->train_files), train, "train");
  check(ReadAll(r->test_files), test, "test");

  // T = 3 keeps the most recent three: r9's history r2 r4 r7.
  o.max_history = 3;
  o.out_dir = tmp / "out3";
  auto r3 = ConvertMovieLens(o);
  ASSERT_TRUE(r3.ok()) << r3.status();
  const auto test3 = ReadAll(r3->test_files);
  ASSERT_EQ(test3.size(), 2u);
  EXPECT_EQ(test3[0].sequences[0], std::vector<int64_t>({2, 3, 4}));
  EXPECT_EQ(test3[0].sequences[2], std::vector<int64_t>({3, 2, 4}));
  EXPECT_EQ(test3[0].dense[0], static_cast<float>(std::log1p(4.0)));  // counts are not capped
}

TEST(MovieLensTest, Protocol1MFileFormats) {
  TempDir tmp;
  WriteFile(tmp / "users.dat", "1::F::1::10::48067\n2::M::56::16::70072-1234\n");
  WriteFile(
      tmp / "movies.dat",
      "1::Toy Story (1995)::Animation|Children's|Comedy\n"
      "2::Jumanji (1995)::Adventure|Children's|Fantasy\n"
      "3::City of Lost Children, The (Cit\xe9 des enfants perdus, La) (1995)::Adventure|Sci-Fi\n"
      "4::Untitled::Drama\n");
  WriteFile(tmp / "ratings.dat",
            "1::1::5::978300760\n1::2::3::978300760\n2::3::4::978300000\n2::4::2::978301000\n"
            "1::4::4::978302000\n");
  MovieLensOptions o;
  o.variant = MovieLensVariant::k1M;
  o.input_dir = tmp.path();
  o.out_dir = tmp / "out";
  auto r = ConvertMovieLens(o);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->ratings, 5);
  EXPECT_EQ(r->train_rows, 4);  // floor(0.8 * 5)
  // Order: (978300000 u2 i3) (978300760 u1 i1) (978300760 u1 i2) (978301000 u2 i4) | (u1 i4).
  const auto train = ReadAll(r->train_files);
  ASSERT_EQ(train.size(), 4u);
  // Ages are 1M codes (56 -> its own id), zip3 from "70072-1234" is "700".
  EXPECT_EQ(train[0].group_id, 2);
  EXPECT_EQ(train[0].sparse_ids[3], std::vector<int64_t>({1}));  // age 56 first seen
  EXPECT_EQ(train[1].sparse_ids[3], std::vector<int64_t>({2}));  // age 1
  // Decades from the title: 1995 -> 1990 (id 1); "Untitled" has none -> 0.
  EXPECT_EQ(train[0].sparse_ids[6], std::vector<int64_t>({1}));
  EXPECT_EQ(train[3].sparse_ids[6], std::vector<int64_t>({0}));
  // Genres in listed order: Adventure Sci-Fi (1 2), Animation Children's Comedy (3 4 5),
  // Adventure Children's Fantasy (1 4 6), Drama (7).
  EXPECT_EQ(train[0].sparse_ids[9], std::vector<int64_t>({1, 2}));
  EXPECT_EQ(train[1].sparse_ids[9], std::vector<int64_t>({3, 4, 5}));
  EXPECT_EQ(train[2].sparse_ids[9], std::vector<int64_t>({1, 4, 6}));
  // u2's second event sees the first: item 3 (id 1), first genre Adventure (1), 4 stars.
  EXPECT_EQ(train[3].sequences[0], std::vector<int64_t>({1}));
  EXPECT_EQ(train[3].sequences[1], std::vector<int64_t>({1}));
  EXPECT_EQ(train[3].sequences[2], std::vector<int64_t>({4}));
  const auto test = ReadAll(r->test_files);
  ASSERT_EQ(test.size(), 1u);
  // u1 at 978302000: history (978300760, item 1), (978300760, item 2): items 2 3, genres 3 1.
  EXPECT_EQ(test[0].sequences[0], std::vector<int64_t>({2, 3}));
  EXPECT_EQ(test[0].sequences[1], std::vector<int64_t>({3, 1}));
  EXPECT_EQ(test[0].sequences[2], std::vector<int64_t>({5, 3}));
  // Item 4 had one earlier rating (u2 at 978301000).
  EXPECT_EQ(test[0].dense[1], static_cast<float>(std::log1p(1.0)));
}

TEST(MovieLensTest, MalformedLinesNameFileAndLine) {
  TempDir tmp;
  WriteFixture100K(tmp.path());
  std::string data = testing::ReadFile(tmp / "u.data");
  data += "1\t10\t7\t259300\n";  // line 11: rating out of range
  data += "9\t10\t4\t259300\n";  // line 12: unknown user
  data += "1\t10\tx\n";          // line 13: 3 fields
  WriteFile(tmp / "u.data", data);
  MovieLensOptions o;
  o.input_dir = tmp.path();
  o.out_dir = tmp / "out";
  o.bad_record_policy = proto::BAD_RECORDS_FAIL;
  auto r = ConvertMovieLens(o);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(ContainsAll(r.status().message(), {tmp / "u.data:11:", "rating 7"}));
  o.bad_record_policy = proto::BAD_RECORDS_SKIP;
  auto s = ConvertMovieLens(o);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->bad_records, 3);
  EXPECT_EQ(s->ratings, 10);
  // Missing input file.
  o.input_dir = tmp / "nowhere";
  EXPECT_EQ(ConvertMovieLens(o).status().code(), StatusCode::kNotFound);
  EXPECT_FALSE(ParseMovieLensVariant("10m").ok());
}

}  // namespace
}  // namespace loom::data
