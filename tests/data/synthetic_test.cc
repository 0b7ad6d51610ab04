// The synthetic generator: determinism (any thread count), the oracle logit as a function of
// the written features, the reported oracle AUC against an independent computation, the label
// rate against the click model, power-law ids; and the AUC accumulator.
#include "csrc/data/synthetic.h"

#include <algorithm>
#include <cmath>
#include <map>

#include <gtest/gtest.h>
#include <omp.h>

#include "csrc/core/philox.h"
#include "csrc/data/auc.h"
#include "csrc/data/reader.h"
#include "csrc/data/schema.h"
#include "tests/data/data_test_util.h"

namespace loom::data {
namespace {

using testing::ContainsAll;
using testing::TempDir;

proto::SyntheticConfig SmallConfig() {
  proto::SyntheticConfig c;
  Status s = ParseTextProto(R"pb(
                              name: "small"
                              seed: 5
                              block_rows: 500
                              test_fraction: 0.25
                              num_users: 300
                              num_items: 400
                              num_categories: 20
                              context { name: "device" vocabulary_size: 5 }
                              context { name: "tags" vocabulary_size: 50 max_values: 3 }
                              num_dense: 3
                              history { name: "click" max_length: 12 min_length: 2 }
                              history { name: "view" max_length: 5 with_categories: false }
                            )pb",
                            "SmallConfig", &c);
  EXPECT_TRUE(s.ok()) << s;
  return c;
}

std::vector<Example> ReadAll(const std::vector<std::string>& files) {
  return testing::ReadAll(files, 256);
}

// AUC by counting every (positive, negative) pair: the definition, O(P N).
double BruteForceAuc(const std::vector<double>& scores, const std::vector<bool>& labels) {
  double wins = 0;
  int64_t pos = 0, neg = 0;
  for (size_t i = 0; i < scores.size(); ++i) {
    if (!labels[i]) continue;
    ++pos;
    for (size_t j = 0; j < scores.size(); ++j) {
      if (labels[j]) continue;
      wins += scores[i] > scores[j] ? 1.0 : scores[i] == scores[j] ? 0.5 : 0.0;
    }
  }
  for (bool y : labels) neg += !y;
  return wins / (static_cast<double>(pos) * neg);
}

TEST(SyntheticTest, QuickstartConfigHasTheAdvertisedShape) {
  proto::SyntheticConfig c;
  ASSERT_TRUE(
      ReadTextProto(std::string(LOOM_SOURCE_DIR) + "/configs/data/synthetic_quickstart.pbtxt", &c)
          .ok());
  ASSERT_TRUE(ValidateSyntheticConfig(c).ok());
  const proto::DataSchema s = SyntheticSchema(c);
  EXPECT_EQ(s.sparse_size(), 8);
  EXPECT_EQ(s.dense_size(), 2);
  ASSERT_EQ(s.sequence_size(), 2);
  for (const auto& q : s.sequence()) {
    EXPECT_GE(q.max_length(), 20);
    EXPECT_LE(q.max_length(), 30);
  }
  for (const auto& f : s.sparse()) EXPECT_LE(f.vocabulary_size(), 5000) << f.name();
  EXPECT_EQ(s.group_id(), "user_id");
}

TEST(SyntheticTest, OutputIsIdenticalForAnyThreadCount) {
  TempDir a, b;
  SyntheticOptions o;
  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  o.out_dir = a.path();
  auto ra = GenerateSynthetic(SmallConfig(), 3000, o);
  omp_set_num_threads(3);
  o.out_dir = b.path();
  auto rb = GenerateSynthetic(SmallConfig(), 3000, o);
  omp_set_num_threads(saved);
  ASSERT_TRUE(ra.ok() && rb.ok());
  EXPECT_EQ(testing::ReadFile(ra->train_files[0]), testing::ReadFile(rb->train_files[0]));
  EXPECT_EQ(testing::ReadFile(ra->test_files[0]), testing::ReadFile(rb->test_files[0]));
  EXPECT_EQ(ra->oracle_auc, rb->oracle_auc);
  EXPECT_EQ(ra->train_rows, 2250);
  EXPECT_EQ(ra->test_rows, 750);
}

TEST(SyntheticTest, OracleLogitIsAFunctionOfTheWrittenFeatures) {
  TempDir tmp;
  const proto::SyntheticConfig c = SmallConfig();
  SyntheticOptions o;
  o.out_dir = tmp.path();
  auto r = GenerateSynthetic(c, 1200, o);
  ASSERT_TRUE(r.ok());
  const SyntheticModel model(c);
  auto rows = ReadAll(r->train_files);
  const auto test = ReadAll(r->test_files);
  rows.insert(rows.end(), test.begin(), test.end());
  ASSERT_EQ(rows.size(), 1200u);
  Example ex;
  for (int64_t i = 0; i < 1200; ++i) {
    const double logit = model.Row(i, &ex);
    testing::ExpectSameExample(ex, rows[i], "row " + std::to_string(i));
    ASSERT_EQ(model.Logit(rows[i]), logit) << "row " << i;  // bit for bit
    // Shapes: histories within [min, max], categories aligned with items.
    ASSERT_GE(rows[i].sequences[0].size(), 2u);
    ASSERT_LE(rows[i].sequences[0].size(), 12u);
    ASSERT_EQ(rows[i].sequences[1].size(), rows[i].sequences[0].size());
    for (size_t k = 0; k < rows[i].sequences[0].size(); ++k) {
      ASSERT_EQ(rows[i].sequences[1][k], 1 + (rows[i].sequences[0][k] - 1) % 20);
    }
    ASSERT_EQ(rows[i].sparse_ids[2][0], 1 + (rows[i].sparse_ids[1][0] - 1) % 20);
    ASSERT_GE(rows[i].sparse_ids[4].size(), 1u);
    ASSERT_LE(rows[i].sparse_ids[4].size(), 3u);
  }
}

TEST(SyntheticTest, ReportedOracleAucMatchesAnIndependentComputation) {
  TempDir tmp;
  const proto::SyntheticConfig c = SmallConfig();
  SyntheticOptions o;
  o.out_dir = tmp.path();
  auto r = GenerateSynthetic(c, 6000, o);
  ASSERT_TRUE(r.ok());
  const SyntheticModel model(c);
  for (int split = 0; split < 2; ++split) {
    std::vector<double> scores;
    std::vector<bool> labels;
    for (const Example& e : ReadAll(split == 0 ? r->test_files : r->train_files)) {
      scores.push_back(model.Logit(e));
      labels.push_back(e.label > 0.5f);
    }
    const double want = BruteForceAuc(scores, labels);
    EXPECT_NEAR(split == 0 ? r->oracle_auc : r->oracle_auc_train, want, 1e-12);
  }
  EXPECT_GT(r->oracle_auc, 0.6);
  EXPECT_LT(r->oracle_auc, 0.99);
  EXPECT_TRUE(r->auc_exact);
  EXPECT_TRUE(ContainsAll(testing::ReadFile(tmp / "synthetic.json"),
                          {"\"oracle_auc\": ", "\"test_rows\": 1500"}));
  proto::SyntheticConfig echoed;
  ASSERT_TRUE(ReadTextProto(tmp / "synthetic_config.pbtxt", &echoed).ok());
  EXPECT_EQ(echoed.seed(), 5u);
}

TEST(SyntheticTest, LabelRateMatchesTheClickModel) {
  const proto::SyntheticConfig c = SmallConfig();
  const SyntheticModel model(c);
  Example ex;
  double sum_p = 0, var = 0, sum_y = 0;
  const int n = 20000;
  for (int64_t i = 0; i < n; ++i) {
    const double p = 1.0 / (1.0 + std::exp(-model.Row(i, &ex)));
    sum_p += p;
    var += p * (1 - p);
    sum_y += ex.label;
  }
  // The labels are independent Bernoulli(p_i): their sum is within 5 standard deviations.
  EXPECT_NEAR(sum_y, sum_p, 5 * std::sqrt(var));
}

TEST(SyntheticTest, IdsFollowThePowerLaw) {
  proto::SyntheticConfig c = SmallConfig();
  c.set_user_zipf(1.0);
  c.set_num_users(1000);
  const SyntheticModel model(c);
  Example ex;
  std::map<int64_t, int64_t> count;
  const int n = 60000;
  for (int64_t i = 0; i < n; ++i) {
    model.Row(i, &ex);
    ++count[ex.sparse_ids[0][0]];
  }
  // P(k) = log((k + 1) / k) / log(n + 1) for s = 1.
  for (int64_t k : {1, 2, 5}) {
    const double p = std::log((k + 1.0) / k) / std::log(1001.0);
    EXPECT_NEAR(static_cast<double>(count[k]) / n, p, 5 * std::sqrt(p * (1 - p) / n)) << k;
  }
  EXPECT_GE(count.begin()->first, 1);
  EXPECT_LE(count.rbegin()->first, 1000);
}

TEST(SyntheticTest, ValidationNamesTheField) {
  proto::SyntheticConfig c = SmallConfig();
  c.mutable_history(0)->set_min_length(20);
  EXPECT_TRUE(ContainsAll(ValidateSyntheticConfig(c).message(), {"history[0]", "min_length"}));
  c = SmallConfig();
  c.set_test_fraction(1.0);
  EXPECT_TRUE(ContainsAll(ValidateSyntheticConfig(c).message(), {"test_fraction"}));
  c = SmallConfig();
  c.mutable_context(1)->set_name("user_id");
  EXPECT_TRUE(ContainsAll(ValidateSyntheticConfig(c).message(), {"duplicate", "user_id"}));
}

TEST(AucAccumulatorTest, ExactWithTiesAndHistogramMatchTheDefinition) {
  std::vector<double> scores;
  std::vector<bool> labels;
  for (int i = 0; i < 3000; ++i) {
    const uint32_t u = PhiloxBlock(3, 1, i).v[0];
    const double s = static_cast<double>(u % 200) / 10.0 - 10.0;  // ties: 200 distinct values
    scores.push_back(s);
    labels.push_back(((u >> 8) % 1000) < 500 + 40 * s);
  }
  const double want = BruteForceAuc(scores, labels);
  AucAccumulator exact, hist(/*exact_limit=*/100);
  for (size_t i = 0; i < scores.size(); ++i) {
    exact.Add(scores[i], labels[i]);
    hist.Add(scores[i], labels[i]);
  }
  EXPECT_TRUE(exact.exact());
  EXPECT_FALSE(hist.exact());
  EXPECT_NEAR(exact.Auc(), want, 1e-12);
  EXPECT_NEAR(hist.Auc(), want, 1e-12);  // scores on a 0.1 grid never share a histogram bin
  AucAccumulator one_class;
  one_class.Add(1.0, true);
  EXPECT_EQ(one_class.Auc(), 0.5);
}

}  // namespace
}  // namespace loom::data
