// What a run writes for people and scripts: rank 0's progress lines and the JSON lines of
// <run_dir>/metrics.jsonl (one object per evaluation) and <run_dir>/train_log.jsonl (one
// object per progress line).
//
// metrics.jsonl object, keys in this order (numbers in the shortest form that reads back as
// the same double; NaN is null):
//   {"step": 500, "epoch": 0, "auc": 0.78, "gauc": 0.71, "logloss": 0.52, "ne": 0.83,
//    "calibration": 1.01, "mean_prediction": 0.31, "ctr": 0.30, "num_samples": 40000,
//    "samples_per_sec": 15234.5, "train_loss": 0.51, "lr": 0.001, "elapsed_sec": 12.3}
// samples_per_sec is the global training throughput since the previous evaluation (eval time
// excluded); train_loss the mean training loss over the same steps.
// train_log.jsonl object: {"step", "epoch", "loss", "samples_per_sec", "lr", "elapsed_sec"};
// loss is the global mean over the steps since the previous line (log_every_steps: 1 gives
// every step's loss).
#ifndef LOOM_TRAIN_RUN_LOG_H_
#define LOOM_TRAIN_RUN_LOG_H_

#include <cstdint>
#include <string>

#include "csrc/core/status.h"
#include "csrc/train/metrics.h"

namespace loom::train {

inline constexpr char kMetricsFileName[] = "metrics.jsonl";
inline constexpr char kTrainLogFileName[] = "train_log.jsonl";

// A JSON number (the shortest %g form that reads back exactly; integers without exponent) or
// null for NaN/inf.
std::string JsonNumber(double v);

struct EvalRecord {
  int64_t step = 0;
  int64_t epoch = 0;
  EvalMetrics metrics;
  double samples_per_sec = 0;
  double train_loss = EvalMetrics::kNaN;
  double lr = 0;
  double elapsed_sec = 0;
};
std::string EvalRecordJson(const EvalRecord& r);

struct ProgressRecord {
  int64_t step = 0;
  int64_t total_steps = 0;  // 0 = unknown
  int64_t epoch = 0;
  double loss = 0;
  double samples_per_sec = 0;
  double lr = 0;
  double elapsed_sec = 0;
  double eta_sec = -1;  // < 0 = unknown
};
std::string ProgressRecordJson(const ProgressRecord& r);
// "step 200/1000 | epoch 0 | loss 0.5123 | 15234 samples/s | lr 0.001 | elapsed 12s | ETA 48s"
std::string ProgressLine(const ProgressRecord& r);
// "1h02m03s", "4m05s", "12s" (seconds rounded).
std::string FormatDuration(double seconds);

// Appends one line (a '\n' is added) to `path`, creating it; errors name the path.
Status AppendLine(const std::string& path, const std::string& line);

}  // namespace loom::train

#endif  // LOOM_TRAIN_RUN_LOG_H_
