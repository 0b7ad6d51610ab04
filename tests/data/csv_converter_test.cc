// Delimited-text conversion: the BARS CSV form (sequences joined by '^'), the Criteo TSV form,
// vocabularies, and malformed lines reported as file:line.
#include "csrc/data/csv_converter.h"

#include <cmath>
#include <filesystem>

#include <gtest/gtest.h>

#include "csrc/data/reader.h"
#include "csrc/data/schema.h"
#include "tests/data/data_test_util.h"

namespace loom::data {
namespace {

using testing::ContainsAll;
using testing::ReadAll;
using testing::TempDir;
using testing::WriteFile;

proto::DelimitedTextConfig ParseConfig(const std::string& text) {
  proto::DelimitedTextConfig c;
  Status s = ParseTextProto(text, "test config", &c);
  EXPECT_TRUE(s.ok()) << s;
  return c;
}

// The AmazonElectronics_x1 form, small: vocabularies shared between ids and histories.
const char* kAmazonConfig = R"pb(
  schema {
    label: "label"
    group_id: "user_id"
    sparse { name: "item_id" }
    sparse { name: "cate_id" }
    sequence { name: "item_history" max_length: 3 shares_table_with: "item_id" }
    sequence { name: "cate_history" max_length: 3 shares_table_with: "cate_id" }
  }
  column { column: "label" }
  column { column: "user_id" }
  column { column: "item_id" encoding: ENCODING_VOCAB vocabulary: "item" }
  column { column: "cate_id" encoding: ENCODING_VOCAB vocabulary: "cate" }
  column { column: "item_history" encoding: ENCODING_VOCAB vocabulary: "item" }
  column { column: "cate_history" encoding: ENCODING_VOCAB vocabulary: "cate" }
  block_rows: 2
)pb";

TEST(CsvConverterTest, ConvertsTheBarsSequenceFormWithSharedVocabularies) {
  TempDir tmp;
  // Item values in first-appearance order (rows, then columns): 501, 777, 502, 503, 900, 504.
  WriteFile(tmp / "train.csv",
            "label,user_id,item_id,cate_id,item_history,cate_history\n"
            "1,7,501,c1,777^502,c2^c1\n"
            "0,7,503,c2,,\n"
            "1,8,502,c1,900^503^504^501,c1^c2^c3^c1\n");
  ConvertOptions o;
  o.out_dir = tmp / "out";
  auto r = ConvertDelimitedText(ParseConfig(kAmazonConfig), {tmp / "train.csv"}, o);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->rows, 3);
  EXPECT_EQ(r->bad_records, 0);
  // Vocabulary sizes (V + padding) went into the schema.
  EXPECT_EQ(r->schema.sparse(0).vocabulary_size(), 7);  // 6 items + 0
  EXPECT_EQ(r->schema.sequence(0).vocabulary_size(), 7);
  EXPECT_EQ(r->schema.sparse(1).vocabulary_size(), 4);  // c1 c2 c3 + 0
  const auto rows = ReadAll(r->files);
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0].label, 1.f);
  EXPECT_EQ(rows[0].group_id, 7);
  EXPECT_EQ(rows[0].sparse_ids[0], std::vector<int64_t>({1}));    // 501
  EXPECT_EQ(rows[0].sequences[0], std::vector<int64_t>({2, 3}));  // 777 502
  EXPECT_EQ(rows[0].sequences[1], std::vector<int64_t>({2, 1}));  // c2 c1
  EXPECT_TRUE(rows[1].sequences[0].empty());
  EXPECT_EQ(rows[1].sparse_ids[0], std::vector<int64_t>({4}));  // 503
  // T = 3: the last three of 900^503^504^501 are kept.
  EXPECT_EQ(rows[2].sequences[0], std::vector<int64_t>({4, 6, 1}));  // 503 504 501
  EXPECT_EQ(rows[2].sequences[1], std::vector<int64_t>({2, 3, 1}));  // c2 c3 c1
  // Side outputs.
  EXPECT_EQ(testing::ReadFile(tmp / "out/vocab/cate.tsv"), "c1\t1\t5\nc2\t2\t3\nc3\t3\t1\n");
  proto::DataSchema written;
  ASSERT_TRUE(ReadTextProto(tmp / "out/schema.pbtxt", &written).ok());
  EXPECT_EQ(written.sparse(0).vocabulary_size(), 7);
  EXPECT_TRUE(ContainsAll(testing::ReadFile(tmp / "out/convert.json"), {"\"rows\": 3"}));

  // A test file with the frozen train vocabulary: unseen values map to 0.
  WriteFile(tmp / "test.csv",
            "label,user_id,item_id,cate_id,item_history,cate_history\n"
            "0,9,999,c1,501^12345,c9^c2\n");
  o.out_dir = tmp / "test_out";
  o.vocab_from = tmp / "out";
  auto t = ConvertDelimitedText(ParseConfig(kAmazonConfig), {tmp / "test.csv"}, o);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->schema.sparse(0).vocabulary_size(), 7);
  const auto test_rows = ReadAll(t->files);
  ASSERT_EQ(test_rows.size(), 1u);
  EXPECT_EQ(test_rows[0].sparse_ids[0], std::vector<int64_t>({0}));
  EXPECT_EQ(test_rows[0].sequences[0], std::vector<int64_t>({1, 0}));
  EXPECT_EQ(test_rows[0].sequences[1], std::vector<int64_t>({0, 2}));
}

