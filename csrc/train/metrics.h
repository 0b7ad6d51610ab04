// Evaluation metrics of a CTR model: exact AUC, gAUC, LogLoss, NE, calibration, computed on one
// process (ComputeMetrics) or over the R ranks of a job (ComputeGlobalMetrics), exactly.
//
// Inputs: N samples, each a predicted probability p (float, in [0, 1]), a label y (float,
// exactly 0 or 1) and optionally a user id u (int64). Definitions:
//   AUC   = P(p+ > p-) + 0.5 P(p+ == p-) over all (positive, negative) pairs: the Mann-Whitney
//           statistic with average ranks for ties. Computed exactly by counting, in integers,
//           C2 = 2 * #(pairs with p+ > p-) + #(pairs with p+ == p-); AUC = C2 / (2 P N_neg)
//           (one rounding of C2 and one division). Predictions compare as floats (0 == -0).
//           NaN when either class is absent.
//   gAUC  = sum_u n_u AUC_u / sum_u n_u over the users u that have both classes (users whose
//           labels are all 0 or all 1 are skipped), n_u = the user's number of samples: the
//           DIN paper's user-weighted AUC, as FuxiCTR's gAUC. NaN when no user qualifies.
//   LogLoss = mean over samples of -ln clamp(y ? p : 1 - p, c, 1 - c): the cross-entropy with
//           the probabilities clipped to [c, 1 - c], c = MetricOptions::logloss_clip (1e-7);
//           natural log. (1 - p is formed before clipping, so both labels saturate at -ln c.)
//   NE    = LogLoss / H(b), H(b) = -(b ln b + (1 - b) ln(1 - b)): the normalized entropy of
//           He et al. 2014 ("Practical lessons from predicting clicks on ads at Facebook"). The
//           base rate b is MetricOptions::ne_base_ctr when set (e.g. the training set's CTR),
//           otherwise the evaluated set's own CTR (the default: NE then needs nothing but the
//           evaluated samples, and NE < 1 means "better than predicting the set's average").
//           NaN when H(b) == 0 (b is 0 or 1).
//   calibration = mean prediction / CTR = sum p / sum y; NaN without positives.
//
// Exactness and determinism. Every count is an integer; every sum of real numbers (LogLoss
// terms, predictions, the n_u AUC_u of gAUC) is accumulated in 128-bit fixed point with 64
// fractional bits, where addition is associative: each term is rounded once (to 2^-64, toward
// zero) and the total once. Hence the result does not depend on the order of the samples nor
// on how they are split over ranks: ComputeGlobalMetrics at any R returns the same bits as
// ComputeMetrics on the concatenated samples, on every rank.
//
// Distributed algorithms (all collectives on host buffers: the communicator must be an
// MPI (CPU) communicator; every rank calls with its local samples and the same options):
//   AUC, kAllGather:  AllGatherV of the (score, label) keys, every rank counts all of them:
//                     O(N) memory and O(N log N) work per rank; simple, for moderate N.
//   AUC, kSampleSort: sample sort by score: every rank sorts its keys, contributes evenly
//                     spaced score samples, R - 1 splitters are chosen from all samples, keys
//                     move with one AllToAllV to the rank owning their score range (all keys
//                     of one score land on one rank, so ties never straddle ranks), each rank
//                     counts C2 over its range, given the number of negatives on lower ranks
//                     (an AllGather of counts); C2 is summed in exact 128-bit integers.
//                     O(N / R) memory per rank when scores are spread out (one score shared by
//                     many samples lands on one rank).
//   gAUC:             users are hashed to ranks (SplitMix64(u) mod R); one AllToAllV brings
//                     all samples of a user together; each rank sums its users' terms; the
//                     fixed-point sums and counts are all-reduced.
// Both AUC methods count the same integer C2, so they agree exactly.
#ifndef LOOM_TRAIN_METRICS_H_
#define LOOM_TRAIN_METRICS_H_

