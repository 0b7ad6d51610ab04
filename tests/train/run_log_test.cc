// Tests of the run files' formatting (csrc/train/run_log.h): JSON numbers read back as the
// same double, NaN is null, strings are escaped, the key order of metrics.jsonl, durations.
#include "csrc/train/run_log.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>

#include <gtest/gtest.h>

namespace loom::train {
namespace {

TEST(RunLogTest, JsonNumbersRoundTrip) {
  for (double v :
       {0.0, 1.0, -3.0, 0.1, 1.0 / 3.0, 0.7812345678901234, 1e-300, 123456789.125, -2.5e-7}) {
    const std::string s = JsonNumber(v);
    EXPECT_EQ(std::strtod(s.c_str(), nullptr), v) << s;
  }
  EXPECT_EQ(JsonNumber(42.0), "42");
  EXPECT_EQ(JsonNumber(std::nan("")), "null");
  EXPECT_EQ(JsonNumber(std::numeric_limits<double>::infinity()), "null");
}

TEST(RunLogTest, EvalRecordHasTheDocumentedKeysInOrder) {
  EvalRecord r;
  r.step = 500;
  r.epoch = 1;
  r.metrics.auc = 0.75;
  r.metrics.gauc = 0.7;
  r.metrics.logloss = 0.5;
  r.metrics.ne = 0.8;
  r.metrics.calibration = 1.01;
  r.metrics.mean_prediction = 0.3;
  r.metrics.ctr = 0.297;
  r.metrics.num_samples = 40000;
  r.samples_per_sec = 15234.5;
  r.train_loss = 0.51;
  r.lr = 0.001;
  r.elapsed_sec = 12.25;
  EXPECT_EQ(EvalRecordJson(r),
            "{\"step\": 500, \"epoch\": 1, \"auc\": 0.75, \"gauc\": 0.7, \"logloss\": 0.5, "
            "\"ne\": 0.8, \"calibration\": 1.01, \"mean_prediction\": 0.3, \"ctr\": 0.297, "
            "\"num_samples\": 40000, \"samples_per_sec\": 15234.5, \"train_loss\": 0.51, "
            "\"lr\": 0.001, \"elapsed_sec\": 12.25}");
  r.metrics.gauc = EvalMetrics::kNaN;  // e.g. no user with both classes
  EXPECT_NE(EvalRecordJson(r).find("\"gauc\": null"), std::string::npos);
}

TEST(RunLogTest, ProgressLineAndDurations) {
  EXPECT_EQ(FormatDuration(0), "0s");
  EXPECT_EQ(FormatDuration(59.6), "1m00s");
  EXPECT_EQ(FormatDuration(3723), "1h02m03s");
  EXPECT_EQ(FormatDuration(-1), "?");
  ProgressRecord p;
  p.step = 200;
  p.total_steps = 1000;
  p.epoch = 0;
  p.loss = 0.51234;
  p.samples_per_sec = 15234.4;
  p.lr = 0.001;
  p.elapsed_sec = 12;
  p.eta_sec = 48;
  EXPECT_EQ(ProgressLine(p),
            "step 200/1000 | epoch 0 | loss 0.51234 | 15234 samples/s | "
            "lr 0.001 | elapsed 12s | ETA 48s");
  p.total_steps = 0;
  p.eta_sec = -1;
  EXPECT_EQ(ProgressLine(p),
            "step 200 | epoch 0 | loss 0.51234 | 15234 samples/s | "
            "lr 0.001 | elapsed 12s | ETA ?");
}

TEST(RunLogTest, AppendLineAppendsAndNamesThePath) {
  const std::string path = (std::filesystem::temp_directory_path() /
                            ("loom_run_log_test_" + std::to_string(::getpid()) + ".jsonl"))
                               .string();
  std::filesystem::remove(path);
  ASSERT_TRUE(AppendLine(path, "{\"a\": 1}").ok());
  ASSERT_TRUE(AppendLine(path, "{\"a\": 2}").ok());
  std::ifstream in(path);
  std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(all, "{\"a\": 1}\n{\"a\": 2}\n");
  std::filesystem::remove(path);
  Status bad = AppendLine("/nonexistent-dir/x.jsonl", "x");
  EXPECT_FALSE(bad.ok());
  EXPECT_NE(bad.message().find("/nonexistent-dir/x.jsonl"), std::string::npos) << bad;
}

}  // namespace
}  // namespace loom::train
