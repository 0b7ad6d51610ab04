// Evaluation metrics on one process. Oracles: an O(n^2) pairwise AUC written here (ties 0.5),
// hand-computed gAUC / LogLoss / NE / calibration examples, and the exactness promise (any
// permutation of the samples gives the same bits).
#include "csrc/train/metrics.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include <gtest/gtest.h>

namespace loom::train {
namespace {

// Pairwise definition: over all (positive, negative) pairs, 1 if p+ > p-, 1/2 if equal.
double PairwiseAuc(const std::vector<float>& p, const std::vector<float>& y) {
  double wins = 0;
  int64_t pos = 0, neg = 0;
  for (size_t i = 0; i < p.size(); ++i) {
    if (y[i] == 1)
      ++pos;
    else
      ++neg;
    if (y[i] != 1) continue;
    for (size_t j = 0; j < p.size(); ++j) {
      if (y[j] != 0) continue;
      wins += p[i] > p[j] ? 1.0 : (p[i] == p[j] ? 0.5 : 0.0);
    }
  }
  return wins / (static_cast<double>(pos) * static_cast<double>(neg));
}

EvalSamples View(const std::vector<float>& p, const std::vector<float>& y,
                 const std::vector<int64_t>* u = nullptr) {
  EvalSamples s;
  s.predictions = p.data();
  s.labels = y.data();
  s.user_ids = u ? u->data() : nullptr;
  s.size = static_cast<int64_t>(p.size());
  return s;
}

bool SameBits(double a, double b) { return std::memcmp(&a, &b, sizeof(double)) == 0; }

TEST(MetricsTest, AucSmallHandExamples) {
  // The classic example: positives 0.35, 0.8; negatives 0.1, 0.4 -> 3 of 4 pairs won.
  std::vector<float> p = {0.1f, 0.4f, 0.35f, 0.8f}, y = {0, 0, 1, 1};
  EXPECT_DOUBLE_EQ(Auc(p.data(), y.data(), 4), 0.75);
  // All tied: 0.5. -0 and +0 tie.
  p = {0.5f, 0.5f, 0.5f, 0.5f};
  EXPECT_DOUBLE_EQ(Auc(p.data(), y.data(), 4), 0.5);
  p = {-0.0f, 0.0f};
  y = {1, 0};
  EXPECT_DOUBLE_EQ(Auc(p.data(), y.data(), 2), 0.5);
  // Perfect and inverted.
  p = {0.1f, 0.2f, 0.3f};
  y = {0, 1, 1};
  EXPECT_DOUBLE_EQ(Auc(p.data(), y.data(), 3), 1.0);
  y = {1, 0, 0};
  EXPECT_DOUBLE_EQ(Auc(p.data(), y.data(), 3), 0.0);
  // One class only: undefined.
  y = {1, 1, 1};
  EXPECT_TRUE(std::isnan(Auc(p.data(), y.data(), 3)));
  EXPECT_TRUE(std::isnan(Auc(p.data(), y.data(), 0)));
}

TEST(MetricsTest, AucMatchesPairwiseReferenceWithTies) {
  std::mt19937_64 rng(7);
  for (int levels : {3, 17, 1000000}) {  // heavy ties, some ties, almost none
    for (int n : {1, 2, 50, 2000}) {
      std::vector<float> p(n), y(n);
      for (int i = 0; i < n; ++i) {
        p[i] = static_cast<float>(rng() % levels) / static_cast<float>(levels);
        y[i] = (rng() % 3 == 0) ? 1.0f : 0.0f;
      }
      const double ref = PairwiseAuc(p, y);
      const double got = Auc(p.data(), y.data(), n);
      if (std::isnan(ref)) {
        EXPECT_TRUE(std::isnan(got));
      } else {
        EXPECT_NEAR(got, ref, 1e-15) << "levels " << levels << " n " << n;
      }
    }
  }
}

// user 1: p (0.9 0.1 0.5), y (1 0 0)      -> AUC 1,     n 3
// user 2: p (0.2 0.8 0.6 0.6), y (1 0 1 0) -> pairs (.2,.8) 0, (.2,.6) 0, (.6,.8) 0, (.6,.6) 1/2
//                                            -> AUC 1/8, n 4
// user 3: all positive, user 4: all negative -> skipped
// user 5: p (0.3 0.3), y (0 1)              -> AUC 1/2, n 2
// gAUC = (3 * 1 + 4 * 1/8 + 2 * 1/2) / (3 + 4 + 2) = 4.5 / 9 = 0.5
TEST(MetricsTest, GaucHandComputed) {
  struct S {
    int64_t u;
    float p, y;
  };
  std::vector<S> rows = {{1, 0.9f, 1}, {1, 0.1f, 0}, {1, 0.5f, 0}, {2, 0.2f, 1},
                         {2, 0.8f, 0}, {2, 0.6f, 1}, {2, 0.6f, 0}, {3, 0.3f, 1},
                         {3, 0.7f, 1}, {4, 0.4f, 0}, {5, 0.3f, 0}, {5, 0.3f, 1}};
  std::mt19937_64 rng(3);
  for (int shuffle = 0; shuffle < 5; ++shuffle) {
    std::vector<float> p, y;
    std::vector<int64_t> u;
    for (const S& r : rows) {
      p.push_back(r.p);
      y.push_back(r.y);
      u.push_back(r.u);
    }
    int64_t users = 0, samples = 0;
    EXPECT_DOUBLE_EQ(GroupAuc(p.data(), y.data(), u.data(), 12, &users, &samples), 0.5);
    EXPECT_EQ(users, 3);
    EXPECT_EQ(samples, 9);
    auto m = ComputeMetrics(View(p, y, &u));
    ASSERT_TRUE(m.ok()) << m.status();
    EXPECT_DOUBLE_EQ(m->gauc, 0.5);
    EXPECT_EQ(m->gauc_users, 3);
    EXPECT_EQ(m->gauc_samples, 9);
    std::shuffle(rows.begin(), rows.end(), rng);
  }
  // No qualifying user: NaN; no user ids: NaN.
  std::vector<float> p = {0.1f, 0.2f}, y = {1, 0};
  std::vector<int64_t> u = {1, 2};
  EXPECT_TRUE(std::isnan(GroupAuc(p.data(), y.data(), u.data(), 2)));
  auto m = ComputeMetrics(View(p, y));
  ASSERT_TRUE(m.ok());
  EXPECT_TRUE(std::isnan(m->gauc));
  EXPECT_DOUBLE_EQ(m->auc, 0.0);
}

TEST(MetricsTest, LogLossNeCalibrationHandComputed) {
  std::vector<float> p = {0.9f, 0.2f, 0.4f, 0.1f}, y = {1, 0, 0, 0};
  auto m = ComputeMetrics(View(p, y));
  ASSERT_TRUE(m.ok()) << m.status();
  const double ll = -(std::log(double(0.9f)) + std::log(1 - double(0.2f)) +
                      std::log(1 - double(0.4f)) + std::log(1 - double(0.1f))) /
                    4;
  EXPECT_NEAR(m->logloss, ll, 1e-15);
  EXPECT_EQ(m->num_samples, 4);
  EXPECT_EQ(m->num_positives, 1);
  EXPECT_DOUBLE_EQ(m->ctr, 0.25);
  const double h = -(0.25 * std::log(0.25) + 0.75 * std::log(0.75));
  EXPECT_NEAR(m->ne, ll / h, 1e-15);
  const double sum_p = double(0.9f) + double(0.2f) + double(0.4f) + double(0.1f);
  EXPECT_NEAR(m->mean_prediction, sum_p / 4, 1e-16);
  EXPECT_NEAR(m->calibration, sum_p / 1, 1e-15);
  EXPECT_DOUBLE_EQ(m->auc, 1.0);
  // NE against a given base rate.
  MetricOptions o;
  o.ne_base_ctr = 0.1;
  auto m2 = ComputeMetrics(View(p, y), o);
  ASSERT_TRUE(m2.ok());
  EXPECT_NEAR(m2->ne, ll / -(0.1 * std::log(0.1) + 0.9 * std::log(0.9)), 1e-15);
}

TEST(MetricsTest, LogLossClipsProbabilities) {
  // p = 0 with y = 1 and p = 1 with y = 0 cost -ln(1e-7) each; p = 1 with y = 1 costs
  // -ln(1 - 1e-7).
  std::vector<float> p = {0.0f, 1.0f, 1.0f}, y = {1, 0, 1};
  auto m = ComputeMetrics(View(p, y));
  ASSERT_TRUE(m.ok());
  const double want = (2 * -std::log(1e-7) - std::log(1 - 1e-7)) / 3;
  EXPECT_NEAR(m->logloss, want, 1e-14);
  EXPECT_TRUE(std::isfinite(m->logloss));
}

TEST(MetricsTest, NeOfTheBaseRatePredictorIsOne) {
  // Predicting the set's CTR for every sample has LogLoss = H(CTR): NE = 1.
  std::vector<float> p(1000, 0.125f), y(1000, 0.0f);
  for (int i = 0; i < 125; ++i) y[i * 8] = 1;
  auto m = ComputeMetrics(View(p, y));
  ASSERT_TRUE(m.ok());
  EXPECT_NEAR(m->ne, 1.0, 1e-15);
  EXPECT_NEAR(m->calibration, 1.0, 1e-15);
  EXPECT_DOUBLE_EQ(m->auc, 0.5);
  // Degenerate sets: no positives -> NE, calibration, AUC undefined.
  std::fill(y.begin(), y.end(), 0.0f);
  auto z = ComputeMetrics(View(p, y));
  ASSERT_TRUE(z.ok());
  EXPECT_TRUE(std::isnan(z->ne));
  EXPECT_TRUE(std::isnan(z->calibration));
  EXPECT_TRUE(std::isnan(z->auc));
  // Empty set.
  auto e = ComputeMetrics(EvalSamples{});
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->num_samples, 0);
  EXPECT_TRUE(std::isnan(e->logloss));
}

TEST(MetricsTest, ResultsAreBitIdenticalUnderPermutation) {
  std::mt19937_64 rng(11);
  const int n = 5000;
  std::vector<float> p(n), y(n);
  std::vector<int64_t> u(n);
  std::uniform_real_distribution<float> unif(0.0f, 1.0f);
  for (int i = 0; i < n; ++i) {
    p[i] = unif(rng);
    if (i % 5 == 0) p[i] = 0.5f;  // ties
    y[i] = unif(rng) < p[i] ? 1.0f : 0.0f;
    u[i] = static_cast<int64_t>(rng() % 300) - 150;  // negative ids too
  }
  auto a = ComputeMetrics(View(p, y, &u));
  ASSERT_TRUE(a.ok());
  std::vector<int> perm(n);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  std::vector<float> p2(n), y2(n);
  std::vector<int64_t> u2(n);
  for (int i = 0; i < n; ++i) {
    p2[i] = p[perm[i]];
    y2[i] = y[perm[i]];
    u2[i] = u[perm[i]];
  }
  auto b = ComputeMetrics(View(p2, y2, &u2));
  ASSERT_TRUE(b.ok());
  EXPECT_TRUE(SameBits(a->auc, b->auc));
  EXPECT_TRUE(SameBits(a->gauc, b->gauc));
  EXPECT_TRUE(SameBits(a->logloss, b->logloss));
  EXPECT_TRUE(SameBits(a->ne, b->ne));
  EXPECT_TRUE(SameBits(a->calibration, b->calibration));
  // And the values are right: AUC against the pairwise definition, LogLoss against a long
  // double sum (the fixed-point sum differs from it by at most n * 2^-64 relative to n).
  EXPECT_NEAR(a->auc, PairwiseAuc(p, y), 1e-15);
  long double ll = 0;
  for (int i = 0; i < n; ++i) {
    const double q = y[i] == 1 ? double(p[i]) : 1 - double(p[i]);
    ll += -std::log(std::min(std::max(q, 1e-7), 1 - 1e-7));
  }
  EXPECT_NEAR(a->logloss, static_cast<double>(ll / n), 1e-15);
  EXPECT_GT(a->gauc_users, 250);
}

TEST(MetricsTest, ValidationNamesTheSample) {
  std::vector<float> p = {0.5f, 1.5f}, y = {1, 0};
  EXPECT_EQ(ComputeMetrics(View(p, y)).status().message(),
            "eval sample 1: prediction 1.5 is not in [0, 1]");
  p = {0.5f, NAN};
  EXPECT_EQ(ComputeMetrics(View(p, y)).status().message(),
            "eval sample 1: prediction nan is not in [0, 1]");
  p = {0.5f, 0.5f};
  y = {0.5f, 1};
  EXPECT_EQ(ComputeMetrics(View(p, y)).status().message(),
            "eval sample 0: label 0.5 is not 0 or 1");
  y = {0, 1};
  MetricOptions o;
  o.ne_base_ctr = 1.0;
  EXPECT_EQ(ComputeMetrics(View(p, y), o).status().message(),
            "metric options: ne_base_ctr must be in (0, 1), got 1");
  o = MetricOptions();
  o.logloss_clip = 0;
  EXPECT_EQ(ComputeMetrics(View(p, y), o).status().message(),
            "metric options: logloss_clip must be in (0, 0.5), got 0");
}

TEST(MetricsTest, EvalBufferCollectsBatches) {
  EvalBuffer buf;
  const float p1[] = {0.1f, 0.9f}, y1[] = {0, 1}, p2[] = {0.4f}, y2[] = {1};
  const int64_t u1[] = {7, 7}, u2[] = {8};
  buf.Append(p1, y1, u1, 2);
  buf.Append(p2, y2, u2, 1);
  EXPECT_EQ(buf.size(), 3);
  EvalSamples s = buf.samples();
  ASSERT_NE(s.user_ids, nullptr);
  EXPECT_EQ(s.user_ids[2], 8);
  EXPECT_EQ(s.predictions[2], 0.4f);
  auto m = ComputeMetrics(s);
  ASSERT_TRUE(m.ok());
  EXPECT_DOUBLE_EQ(m->gauc, 1.0);  // user 7 perfect, user 8 one class
  EXPECT_EQ(m->gauc_users, 1);
  buf.Clear();
  EXPECT_EQ(buf.size(), 0);
  buf.Append(p2, y2, nullptr, 1);  // after Clear, ids may change
  EXPECT_EQ(buf.samples().user_ids, nullptr);
}

}  // namespace
}  // namespace loom::train