TEST(CsvConverterTest, MinCountAndSeparateOovId) {
  TempDir tmp;
  // " a " is the value a: fields are trimmed of spaces in both passes.
  WriteFile(tmp / "a.csv", "y,k\n1,a\n0,b\n1, a \n0,c\n0,b\n1,a\n");
  auto config = ParseConfig(R"pb(
    schema {
      label: "y"
      sparse { name: "k" }
    }
    column { column: "y" }
    column { column: "k" encoding: ENCODING_VOCAB min_count: 2 separate_oov_id: true }
  )pb");
  ConvertOptions o;
  o.out_dir = tmp / "out";
  auto r = ConvertDelimitedText(config, {tmp / "a.csv"}, o);
  ASSERT_TRUE(r.ok()) << r.status();
  // a (3x) -> 1, b (2x) -> 2, c (1x) -> out of vocabulary = V + 1 = 3; size V + 2.
  EXPECT_EQ(r->schema.sparse(0).vocabulary_size(), 4);
  std::vector<int64_t> ids;
  for (const auto& e : ReadAll(r->files)) ids.push_back(e.sparse_ids[0][0]);
  EXPECT_EQ(ids, std::vector<int64_t>({1, 2, 1, 3, 2, 1}));
}

TEST(CsvConverterTest, ConvertsCriteoTsv) {
  TempDir tmp;
  // label, 13 integers (some empty, one negative), 26 hex categories (some empty).
  std::string line1 = "1\t5\t-3\t\t0";
  for (int i = 5; i <= 13; ++i) line1 += "\t" + std::to_string(i * 10);
  std::string line2 = "0";
  for (int i = 1; i <= 13; ++i) line2 += "\t";
  for (int i = 1; i <= 26; ++i) {
    line1 += i == 3 ? "\t" : "\t" + std::string(i % 2 ? "68fd1e64" : "80e26c9b");
    line2 += "\t05db9164";
  }
  WriteFile(tmp / "day_0", line1 + "\n" + line2);  // no newline at the end
  ConvertOptions o;
  o.out_dir = tmp / "out";
  auto r = ConvertDelimitedText(CriteoConfig(1000), {tmp / "day_0"}, o);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->rows, 2);
  EXPECT_EQ(r->schema.dense_size(), 13);
  EXPECT_EQ(r->schema.sparse_size(), 26);
  const auto rows = ReadAll(r->files);
  EXPECT_EQ(rows[0].label, 1.f);
  EXPECT_EQ(rows[0].dense[0], static_cast<float>(std::log1p(5.0)));
  EXPECT_EQ(rows[0].dense[1], 0.f);  // log1p(max(-3, 0))
  EXPECT_EQ(rows[0].dense[2], 0.f);  // empty
  EXPECT_EQ(rows[0].dense[12], static_cast<float>(std::log1p(130.0)));
  const uint64_t h = Hash64("68fd1e64", 8);
  EXPECT_EQ(rows[0].sparse_ids[0][0], static_cast<int64_t>(1 + h % 999));
  EXPECT_EQ(rows[0].sparse_ids[2][0], 0);  // empty category
  EXPECT_EQ(rows[1].sparse_ids[5][0], static_cast<int64_t>(1 + Hash64("05db9164", 8) % 999));
  for (const auto& e : rows) {
    for (const auto& ids : e.sparse_ids) {
      EXPECT_GE(ids[0], 0);
      EXPECT_LT(ids[0], 1000);
    }
  }
}

// A small config exercising multi-hot, weights, dense, quotes.
const char* kMixedConfig = R"pb(
  schema {
    label: "click"
    dense { name: "price" }
    sparse { name: "item" vocabulary_size: 100 }
    sparse { name: "tags" multi_hot: true weighted: true }
    sequence { name: "hist" max_length: 4 }
  }
  column { column: "click" }
  column { column: "price" missing_dense: -1 }
  column { column: "item" }
  column { column: "tags" encoding: ENCODING_HASH hash_buckets: 50 }
  column { column: "hist" }
  multi_hot_separator: "|"
  truncate_sequences: false
)pb";

