// `loom data synthetic`: a generator of industrial-like click logs with a planted click model
// whose Bayes-optimal (oracle) AUC it reports. The model and the features are described in
// data.proto (SyntheticConfig) and docs/datasets.md.
//
// Streaming and exact: row r is a pure function of (config, seed, r), drawn from Philox
// streams with Loom's own log/sin/cos (philox.h), so the output is bit-identical for any
// thread count and on any IEEE machine; memory is a block of rows, whatever the row count.
//
// Bayes-optimal: the label is Bernoulli(sigmoid(logit)) where the logit is a function of the
// written features only (SyntheticModel::Logit recomputes it from an Example), so no
// predictor of the label from these features has a higher expected AUC than sigmoid(logit).
// The reported oracle AUC is that predictor's AUC on the realized test labels.
#ifndef LOOM_DATA_SYNTHETIC_H_
#define LOOM_DATA_SYNTHETIC_H_

#include <cstdint>
#include <string>
#include <vector>

#include "csrc/core/status.h"
#include "csrc/data/batch.h"
#include "csrc/proto/data.pb.h"

namespace loom::data {

// Range checks with the field at fault ("synthetic config: history[0].max_length ...").
Status ValidateSyntheticConfig(const proto::SyntheticConfig& config);
// The schema of the generated data (see data.proto SyntheticConfig for the feature list).
proto::DataSchema SyntheticSchema(const proto::SyntheticConfig& config);

class SyntheticModel {
 public:
  // `config` must pass ValidateSyntheticConfig.
  explicit SyntheticModel(const proto::SyntheticConfig& config);

  // Fills row `row`'s features into *ex (label included) and returns its true logit.
  // Thread-safe.
  double Row(int64_t row, Example* ex) const;
  // The logit of the click model computed from the features of `ex` alone.
  double Logit(const Example& ex) const;
  const proto::DataSchema& schema() const { return schema_; }

 private:
  struct Rng;
  // A power law on ids 1..n with precomputed constants (see synthetic.cc).
  struct Zipf {
    int64_t n = 1;
    int mode = 0;  // 0: uniform (s = 0), 1: s = 1, 2: other s
    double log_top = 0, span = 0, inv_a = 0;
  };
  static Zipf MakeZipf(int64_t n, double s);
  static int64_t Draw(const Zipf& z, Rng* rng);
  int64_t ItemInCategory(Rng* rng, int64_t category) const;
  int64_t Category(int64_t item) const;
  int64_t FavoriteCategory(int64_t user, int j) const;
  double Effect(int table, int64_t id, double std) const;

  proto::SyntheticConfig config_;
  proto::DataSchema schema_;
  int num_contexts_ = 0;
  Zipf users_, items_, category_items_[2];  // [0]: categories with more items, [1]: fewer
  std::vector<Zipf> contexts_;
};

struct SyntheticOptions {
  std::string out_dir;
  std::string producer;
  double progress_interval_seconds = 5.0;
  int64_t exact_auc_limit = int64_t{16} << 20;  // pairs kept for the exact AUC (then histogram)
};

struct SyntheticResult {
  int64_t rows = 0, train_rows = 0, test_rows = 0;
  double oracle_auc = 0;  // on the test split (what a trained model is compared with)
  double oracle_auc_train = 0;
  double oracle_logloss = 0;  // test split, natural log
  double positive_rate = 0;   // test split
  bool auc_exact = true;
  proto::DataSchema schema;
  std::vector<std::string> train_files, test_files;
};

// Generates `rows` rows into out_dir/train and out_dir/test (the last floor(rows *
// test_fraction) rows), plus out_dir/schema.pbtxt, out_dir/synthetic_config.pbtxt and
// out_dir/synthetic.json (row counts, oracle AUC and log loss).
StatusOr<SyntheticResult> GenerateSynthetic(const proto::SyntheticConfig& config, int64_t rows,
                                            const SyntheticOptions& options);

}  // namespace loom::data

#endif  // LOOM_DATA_SYNTHETIC_H_