#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "csrc/comm/communicator.h"
#include "csrc/core/status.h"

namespace loom::train {

// A read-only view of N evaluation samples (host memory).
struct EvalSamples {
  const float* predictions = nullptr;  // (N) probabilities in [0, 1]
  const float* labels = nullptr;       // (N) exactly 0.0f or 1.0f
  const int64_t* user_ids = nullptr;   // (N), or nullptr: gAUC is then not computed (NaN)
  int64_t size = 0;                    // N >= 0
};

// Collects evaluation batches on the host (the evaluator appends each batch's predictions).
// User ids are given with every batch or with none (a mix is a CHECK failure).
class EvalBuffer {
 public:
  // Copies n samples; user_ids may be nullptr (see above).
  void Append(const float* predictions, const float* labels, const int64_t* user_ids, int64_t n);
  void Clear();
  int64_t size() const { return static_cast<int64_t>(predictions_.size()); }
  // Valid until the next Append or Clear.
  EvalSamples samples() const;

 private:
  std::vector<float> predictions_;
  std::vector<float> labels_;
  std::vector<int64_t> user_ids_;
  bool has_user_ids_ = false;
  bool appended_ = false;
};

enum class AucMethod {
  kAuto,  // kAllGather when the global N <= allgather_max_samples, else kSampleSort
  kAllGather,
  kSampleSort,
};

struct MetricOptions {
  // Base rate b of NE's normalizer H(b), in (0, 1); unset: the evaluated set's CTR.
  std::optional<double> ne_base_ctr;
  // Probability clipping of LogLoss, in (0, 0.5).
  double logloss_clip = 1e-7;
  AucMethod auc_method = AucMethod::kAuto;
  int64_t allgather_max_samples = int64_t{1} << 22;
};

struct EvalMetrics {
  static constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
  int64_t num_samples = 0;
  int64_t num_positives = 0;
  double auc = kNaN;
  double gauc = kNaN;
  int64_t gauc_users = 0;    // users counted by gAUC (both classes present)
  int64_t gauc_samples = 0;  // their samples: the gAUC weight total
  double logloss = kNaN;
  double ne = kNaN;
  double ctr = kNaN;  // num_positives / num_samples
  double mean_prediction = kNaN;
  double calibration = kNaN;  // mean_prediction / ctr
  // "n=... auc=... gauc=... logloss=... ne=... calibration=..." (for logs).
  std::string ToString() const;
};

// InvalidArgument naming the first bad sample ("eval sample 12: label 0.5 is not 0 or 1",
// "eval sample 3: prediction nan is not in [0, 1]") or bad option.
Status ValidateEvalSamples(const EvalSamples& samples);
Status ValidateMetricOptions(const MetricOptions& options);

// All metrics of `samples` on this process.
StatusOr<EvalMetrics> ComputeMetrics(const EvalSamples& samples, const MetricOptions& options = {});

// All metrics of the union of every rank's `local` samples; collective over `comm` (every rank
// must call it, with the same options), and every rank returns the same result. If any rank's
// samples are invalid, every rank returns an error (the faulty rank its own message, the others
// "invalid eval samples on rank r"). gAUC is computed when every rank that has samples has user
// ids. FailedPrecondition when comm is not a host (CPU) communicator.
StatusOr<EvalMetrics> ComputeGlobalMetrics(comm::Communicator& comm, const EvalSamples& local,
                                           const MetricOptions& options = {});

// Single-process building blocks (inputs must be valid).
double Auc(const float* predictions, const float* labels, int64_t n);
// gAUC of the samples; *users and *samples (optional) receive the counted users and samples.
double GroupAuc(const float* predictions, const float* labels, const int64_t* user_ids, int64_t n,
                int64_t* users = nullptr, int64_t* samples = nullptr);

}  // namespace loom::train

#endif  // LOOM_TRAIN_METRICS_H_