TEST(CsvConverterTest, MultiHotWeightsQuotesAndCrLf) {
  TempDir tmp;
  WriteFile(tmp / "m.csv",
            "click,price,item,tags,hist\r\n"
            "1,2.5,7,\"a:0.5|b:2\",1^2\r\n"
            "\r\n"
            "0,,99,,\r\n"
            "1,\"1e3\",0,\"x,y:1\",4^3^2^1\r\n");
  ConvertOptions o;
  o.out_dir = tmp / "out";
  auto r = ConvertDelimitedText(ParseConfig(kMixedConfig), {tmp / "m.csv"}, o);
  ASSERT_TRUE(r.ok()) << r.status();
  const auto rows = ReadAll(r->files);
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0].dense[0], 2.5f);
  EXPECT_EQ(rows[0].sparse_ids[0][0], 7);
  ASSERT_EQ(rows[0].sparse_ids[1].size(), 2u);
  EXPECT_EQ(rows[0].sparse_ids[1][0], static_cast<int64_t>(1 + Hash64("a", 1) % 49));
  EXPECT_EQ(rows[0].sparse_weights[1], std::vector<float>({0.5f, 2.f}));
  EXPECT_EQ(rows[0].sequences[0], std::vector<int64_t>({1, 2}));
  EXPECT_EQ(rows[1].dense[0], -1.f);  // missing
  EXPECT_TRUE(rows[1].sparse_ids[1].empty());
  EXPECT_EQ(rows[2].dense[0], 1000.f);
  EXPECT_EQ(rows[2].sparse_ids[1][0], static_cast<int64_t>(1 + Hash64("x,y", 3) % 49));
  EXPECT_EQ(rows[2].sequences[0], std::vector<int64_t>({4, 3, 2, 1}));
}

TEST(CsvConverterTest, MalformedLinesAreReportedWithFileAndLine) {
  TempDir tmp;
  WriteFile(tmp / "bad.csv",
            "click,price,item,tags,hist\n"
            "1,2.5,7,a:1,1^2\n"        // line 2: good
            "1,2.5,7x,a:1,1\n"         // line 3: item not an integer
            "1,2.5,7,a:1\n"            // line 4: 4 fields
            "2,2.5,7,a:1,1\n"          // line 5: label out of range
            "1,2.5,100,a:1,1\n"        // line 6: id >= vocabulary_size
            "1,2.5,7,a,1\n"            // line 7: weight missing
            "1,2.5,7,a:1,1^2^3^4^5\n"  // line 8: sequence longer than T
            "1,2.5,7,\"a:1,1\n"        // line 9: unterminated quote
            "1,abc,7,a:1,1^^2\n"       // line 10: price not a number
            "0,1,8,b:2,3\n");          // line 11: good
  const std::vector<std::pair<int, std::vector<std::string>>> expected = {
      {3, {"column 'item' (field 3)", "'7x' is not an integer"}},
      {4, {"4 fields, expected 5"}},
      {5, {"column 'click'", "not in [0, 1]"}},
      {6, {"column 'item'", "id 100 >= vocabulary_size 100"}},
      {7, {"column 'tags'", "lacks its weight"}},
      {8, {"column 'hist'", "5 values, more than T = 4"}},
      {9, {"unterminated quote"}},
      {10, {"column 'price'", "'abc' is not a finite number"}},
  };
  // FAIL: the first bad line stops the conversion, named by file:line.
  auto config = ParseConfig(kMixedConfig);
  config.set_bad_record_policy(proto::BAD_RECORDS_FAIL);
  ConvertOptions o;
  o.out_dir = tmp / "fail";
  auto r = ConvertDelimitedText(config, {tmp / "bad.csv"}, o);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(ContainsAll(r.status().message(), {tmp / "bad.csv:3:", "'7x'"}));

  // Every bad line on its own, to check each message.
  for (const auto& [line, words] : expected) {
    const std::string lines = testing::ReadFile(tmp / "bad.csv");
    std::vector<std::string> all;
    std::stringstream ss(lines);
    for (std::string l; std::getline(ss, l);) all.push_back(l);
    WriteFile(tmp / "one.csv", all[0] + "\n" + all[line - 1] + "\n");
    o.out_dir = tmp / ("one" + std::to_string(line));
    auto one = ConvertDelimitedText(config, {tmp / "one.csv"}, o);
    ASSERT_FALSE(one.ok()) << "line " << line;
    EXPECT_TRUE(ContainsAll(one.status().message(), words)) << "line " << line;
    EXPECT_TRUE(ContainsAll(one.status().message(), {tmp / "one.csv:2:"}));
  }

  // SKIP: the two good lines are converted and the eight bad ones counted.
  config.set_bad_record_policy(proto::BAD_RECORDS_SKIP);
  o.out_dir = tmp / "skip";
  auto s = ConvertDelimitedText(config, {tmp / "bad.csv"}, o);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->rows, 2);
  EXPECT_EQ(s->bad_records, 8);
  EXPECT_EQ(s->lines, 10);

  // Default: skip up to max_bad_records, then fail naming the last one.
  config.set_bad_record_policy(proto::BAD_RECORDS_FAIL_PAST_THRESHOLD);
  config.set_max_bad_records(5);
  o.out_dir = tmp / "threshold";
  auto t = ConvertDelimitedText(config, {tmp / "bad.csv"}, o);
  ASSERT_FALSE(t.ok());
  EXPECT_TRUE(
      ContainsAll(t.status().message(), {"more than max_bad_records (5)", tmp / "bad.csv:8:"}));
}

