// Exact evaluation metrics; see metrics.h for the definitions and the distributed algorithms.
//
// Why integers and fixed point: a floating-point sum depends on the order of its terms, so the
// same evaluation set split over 1, 2 or 4 ranks would give results that differ in the last
// bits, and a reduce-on-plateau schedule or an early-stopping rule fed by them could then take
// different decisions at different world sizes. Counting AUC pairs in integers and summing real
// terms in 128-bit fixed point makes every metric a function of the multiset of samples only.
#include "csrc/train/metrics.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstring>
#include <sstream>

#include <glog/logging.h>

namespace loom::train {
namespace {

using u128 = unsigned __int128;

// Sum of non-negative doubles in fixed point with 64 fractional bits: each term is rounded
// toward zero to a multiple of 2^-64, then added exactly (mod 2^128). Terms must be < 2^63 and
// the total < 2^64 (LogLoss terms are <= 16.2, prediction terms <= 1, gAUC terms <= n_u).
class FixedSum {
 public:
  static constexpr int kLimbs = 4;  // 32-bit limbs, for exact all-reduction in int64

  void Add(double x) {
    DCHECK(x >= 0.0 && x < 9.2e18) << x;
    raw_ += static_cast<u128>(std::ldexp(x, 64));
  }
  double Value() const { return std::ldexp(static_cast<double>(raw_), -64); }

  u128 raw() const { return raw_; }
  void set_raw(u128 r) { raw_ = r; }

