// ROC AUC of (score, label) pairs, accumulated in a stream: exact (midranks for ties) while at
// most `exact_limit` pairs have been added, then on a histogram of 2^22 bins over the score
// range [-40, 40] (ties within a bin count one half; the error is below the bin width's effect
// on the ranking, ~1e-5 for smooth score densities). Used for the generator's oracle AUC.
#ifndef LOOM_DATA_AUC_H_
#define LOOM_DATA_AUC_H_

#include <cstdint>
#include <utility>
#include <vector>

namespace loom::data {

class AucAccumulator {
 public:
  explicit AucAccumulator(int64_t exact_limit = int64_t{16} << 20) : exact_limit_(exact_limit) {}

  void Add(double score, bool positive);
  // AUC in [0, 1]; 0.5 when either class is empty.
  double Auc() const;
  bool exact() const { return histogram_.empty(); }
  int64_t count() const { return positives_ + negatives_; }
  int64_t positives() const { return positives_; }

  static constexpr int kBins = 1 << 22;
  static constexpr double kLo = -40.0, kHi = 40.0;

 private:
  void SwitchToHistogram();
  int Bin(double score) const;

  int64_t exact_limit_;
  std::vector<std::pair<double, bool>> pairs_;
  std::vector<uint64_t> histogram_;  // 2 counters per bin: negatives, positives
  int64_t positives_ = 0, negatives_ = 0;
};

}  // namespace loom::data

#endif  // LOOM_DATA_AUC_H_
