// ComputeGlobalMetrics at 1, 2 and 4 ranks (ctest: train_metrics_mpi_test_np<R>). Every rank
// generates the whole evaluation set from a seed, takes its (uneven, possibly empty) slice, and
// checks that the global metrics are bit-identical to ComputeMetrics of the whole set (the
// single-rank result), for both AUC methods, on every rank.
#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include <gtest/gtest.h>
#include <mpi.h>

#include "csrc/comm/mpi_communicator.h"
#include "csrc/train/metrics.h"

namespace loom::train {
namespace {

struct Data {
  std::vector<float> p, y;
  std::vector<int64_t> u;
};

// n samples; `levels` distinct prediction values (ties); ~users distinct users.
Data MakeData(int n, int levels, int users, uint64_t seed) {
  std::mt19937_64 rng(seed);
  Data d;
  for (int i = 0; i < n; ++i) {
    const float p = static_cast<float>(rng() % levels) / static_cast<float>(levels - 1);
    d.p.push_back(p);
    d.y.push_back(static_cast<double>(rng() % 1000) / 1000.0 < 0.2 + 0.6 * p ? 1.0f : 0.0f);
    d.u.push_back(static_cast<int64_t>(rng() % users) * 7919 - 1000);
  }
  return d;
}

EvalSamples Slice(const Data& d, int64_t begin, int64_t end, bool with_users = true) {
  EvalSamples s;
  s.predictions = d.p.data() + begin;
  s.labels = d.y.data() + begin;
  s.user_ids = with_users ? d.u.data() + begin : nullptr;
  s.size = end - begin;
  return s;
}

// Uneven split: rank r gets a share proportional to (r + 1), except that rank 1 (when R > 2)
// gets nothing.
std::pair<int64_t, int64_t> MyRange(int64_t n, int rank, int size) {
  std::vector<int64_t> w(size);
  int64_t total_w = 0;
  for (int r = 0; r < size; ++r) {
    w[r] = (size > 2 && r == 1) ? 0 : r + 1;
    total_w += w[r];
  }
  int64_t begin = 0;
  for (int r = 0; r < rank; ++r) begin += n * w[r] / total_w;
  const int64_t end = rank == size - 1 ? n : begin + n * w[rank] / total_w;
  return {begin, end};
}

bool SameBits(double a, double b) { return std::memcmp(&a, &b, sizeof(double)) == 0; }

void ExpectSame(const EvalMetrics& a, const EvalMetrics& b, const char* what) {
  EXPECT_EQ(a.num_samples, b.num_samples) << what;
  EXPECT_EQ(a.num_positives, b.num_positives) << what;
  EXPECT_EQ(a.gauc_users, b.gauc_users) << what;
  EXPECT_EQ(a.gauc_samples, b.gauc_samples) << what;
  EXPECT_TRUE(SameBits(a.auc, b.auc)) << what << ": auc " << a.auc << " vs " << b.auc;
  EXPECT_TRUE(SameBits(a.gauc, b.gauc)) << what << ": gauc " << a.gauc << " vs " << b.gauc;
  EXPECT_TRUE(SameBits(a.logloss, b.logloss))
      << what << ": logloss " << a.logloss << " vs " << b.logloss;
  EXPECT_TRUE(SameBits(a.ne, b.ne)) << what << ": ne";
  EXPECT_TRUE(SameBits(a.calibration, b.calibration)) << what << ": calibration";
  EXPECT_TRUE(SameBits(a.mean_prediction, b.mean_prediction)) << what << ": mean_prediction";
}

class MetricsMpiTest : public testing::Test {
 protected:
  void SetUp() override {
    auto c = comm::MpiCommunicator::Create(MPI_COMM_WORLD);
    ASSERT_TRUE(c.ok()) << c.status();
    comm_ = std::move(c).value();
  }
  std::unique_ptr<comm::MpiCommunicator> comm_;
};

TEST_F(MetricsMpiTest, GlobalEqualsSingleRankForBothAucMethods) {
  struct Case {
    int n, levels, users;
  };
  for (const Case& k : {Case{6000, 50, 400}, Case{3000, 100000, 50}, Case{37, 3, 5}, Case{1, 2, 1},
                        Case{0, 2, 1}}) {
    const Data d = MakeData(k.n, k.levels, k.users, 1234 + k.n);
    auto whole = ComputeMetrics(Slice(d, 0, k.n));
    ASSERT_TRUE(whole.ok()) << whole.status();
    const auto [begin, end] = MyRange(k.n, comm_->rank(), comm_->size());
    for (AucMethod method : {AucMethod::kAllGather, AucMethod::kSampleSort, AucMethod::kAuto}) {
      MetricOptions o;
      o.auc_method = method;
      auto global = ComputeGlobalMetrics(*comm_, Slice(d, begin, end), o);
      ASSERT_TRUE(global.ok()) << global.status();
      ExpectSame(*global, *whole, "n/levels/method");
      if (k.n >= 37) {
        EXPECT_FALSE(std::isnan(global->auc));
        EXPECT_GT(global->gauc_users, 0);
      }
    }
  }
}

TEST_F(MetricsMpiTest, OneScoreForEverySampleStillAgrees) {
  // All predictions equal: the sample sort sends everything to one rank.
  Data d = MakeData(2000, 2, 30, 99);
  std::fill(d.p.begin(), d.p.end(), 0.25f);
  auto whole = ComputeMetrics(Slice(d, 0, 2000));
  ASSERT_TRUE(whole.ok());
  EXPECT_DOUBLE_EQ(whole->auc, 0.5);
  const auto [begin, end] = MyRange(2000, comm_->rank(), comm_->size());
  MetricOptions o;
  o.auc_method = AucMethod::kSampleSort;
  auto global = ComputeGlobalMetrics(*comm_, Slice(d, begin, end), o);
  ASSERT_TRUE(global.ok());
  ExpectSame(*global, *whole, "constant predictor");
}

TEST_F(MetricsMpiTest, AutoSwitchesToSampleSortAboveTheThreshold) {
  const Data d = MakeData(5000, 1000, 100, 5);
  auto whole = ComputeMetrics(Slice(d, 0, 5000));
  ASSERT_TRUE(whole.ok());
  const auto [begin, end] = MyRange(5000, comm_->rank(), comm_->size());
  MetricOptions o;
  o.allgather_max_samples = 100;  // kAuto -> kSampleSort here
  auto global = ComputeGlobalMetrics(*comm_, Slice(d, begin, end), o);
  ASSERT_TRUE(global.ok());
  ExpectSame(*global, *whole, "auto");
}

TEST_F(MetricsMpiTest, MissingUserIdsOnOneRankDisablesGaucEverywhere) {
  const Data d = MakeData(1000, 20, 40, 8);
  const auto [begin, end] = MyRange(1000, comm_->rank(), comm_->size());
  const bool with_users = comm_->rank() != comm_->size() - 1;
  auto global = ComputeGlobalMetrics(*comm_, Slice(d, begin, end, with_users));
  ASSERT_TRUE(global.ok());
  EXPECT_TRUE(std::isnan(global->gauc));
  EXPECT_EQ(global->gauc_users, 0);
  auto whole = ComputeMetrics(Slice(d, 0, 1000));
  ASSERT_TRUE(whole.ok());
  EXPECT_TRUE(SameBits(global->auc, whole->auc));
}

TEST_F(MetricsMpiTest, InvalidSamplesOnOneRankFailEveryRankWithoutHanging) {
  Data d = MakeData(400, 20, 10, 21);
  const auto [begin, end] = MyRange(400, comm_->rank(), comm_->size());
  const int bad_rank = comm_->size() - 1;
  if (comm_->rank() == bad_rank) d.y[end - 1] = 0.5f;
  auto global = ComputeGlobalMetrics(*comm_, Slice(d, begin, end));
  ASSERT_FALSE(global.ok());
  EXPECT_EQ(global.status().code(), StatusCode::kInvalidArgument);
  if (comm_->rank() == bad_rank) {
    EXPECT_EQ(global.status().message(), "rank " + std::to_string(bad_rank) + ": eval sample " +
                                             std::to_string(end - 1 - begin) +
                                             ": label 0.5 is not 0 or 1");
  } else {
    EXPECT_EQ(
        global.status().message(),
        "invalid eval samples on rank " + std::to_string(bad_rank) + " (its log has the details)");
  }
  // The communicator is still usable afterwards (no rank was left inside a collective).
  auto ok = ComputeGlobalMetrics(*comm_, EvalSamples{});
  EXPECT_TRUE(ok.ok());
}

}  // namespace
}  // namespace loom::train