 private:
  u128 raw_ = 0;
};

// A 128-bit unsigned value as 4 limbs of 32 bits in int64: a sum over R < 2^31 ranks of each
// limb cannot overflow, so an int64 AllReduce(kSum) adds 128-bit values exactly.
void ToLimbs(u128 v, int64_t* out) {
  for (int k = 0; k < FixedSum::kLimbs; ++k) {
    out[k] = static_cast<int64_t>(static_cast<uint64_t>(v >> (32 * k)) & 0xffffffffull);
  }
}
u128 FromLimbs(const int64_t* in) {
  u128 r = 0;
  for (int k = 0; k < FixedSum::kLimbs; ++k)
    r += static_cast<u128>(static_cast<uint64_t>(in[k])) << (32 * k);
  return r;
}

// Sort key of a sample: the prediction's bits (monotone for p >= 0; -0 is folded into +0 so
// that equal floats give equal keys) and the label in the lowest bit. Keys < 2^33.
uint64_t Key(float p, float y) {
  if (p == 0.0f) p = 0.0f;
  uint32_t bits;
  std::memcpy(&bits, &p, sizeof(bits));
  return (static_cast<uint64_t>(bits) << 1) | (y != 0.0f ? 1u : 0u);
}
uint64_t ScoreOf(uint64_t key) { return key >> 1; }

// The exact AUC statistic: C2 = 2 #(p+ > p-) + #(p+ == p-).
struct AucCounts {
  u128 c2 = 0;
  int64_t positives = 0;
  int64_t negatives = 0;
};

double AucValue(const AucCounts& c) {
  if (c.positives == 0 || c.negatives == 0) return EvalMetrics::kNaN;
  return static_cast<double>(c.c2) /
         (2.0 * static_cast<double>(c.positives) * static_cast<double>(c.negatives));
}

// Counts C2 over sorted keys, given `neg_offset` negatives with smaller scores elsewhere (the
// keys of lower ranks in the sample sort). Within one score, each positive beats every
// negative with a smaller score (2 each) and ties with the negatives of its score (1 each).
AucCounts CountSorted(const uint64_t* keys, int64_t n, int64_t neg_offset) {
  AucCounts c;
  u128 neg_before = static_cast<u128>(neg_offset);
  for (int64_t i = 0; i < n;) {
    const uint64_t score = ScoreOf(keys[i]);
    int64_t pos_g = 0, neg_g = 0;
    for (; i < n && ScoreOf(keys[i]) == score; ++i) (keys[i] & 1u ? pos_g : neg_g)++;
    c.c2 += static_cast<u128>(pos_g) * (2 * neg_before + static_cast<u128>(neg_g));
    neg_before += static_cast<u128>(neg_g);
    c.positives += pos_g;
    c.negatives += neg_g;
  }
  return c;
}

std::vector<uint64_t> SortedKeys(const EvalSamples& s) {
  std::vector<uint64_t> keys(static_cast<size_t>(s.size));
  for (int64_t i = 0; i < s.size; ++i) keys[i] = Key(s.predictions[i], s.labels[i]);
  std::sort(keys.begin(), keys.end());
  return keys;
}

struct UserKey {
  int64_t user;
  uint64_t key;
  bool operator<(const UserKey& o) const { return user != o.user ? user < o.user : key < o.key; }
};

struct GaucPartial {
  FixedSum weighted;  // sum of n_u * AUC_u
  int64_t users = 0;
  int64_t samples = 0;
};

// gAUC terms of whole users (all samples of each user are in `v`).
GaucPartial GaucOfUsers(std::vector<UserKey>* v) {
  std::sort(v->begin(), v->end());
  GaucPartial g;
  std::vector<uint64_t> keys;
  const size_t n = v->size();
  for (size_t i = 0; i < n;) {
    size_t j = i;
    keys.clear();
    for (; j < n && (*v)[j].user == (*v)[i].user; ++j) keys.push_back((*v)[j].key);
    const AucCounts c = CountSorted(keys.data(), static_cast<int64_t>(keys.size()), 0);
    if (c.positives > 0 && c.negatives > 0) {
      const int64_t n_u = static_cast<int64_t>(keys.size());
      g.weighted.Add(static_cast<double>(n_u) * AucValue(c));
      ++g.users;
      g.samples += n_u;
    }
    i = j;
  }
  return g;
}

double GaucValue(const GaucPartial& g) {
  return g.samples > 0 ? g.weighted.Value() / static_cast<double>(g.samples) : EvalMetrics::kNaN;
}

// The per-sample sums: LogLoss terms and predictions.
struct SampleSums {
  FixedSum logloss;
  FixedSum predictions;
  int64_t positives = 0;
};

SampleSums SumSamples(const EvalSamples& s, double clip) {
  SampleSums out;
  for (int64_t i = 0; i < s.size; ++i) {
    // The probability given to the observed label, clipped to [c, 1 - c]. 1 - p is computed
    // before clipping so that both labels saturate at exactly -ln(c).
    const double p = static_cast<double>(s.predictions[i]);
    const bool positive = s.labels[i] != 0.0f;
    const double q = std::min(std::max(positive ? p : 1.0 - p, clip), 1.0 - clip);
    out.logloss.Add(-std::log(q));
    out.predictions.Add(static_cast<double>(s.predictions[i]));
    out.positives += positive ? 1 : 0;
  }
  return out;
}

double Entropy(double b) {
  if (!(b > 0.0 && b < 1.0)) return 0.0;
  return -(b * std::log(b) + (1.0 - b) * std::log(1.0 - b));
}

EvalMetrics Finish(int64_t n, const SampleSums& sums, const AucCounts& auc,
                   const std::optional<GaucPartial>& gauc, const MetricOptions& options) {
  EvalMetrics m;
  m.num_samples = n;
  m.num_positives = sums.positives;
  m.auc = AucValue(auc);
  if (gauc) {
    m.gauc = GaucValue(*gauc);
    m.gauc_users = gauc->users;
    m.gauc_samples = gauc->samples;
  }
  if (n > 0) {
    const double dn = static_cast<double>(n);
    m.logloss = sums.logloss.Value() / dn;
    m.ctr = static_cast<double>(sums.positives) / dn;
    m.mean_prediction = sums.predictions.Value() / dn;
    if (sums.positives > 0) {
      m.calibration = sums.predictions.Value() / static_cast<double>(sums.positives);
    }
    const double h = Entropy(options.ne_base_ctr.value_or(m.ctr));
    if (h > 0.0) m.ne = m.logloss / h;
  }
  return m;
}

std::string Num(double v) {
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof(buf), v);
  return std::string(buf, r.ptr);
}

uint64_t SplitMix64(uint64_t x) {
  uint64_t z = x + 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

std::vector<int64_t> Displacements(const std::vector<int64_t>& counts) {
  std::vector<int64_t> displs(counts.size(), 0);
  for (size_t i = 1; i < counts.size(); ++i) displs[i] = displs[i - 1] + counts[i - 1];
  return displs;
}

int64_t Total(const std::vector<int64_t>& counts) {
  int64_t t = 0;
  for (int64_t c : counts) t += c;
  return t;
}

// Every rank receives `send_counts[p]` from each peer p: exchanges the counts themselves.
std::vector<int64_t> ExchangeCounts(comm::Communicator& comm,
                                    const std::vector<int64_t>& send_counts) {
  const int r = comm.size();
  std::vector<int64_t> ones(r, 1), displs(r);
  for (int p = 0; p < r; ++p) displs[p] = p;
  std::vector<int64_t> recv_counts(r, 0);
  comm.AllToAllV(send_counts.data(), ones, displs, recv_counts.data(), ones, displs, DType::kI64);
  return recv_counts;
}

// ---- distributed AUC --------------------------------------------------------------------

AucCounts AllGatherAuc(comm::Communicator& comm, const std::vector<uint64_t>& local_keys,
                       const std::vector<int64_t>& rank_sizes) {
  const std::vector<int64_t> displs = Displacements(rank_sizes);
  std::vector<uint64_t> all(static_cast<size_t>(Total(rank_sizes)));
  comm.AllGatherV(local_keys.data(), static_cast<int64_t>(local_keys.size()), all.data(),
                  rank_sizes, displs, DType::kI64);
  std::sort(all.begin(), all.end());
  return CountSorted(all.data(), static_cast<int64_t>(all.size()), 0);
}

AucCounts SampleSortAuc(comm::Communicator& comm, const std::vector<uint64_t>& keys) {
  const int num_ranks = comm.size();
  const int64_t n = static_cast<int64_t>(keys.size());
  // Regular sampling: up to kOversample evenly spaced scores per rank.
  constexpr int64_t kOversample = 64;
  const int64_t s = std::min(n, kOversample);
  std::vector<uint64_t> samples(static_cast<size_t>(s));
  for (int64_t i = 0; i < s; ++i) samples[i] = ScoreOf(keys[((2 * i + 1) * n) / (2 * s)]);
  std::vector<int64_t> sample_counts(num_ranks, 0);
  comm.AllGather(&s, sample_counts.data(), 1, DType::kI64);
  std::vector<uint64_t> all_samples(static_cast<size_t>(Total(sample_counts)));
  comm.AllGatherV(samples.data(), s, all_samples.data(), sample_counts,
                  Displacements(sample_counts), DType::kI64);
  std::sort(all_samples.begin(), all_samples.end());
  // Rank p owns the scores in (splitter[p - 1], splitter[p]]; the last rank everything above.
  std::vector<uint64_t> splitters;
  const int64_t total_samples = static_cast<int64_t>(all_samples.size());
  if (total_samples > 0) {
    for (int p = 1; p < num_ranks; ++p)
      splitters.push_back(all_samples[(p * total_samples) / num_ranks]);
  }
  std::vector<int64_t> send_counts(num_ranks, 0);
  int64_t begin = 0;
  for (int p = 0; p < num_ranks; ++p) {
    int64_t end = n;
    if (p < static_cast<int>(splitters.size())) {
      const uint64_t last_key = (splitters[p] << 1) | 1u;  // largest key with score splitter[p]
      end = std::upper_bound(keys.begin() + begin, keys.end(), last_key) - keys.begin();
    }
    send_counts[p] = end - begin;
    begin = end;
  }
  const std::vector<int64_t> recv_counts = ExchangeCounts(comm, send_counts);
  std::vector<uint64_t> mine(static_cast<size_t>(Total(recv_counts)));
  comm.AllToAllV(keys.data(), send_counts, Displacements(send_counts), mine.data(), recv_counts,
                 Displacements(recv_counts), DType::kI64);
  std::sort(mine.begin(), mine.end());
  int64_t my_negatives = 0;
  for (uint64_t k : mine) my_negatives += (k & 1u) ? 0 : 1;
  std::vector<int64_t> negatives(num_ranks, 0);
  comm.AllGather(&my_negatives, negatives.data(), 1, DType::kI64);
  int64_t neg_offset = 0;
  for (int p = 0; p < comm.rank(); ++p) neg_offset += negatives[p];
  const AucCounts local = CountSorted(mine.data(), static_cast<int64_t>(mine.size()), neg_offset);
  int64_t buf[FixedSum::kLimbs + 2];
  ToLimbs(local.c2, buf);
  buf[FixedSum::kLimbs] = local.positives;
  buf[FixedSum::kLimbs + 1] = local.negatives;
  comm.AllReduce(buf, buf, FixedSum::kLimbs + 2, DType::kI64, comm::ReduceOp::kSum);
  AucCounts global;
  global.c2 = FromLimbs(buf);
  global.positives = buf[FixedSum::kLimbs];
  global.negatives = buf[FixedSum::kLimbs + 1];
  return global;
}

GaucPartial DistributedGauc(comm::Communicator& comm, const EvalSamples& s) {
  const int num_ranks = comm.size();
  std::vector<int> dest(static_cast<size_t>(s.size));
  std::vector<int64_t> send_counts(num_ranks, 0);
  for (int64_t i = 0; i < s.size; ++i) {
    dest[i] = static_cast<int>(SplitMix64(static_cast<uint64_t>(s.user_ids[i])) %
                               static_cast<uint64_t>(num_ranks));
    ++send_counts[dest[i]];
  }
  const std::vector<int64_t> send_displs = Displacements(send_counts);
  std::vector<int64_t> fill = send_displs;
  std::vector<int64_t> users(static_cast<size_t>(s.size));
  std::vector<uint64_t> keys(static_cast<size_t>(s.size));
  for (int64_t i = 0; i < s.size; ++i) {
    const int64_t at = fill[dest[i]]++;
    users[at] = s.user_ids[i];
    keys[at] = Key(s.predictions[i], s.labels[i]);
  }
  const std::vector<int64_t> recv_counts = ExchangeCounts(comm, send_counts);
  const std::vector<int64_t> recv_displs = Displacements(recv_counts);
  const int64_t m = Total(recv_counts);
  std::vector<int64_t> my_users(static_cast<size_t>(m));
  std::vector<uint64_t> my_keys(static_cast<size_t>(m));
  comm.AllToAllV(users.data(), send_counts, send_displs, my_users.data(), recv_counts, recv_displs,
                 DType::kI64);
  comm.AllToAllV(keys.data(), send_counts, send_displs, my_keys.data(), recv_counts, recv_displs,
                 DType::kI64);
  std::vector<UserKey> v(static_cast<size_t>(m));
  for (int64_t i = 0; i < m; ++i) v[i] = {my_users[i], my_keys[i]};
  const GaucPartial local = GaucOfUsers(&v);
  int64_t buf[FixedSum::kLimbs + 2];
  ToLimbs(local.weighted.raw(), buf);
  buf[FixedSum::kLimbs] = local.users;
  buf[FixedSum::kLimbs + 1] = local.samples;
  comm.AllReduce(buf, buf, FixedSum::kLimbs + 2, DType::kI64, comm::ReduceOp::kSum);
  GaucPartial global;
  global.weighted.set_raw(FromLimbs(buf));
  global.users = buf[FixedSum::kLimbs];
  global.samples = buf[FixedSum::kLimbs + 1];
  return global;
}

}  // namespace

// ---- EvalBuffer ---------------------------------------------------------------------------

void EvalBuffer::Append(const float* predictions, const float* labels, const int64_t* user_ids,
                        int64_t n) {
  CHECK_GE(n, 0);
  if (n == 0) return;
  CHECK(predictions != nullptr && labels != nullptr);
  const bool with_ids = user_ids != nullptr;
  CHECK(!appended_ || with_ids == has_user_ids_)
      << "EvalBuffer: user ids must be given with every batch or with none";
  appended_ = true;
  has_user_ids_ = with_ids;
  predictions_.insert(predictions_.end(), predictions, predictions + n);
  labels_.insert(labels_.end(), labels, labels + n);
  if (with_ids) user_ids_.insert(user_ids_.end(), user_ids, user_ids + n);
}

void EvalBuffer::Clear() {
  predictions_.clear();
  labels_.clear();
  user_ids_.clear();
  has_user_ids_ = false;
  appended_ = false;
}

EvalSamples EvalBuffer::samples() const {
  EvalSamples s;
  s.predictions = predictions_.data();
  s.labels = labels_.data();
  s.user_ids = has_user_ids_ ? user_ids_.data() : nullptr;
  s.size = size();
  return s;
}

// ---- validation ---------------------------------------------------------------------------

Status ValidateEvalSamples(const EvalSamples& s) {
  if (s.size < 0)
    return InvalidArgumentError("eval samples: negative size " + std::to_string(s.size));
  if (s.size > 0 && (s.predictions == nullptr || s.labels == nullptr)) {
    return InvalidArgumentError("eval samples: null predictions or labels for " +
                                std::to_string(s.size) + " samples");
  }
  for (int64_t i = 0; i < s.size; ++i) {
    const float p = s.predictions[i];
    if (!(p >= 0.0f && p <= 1.0f)) {
      return InvalidArgumentError("eval sample " + std::to_string(i) + ": prediction " + Num(p) +
                                  " is not in [0, 1]");
    }
    const float y = s.labels[i];
    if (y != 0.0f && y != 1.0f) {
      return InvalidArgumentError("eval sample " + std::to_string(i) + ": label " + Num(y) +
                                  " is not 0 or 1");
    }
  }
  return Status::Ok();
}

Status ValidateMetricOptions(const MetricOptions& o) {
  if (o.ne_base_ctr && !(*o.ne_base_ctr > 0.0 && *o.ne_base_ctr < 1.0)) {
    return InvalidArgumentError("metric options: ne_base_ctr must be in (0, 1), got " +
                                Num(*o.ne_base_ctr));
  }
  if (!(o.logloss_clip > 0.0 && o.logloss_clip < 0.5)) {
    return InvalidArgumentError("metric options: logloss_clip must be in (0, 0.5), got " +
                                Num(o.logloss_clip));
  }
  if (o.allgather_max_samples < 0) {
    return InvalidArgumentError("metric options: allgather_max_samples must be >= 0, got " +
                                std::to_string(o.allgather_max_samples));
  }
  return Status::Ok();
}

// ---- single process -----------------------------------------------------------------------

double Auc(const float* predictions, const float* labels, int64_t n) {
  EvalSamples s;
  s.predictions = predictions;
  s.labels = labels;
  s.size = n;
  const std::vector<uint64_t> keys = SortedKeys(s);
  return AucValue(CountSorted(keys.data(), n, 0));
}

double GroupAuc(const float* predictions, const float* labels, const int64_t* user_ids, int64_t n,
                int64_t* users, int64_t* samples) {
  std::vector<UserKey> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[i] = {user_ids[i], Key(predictions[i], labels[i])};
  const GaucPartial g = GaucOfUsers(&v);
  if (users) *users = g.users;
  if (samples) *samples = g.samples;
  return GaucValue(g);
}

StatusOr<EvalMetrics> ComputeMetrics(const EvalSamples& s, const MetricOptions& options) {
  LOOM_RETURN_IF_ERROR(ValidateMetricOptions(options));
  LOOM_RETURN_IF_ERROR(ValidateEvalSamples(s));
  const SampleSums sums = SumSamples(s, options.logloss_clip);
  const std::vector<uint64_t> keys = SortedKeys(s);
  const AucCounts auc = CountSorted(keys.data(), s.size, 0);
  std::optional<GaucPartial> gauc;
  if (s.user_ids != nullptr || s.size == 0) {  // as ComputeGlobalMetrics: no samples, no ids
    std::vector<UserKey> v(static_cast<size_t>(s.size));
    for (int64_t i = 0; i < s.size; ++i) v[i] = {s.user_ids[i], Key(s.predictions[i], s.labels[i])};
    gauc = GaucOfUsers(&v);
  }
  return Finish(s.size, sums, auc, gauc, options);
}

// ---- distributed --------------------------------------------------------------------------

StatusOr<EvalMetrics> ComputeGlobalMetrics(comm::Communicator& comm, const EvalSamples& local,
                                           const MetricOptions& options) {
  if (!comm.device().is_cpu()) {
    return FailedPreconditionError("ComputeGlobalMetrics needs a host (MPI) communicator, got a " +
                                   comm.backend() + " communicator on " + comm.device().ToString());
  }
  // Options are the same on every rank, so every rank returns here together.
  LOOM_RETURN_IF_ERROR(ValidateMetricOptions(options));
  const Status valid = ValidateEvalSamples(local);
  const int num_ranks = comm.size();

  // Per-rank record: size, invalid flag, missing user ids. Every rank sees every record, so
  // all take the same branches below.
  constexpr int kRecord = 3;
  const int64_t mine[kRecord] = {valid.ok() ? local.size : 0, valid.ok() ? 0 : 1,
                                 valid.ok() && local.size > 0 && local.user_ids == nullptr};
  std::vector<int64_t> records(static_cast<size_t>(kRecord) * num_ranks);
  comm.AllGather(mine, records.data(), kRecord, DType::kI64);
  for (int p = 0; p < num_ranks; ++p) {
    if (records[kRecord * p + 1] != 0) {
      if (!valid.ok()) return valid.WithContext("rank " + std::to_string(comm.rank()));
      return InvalidArgumentError("invalid eval samples on rank " + std::to_string(p) +
                                  " (its log has the details)");
    }
  }
  std::vector<int64_t> rank_sizes(num_ranks);
  bool all_have_user_ids = true;
  for (int p = 0; p < num_ranks; ++p) {
    rank_sizes[p] = records[kRecord * p];
    if (records[kRecord * p + 2] != 0) all_have_user_ids = false;
  }
  const int64_t total = Total(rank_sizes);

  // Sums: LogLoss, predictions (fixed point, exact) and positives.
  SampleSums sums = SumSamples(local, options.logloss_clip);
  int64_t buf[2 * FixedSum::kLimbs + 1];
  ToLimbs(sums.logloss.raw(), buf);
  ToLimbs(sums.predictions.raw(), buf + FixedSum::kLimbs);
  buf[2 * FixedSum::kLimbs] = sums.positives;
  comm.AllReduce(buf, buf, 2 * FixedSum::kLimbs + 1, DType::kI64, comm::ReduceOp::kSum);
  sums.logloss.set_raw(FromLimbs(buf));
  sums.predictions.set_raw(FromLimbs(buf + FixedSum::kLimbs));
  sums.positives = buf[2 * FixedSum::kLimbs];

  const std::vector<uint64_t> keys = SortedKeys(local);
  AucMethod method = options.auc_method;
  if (method == AucMethod::kAuto) {
    method =
        total <= options.allgather_max_samples ? AucMethod::kAllGather : AucMethod::kSampleSort;
  }
  const AucCounts auc = method == AucMethod::kAllGather ? AllGatherAuc(comm, keys, rank_sizes)
                                                        : SampleSortAuc(comm, keys);
  std::optional<GaucPartial> gauc;
  if (all_have_user_ids) gauc = DistributedGauc(comm, local);
  return Finish(total, sums, auc, gauc, options);
}

// ---- printing -----------------------------------------------------------------------------

std::string EvalMetrics::ToString() const {
  std::ostringstream os;
  os.precision(6);
  os << "n=" << num_samples << " ctr=" << ctr << " auc=" << auc << " gauc=" << gauc
     << " (users=" << gauc_users << ") logloss=" << logloss << " ne=" << ne
     << " calibration=" << calibration;
  return os.str();
}

}  // namespace loom::train