TEST(CsvConverterTest, ConfigErrorsNameTheColumn) {
  TempDir tmp;
  WriteFile(tmp / "a.csv", "y,k\n1,2\n");
  ConvertOptions o;
  o.out_dir = tmp / "out";
  auto missing = ParseConfig(R"pb(
    schema {
      label: "y"
      sparse { name: "k" }
      sparse { name: "j" }
    }
    column { column: "y" }
    column { column: "k" }
  )pb");
  EXPECT_TRUE(ContainsAll(ConvertDelimitedText(missing, {tmp / "a.csv"}, o).status().message(),
                          {"no column fills", "'j'"}));
  auto absent = ParseConfig(R"pb(
    schema {
      label: "y"
      sparse { name: "k" }
    }
    column { column: "y" }
    column { column: "kk" feature: "k" }
  )pb");
  EXPECT_TRUE(ContainsAll(ConvertDelimitedText(absent, {tmp / "a.csv"}, o).status().message(),
                          {tmp / "a.csv:1:", "no column 'kk'"}));
  auto hash = ParseConfig(R"pb(
    schema {
      label: "y"
      sparse { name: "k" }
    }
    column { column: "y" }
    column { column: "k" encoding: ENCODING_HASH }
  )pb");
  EXPECT_TRUE(ContainsAll(ConvertDelimitedText(hash, {tmp / "a.csv"}, o).status().message(),
                          {"'k'", "hash_buckets"}));
}

// The shipped BARS configs parse, and convert a line in the shape of each data set.
TEST(CsvConverterTest, ShippedBarsConfigsConvertTheirCsvForm) {
  const std::string dir = std::string(LOOM_SOURCE_DIR) + "/configs/data/";
  struct Case {
    std::string config, csv;
    int64_t sequences;
  };
  const std::vector<Case> cases = {
      {"bars_amazon_electronics_x1.pbtxt",
       "label,user_id,item_id,cate_id,item_history,cate_history\n"
       "1,1,10,3,11^12,3^4\n0,2,11,4,10,3\n",
       2},
      {"bars_taobao_ad_x1.pbtxt",
       "clk,userid,cms_segid,cms_group_id,final_gender_code,age_level,pvalue_level,"
       "shopping_level,occupation,new_user_class_level,adgroup_id,cate_id,campaign_id,customer,"
       "brand,pid,btag,price,cate_his,brand_his,btag_his,time_stamp\n"
       "0,581738,0,3,2,2,1,3,0,3,1,6406,83237,1,95766,430548_1007,1,39.0,6406^1,95766^2,1^2,"
       "1494137644\n",
       3},
      {"bars_kuai_video_x1.pbtxt",
       "user_id,item_id,is_click,pos_items,neg_items\n1,2,1,3^4^5,6^7\n", 2},
  };
  for (const Case& c : cases) {
    proto::DelimitedTextConfig config;
    ASSERT_TRUE(ReadTextProto(dir + c.config, &config).ok()) << c.config;
    TempDir tmp;
    WriteFile(tmp / "train.csv", c.csv);
    ConvertOptions o;
    o.out_dir = tmp / "out";
    auto r = ConvertDelimitedText(config, {tmp / "train.csv"}, o);
    ASSERT_TRUE(r.ok()) << c.config << ": " << r.status();
    EXPECT_GE(r->rows, 1) << c.config;
    EXPECT_EQ(r->schema.sequence_size(), c.sequences);
    EXPECT_TRUE(HasGroupId(r->schema));
  }
}

}  // namespace
}  // namespace loom::data
