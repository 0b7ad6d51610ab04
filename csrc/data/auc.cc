#include "csrc/data/auc.h"

#include <algorithm>

namespace loom::data {

int AucAccumulator::Bin(double score) const {
  const double x = (score - kLo) / (kHi - kLo) * kBins;
  if (!(x >= 0)) return 0;
  if (x >= kBins) return kBins - 1;
  return static_cast<int>(x);
}

void AucAccumulator::Add(double score, bool positive) {
  (positive ? positives_ : negatives_) += 1;
  if (histogram_.empty()) {
    pairs_.emplace_back(score, positive);
    if (static_cast<int64_t>(pairs_.size()) > exact_limit_) SwitchToHistogram();
    return;
  }
  histogram_[2 * Bin(score) + (positive ? 1 : 0)] += 1;
}

void AucAccumulator::SwitchToHistogram() {
  histogram_.assign(2 * static_cast<size_t>(kBins), 0);
  for (const auto& [s, p] : pairs_) histogram_[2 * Bin(s) + (p ? 1 : 0)] += 1;
  pairs_.clear();
  pairs_.shrink_to_fit();
}

double AucAccumulator::Auc() const {
  if (positives_ == 0 || negatives_ == 0) return 0.5;
  // Sum over positives of (negatives ranked below + half the tied negatives).
  long double wins = 0;
  if (histogram_.empty()) {
    std::vector<std::pair<double, bool>> v = pairs_;
    std::sort(v.begin(), v.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
    int64_t neg_below = 0;
    for (size_t i = 0; i < v.size();) {
      size_t j = i;
      int64_t pos = 0, neg = 0;
      while (j < v.size() && v[j].first == v[i].first) {
        (v[j].second ? pos : neg) += 1;
        ++j;
      }
      wins += pos * (neg_below + 0.5L * neg);
      neg_below += neg;
      i = j;
    }
  } else {
    uint64_t neg_below = 0;
    for (int b = 0; b < kBins; ++b) {
      const uint64_t neg = histogram_[2 * b], pos = histogram_[2 * b + 1];
      wins += pos * (neg_below + 0.5L * neg);
      neg_below += neg;
    }
  }
  return static_cast<double>(wins / (static_cast<long double>(positives_) * negatives_));
}

}  // namespace loom::data
