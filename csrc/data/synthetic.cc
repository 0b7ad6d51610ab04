#include "csrc/data/synthetic.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <sstream>

#include <glog/logging.h>

#include "csrc/core/json.h"
#include "csrc/core/philox.h"
#include "csrc/core/rng.h"
#include "csrc/data/auc.h"
#include "csrc/data/schema.h"
#include "csrc/data/text_input.h"
#include "csrc/data/writer.h"

namespace loom::data {
namespace {

using philox_internal::Add;
using philox_internal::Div;
using philox_internal::Mul;

// Philox streams of the generator: purpose kRngData, kind in bits 40..47, a sub-index below.
constexpr uint64_t kKindRow = 0x10;     // per-row draws: block = row, sub = draw block
constexpr uint64_t kKindEffect = 0x11;  // per-value effects: sub = table, element = id
constexpr uint64_t kKindFavorite = 0x12;
constexpr uint64_t kKindDense = 0x13;  // element = row * m + j
constexpr int kTableUser = 0, kTableItem = 1, kTableCategory = 2, kTableContext = 3;
constexpr int kTableUserFactor = 1000, kTableItemFactor = 1001;

uint64_t Stream(uint64_t kind, uint64_t sub) {
  return (static_cast<uint64_t>(kRngData) << 48) | (kind << 40) | (sub & ((uint64_t{1} << 40) - 1));
}

// exp and log from correctly rounded +, * only (like philox.h's Log), so the generator's draws
// are the same bits on every IEEE machine (host code is built with -ffp-contract=off).
// exp: x = k ln2 + r, |r| <= ln2 / 2, Taylor series to r^16 (truncation < 1e-19 relative).
double Exp(double x) {
  if (x > 700) return INFINITY;
  if (x < -700) return 0.0;
  const double k = std::nearbyint(Mul(x, 1.4426950408889634));
  const double r = Add(Add(x, -Mul(k, 0.6931471803691238)), -Mul(k, 1.9082149292705877e-10));
  static constexpr double kInvFactorial[17] = {1.0,
                                               1.0,
                                               1.0 / 2,
                                               1.0 / 6,
                                               1.0 / 24,
                                               1.0 / 120,
                                               1.0 / 720,
                                               1.0 / 5040,
                                               1.0 / 40320,
                                               1.0 / 362880,
                                               1.0 / 3628800,
                                               1.0 / 39916800,
                                               1.0 / 479001600,
                                               1.0 / 6227020800.0,
                                               1.0 / 87178291200.0,
                                               1.0 / 1307674368000.0,
                                               1.0 / 20922789888000.0};
  double sum = kInvFactorial[16];
  for (int n = 15; n >= 0; --n) sum = Add(Mul(sum, r), kInvFactorial[n]);
  return std::ldexp(sum, static_cast<int>(k));
}

// log for x > 0: x = m 2^e, m in [sqrt(1/2), sqrt(2)), log m = 2 atanh(s), s = (m-1)/(m+1),
// odd series to s^25 (|s| <= 0.172: truncation < 1e-19).
double FastLog(double x) {
  int e;
  double m = std::frexp(x, &e);  // m in [0.5, 1)
  if (m < 0.7071067811865476) {
    m = Mul(m, 2.0);
    e -= 1;
  }
  const double s = Div(Add(m, -1.0), Add(m, 1.0));
  const double s2 = Mul(s, s);
  static constexpr double kInvOdd[13] = {1.0,      1.0 / 3,  1.0 / 5,  1.0 / 7,  1.0 / 9,
                                         1.0 / 11, 1.0 / 13, 1.0 / 15, 1.0 / 17, 1.0 / 19,
                                         1.0 / 21, 1.0 / 23, 1.0 / 25};
  double sum = kInvOdd[12];
  for (int k = 11; k >= 0; --k) sum = Add(Mul(sum, s2), kInvOdd[k]);
  return Add(Mul(static_cast<double>(e), 0.69314718055994530942), Mul(Mul(2.0, s), sum));
}

}  // namespace

// Per-row counter-based draws: four uint32 per Philox block (block = row, stream = draw index).
struct SyntheticModel::Rng {
  uint64_t seed, row, next = 0;
  Philox4x32Result buf{};
  int used = 4;
  uint32_t U32() {
    if (used == 4) {
      buf = PhiloxBlock(seed, Stream(kKindRow, next++), row);
      used = 0;
    }
    return buf.v[used++];
  }
  // Uniform in (0, 1) with 32 random bits.
  double Uniform() { return (static_cast<double>(U32()) + 0.5) * 2.3283064365386963e-10; }
  int64_t Below(int64_t n) {
    return static_cast<int64_t>((static_cast<uint64_t>(U32()) * n) >> 32);
  }
};

Status ValidateSyntheticConfig(const proto::SyntheticConfig& c) {
  auto bad = [](const std::string& what) {
    return InvalidArgumentError("synthetic config: " + what);
  };
  if (c.num_users() < 1 || c.num_items() < 1) return bad("num_users and num_items must be >= 1");
  if (c.num_categories() < 1 || c.num_categories() > c.num_items()) {
    return bad("num_categories must be in [1, num_items], got " +
               std::to_string(c.num_categories()));
  }
  if (!(c.test_fraction() > 0 && c.test_fraction() < 1)) {
    return bad("test_fraction must be in (0, 1)");
  }
  if (c.favorite_categories() < 1) return bad("favorite_categories must be >= 1");
  if (c.factor_rank() < 0 || c.factor_rank() > 256) return bad("factor_rank must be in [0, 256]");
  if (c.num_dense() < 0) return bad("num_dense must be >= 0");
  if (c.sequence_match_window() < 1) return bad("sequence_match_window must be >= 1");
  for (double p : {c.candidate_focus(), c.user_zipf(), c.item_zipf()}) {
    if (!(p >= 0)) return bad("probabilities and zipf exponents must be >= 0");
  }
  if (c.candidate_focus() > 1) return bad("candidate_focus must be in [0, 1]");
  for (int f = 0; f < c.context_size(); ++f) {
    const auto& x = c.context(f);
    const std::string where = "context[" + std::to_string(f) + "] '" + x.name() + "': ";
    if (x.vocabulary_size() < 2) return bad(where + "vocabulary_size must be >= 2");
    if (x.max_values() < 1) return bad(where + "max_values must be >= 1");
    if (!(x.zipf() >= 0)) return bad(where + "zipf must be >= 0");
  }
  for (int h = 0; h < c.history_size(); ++h) {
    const auto& x = c.history(h);
    const std::string where = "history[" + std::to_string(h) + "] '" + x.name() + "': ";
    if (x.max_length() < 1) return bad(where + "max_length must be >= 1");
    if (x.min_length() < 0 || x.min_length() > x.max_length()) {
      return bad(where + "min_length must be in [0, max_length]");
    }
    if (!(x.focus() >= 0 && x.focus() <= 1)) return bad(where + "focus must be in [0, 1]");
  }
  return ValidateSchema(SyntheticSchema(c)).WithContext("synthetic config");
}

proto::DataSchema SyntheticSchema(const proto::SyntheticConfig& c) {
  proto::DataSchema s;
  s.set_name(c.name());
  s.set_label("label");
  s.set_group_id("user_id");
  for (int j = 0; j < c.num_dense(); ++j) s.add_dense()->set_name("dense_" + std::to_string(j));
  auto add_sparse = [&](const std::string& name, int64_t vocab) {
    auto* f = s.add_sparse();
    f->set_name(name);
    f->set_vocabulary_size(vocab);
    return f;
  };
  add_sparse("user_id", c.num_users() + 1);
  add_sparse("item_id", c.num_items() + 1);
  add_sparse("item_category", c.num_categories() + 1);
  for (const auto& x : c.context()) {
    auto* f = add_sparse(x.name(), x.vocabulary_size());
    if (x.max_values() > 1) {
      f->set_multi_hot(true);
      f->set_max_values(x.max_values());
      f->set_pooling(proto::SparseFeatureSpec::POOLING_MEAN);
    }
  }
  for (const auto& h : c.history()) {
    auto* items = s.add_sequence();
    items->set_name(h.name() + "_items");
    items->set_max_length(h.max_length());
    items->set_vocabulary_size(c.num_items() + 1);
    items->set_shares_table_with("item_id");
    if (h.with_categories()) {
      auto* cats = s.add_sequence();
      cats->set_name(h.name() + "_categories");
      cats->set_max_length(h.max_length());
      cats->set_vocabulary_size(c.num_categories() + 1);
      cats->set_shares_table_with("item_category");
    }
  }
  return s;
}

SyntheticModel::SyntheticModel(const proto::SyntheticConfig& config)
    : config_(config), schema_(SyntheticSchema(config)), num_contexts_(config.context_size()) {
  users_ = MakeZipf(config.num_users(), config.user_zipf());
  items_ = MakeZipf(config.num_items(), config.item_zipf());
  const int64_t c = config.num_categories(), n = config.num_items();
  category_items_[0] = MakeZipf((n - 1) / c + 1, config.item_zipf());  // category 1
  category_items_[1] = MakeZipf((n - c) / c + 1, config.item_zipf());  // category C
  for (const auto& x : config.context()) {
    contexts_.push_back(MakeZipf(x.vocabulary_size() - 1, x.zipf()));
  }
}

// The continuous inverse CDF of x^-s on [1, n + 1), floored: P(k) ~ integral_k^{k+1} x^-s dx.
//   s = 0: x = 1 + u n;  s = 1: x = (n + 1)^u;  else x = (1 + u ((n + 1)^(1-s) - 1))^(1/(1-s)).
SyntheticModel::Zipf SyntheticModel::MakeZipf(int64_t n, double s) {
  Zipf z;
  z.n = n;
  const double top = static_cast<double>(n) + 1.0;
  if (s == 0) {
    z.mode = 0;
  } else if (s == 1) {
    z.mode = 1;
    z.log_top = FastLog(top);
  } else {
    z.mode = 2;
    const double a = 1.0 - s;
    z.span = Add(Exp(Mul(a, FastLog(top))), -1.0);
    z.inv_a = 1.0 / a;
  }
  return z;
}

int64_t SyntheticModel::Draw(const Zipf& z, Rng* rng) {
  const double u = rng->Uniform();
  double x;
  if (z.mode == 0) {
    x = Add(1.0, Mul(u, static_cast<double>(z.n)));
  } else if (z.mode == 1) {
    x = Exp(Mul(u, z.log_top));
  } else {
    x = Exp(Mul(FastLog(Add(1.0, Mul(u, z.span))), z.inv_a));
  }
  const int64_t k = static_cast<int64_t>(x);
  return std::min<int64_t>(std::max<int64_t>(k, 1), z.n);
}

int64_t SyntheticModel::Category(int64_t item) const {
  return 1 + (item - 1) % config_.num_categories();
}

int64_t SyntheticModel::ItemInCategory(Rng* rng, int64_t category) const {
  // Items of category c are c, c + C, c + 2C, ... <= N; popularity power-law among them.
  const int64_t c = config_.num_categories();
  const int64_t count = (config_.num_items() - category) / c + 1;
  const Zipf& z = count == category_items_[0].n ? category_items_[0] : category_items_[1];
  return category + c * (Draw(z, rng) - 1);
}

int64_t SyntheticModel::FavoriteCategory(int64_t user, int j) const {
  const uint32_t v =
      PhiloxBlock(config_.seed(), Stream(kKindFavorite, static_cast<uint64_t>(j) / 4),
                  static_cast<uint64_t>(user))
          .v[j % 4];
  return 1 + static_cast<int64_t>((static_cast<uint64_t>(v) * config_.num_categories()) >> 32);
}

double SyntheticModel::Effect(int table, int64_t id, double std) const {
  return Mul(std,
             PhiloxNormal(config_.seed(), Stream(kKindEffect, table), static_cast<uint64_t>(id)));
}

double SyntheticModel::Logit(const Example& ex) const {
  const proto::SyntheticConfig& c = config_;
  const int64_t user = ex.sparse_ids[0][0], item = ex.sparse_ids[1][0],
                category = ex.sparse_ids[2][0];
  double l = c.bias();
  l = Add(l, Effect(kTableUser, user, c.id_effect_std()));
  l = Add(l, Effect(kTableItem, item, c.id_effect_std()));
  l = Add(l, Effect(kTableCategory, category, c.id_effect_std()));
  for (int f = 0; f < num_contexts_; ++f) {
    const auto& ids = ex.sparse_ids[3 + f];
    double sum = 0;
    for (int64_t v : ids) sum = Add(sum, Effect(kTableContext + f, v, c.context(f).effect_std()));
    if (!ids.empty()) l = Add(l, Div(sum, static_cast<double>(ids.size())));
  }
  if (c.factor_rank() > 0) {
    const int r = c.factor_rank();
    double dot = 0;
    for (int k = 0; k < r; ++k) {
      const double a = PhiloxNormal(c.seed(), Stream(kKindEffect, kTableUserFactor),
                                    static_cast<uint64_t>(user) * r + k);
      const double b = PhiloxNormal(c.seed(), Stream(kKindEffect, kTableItemFactor),
                                    static_cast<uint64_t>(item) * r + k);
      dot = Add(dot, Mul(a, b));
    }
    l = Add(l, Div(Mul(c.affinity_scale(), dot), std::sqrt(static_cast<double>(r))));
  }
  for (int j = 0; j < c.num_dense(); ++j) {
    const double w = (j % 2 == 0) ? c.dense_weight() : -c.dense_weight();
    l = Add(l, Mul(w, static_cast<double>(ex.dense[j])));
  }
  if (c.history_size() > 0 && c.sequence_match_weight() != 0) {
    const auto& hist = ex.sequences[0];  // the first history's items
    const int64_t n = static_cast<int64_t>(hist.size());
    bool match = false;
    for (int64_t k = std::max<int64_t>(0, n - c.sequence_match_window()); k < n; ++k) {
      match = match || Category(hist[k]) == category;
    }
    if (match) l = Add(l, c.sequence_match_weight());
  }
  return l;
}

double SyntheticModel::Row(int64_t row, Example* ex) const {
  const proto::SyntheticConfig& c = config_;
  Rng rng{c.seed(), static_cast<uint64_t>(row)};
  ex->Reset(schema_);
  const int64_t user = Draw(users_, &rng);
  int64_t item;
  if (rng.Uniform() < c.candidate_focus()) {
    item = ItemInCategory(
        &rng, FavoriteCategory(user, static_cast<int>(rng.Below(c.favorite_categories()))));
  } else {
    item = Draw(items_, &rng);
  }
  ex->group_id = user;
  ex->sparse_ids[0] = {user};
  ex->sparse_ids[1] = {item};
  ex->sparse_ids[2] = {Category(item)};
  for (int f = 0; f < num_contexts_; ++f) {
    const auto& x = c.context(f);
    const int n = x.max_values() > 1 ? 1 + static_cast<int>(rng.Below(x.max_values())) : 1;
    for (int k = 0; k < n; ++k) {
      ex->sparse_ids[3 + f].push_back(Draw(contexts_[f], &rng));
    }
  }
  const int m = c.num_dense();
  for (int j = 0; j < m; ++j) {
    ex->dense[j] = static_cast<float>(
        PhiloxNormal(c.seed(), Stream(kKindDense, 0), static_cast<uint64_t>(row) * m + j));
  }
  int seq = 0;
  for (const auto& h : c.history()) {
    const int64_t len =
        h.min_length() + rng.Below(static_cast<int64_t>(h.max_length()) - h.min_length() + 1);
    auto& items = ex->sequences[seq];
    for (int64_t e = 0; e < len; ++e) {
      if (rng.Uniform() < h.focus()) {
        items.push_back(ItemInCategory(
            &rng, FavoriteCategory(user, static_cast<int>(rng.Below(c.favorite_categories())))));
      } else {
        items.push_back(Draw(items_, &rng));
      }
    }
    if (h.with_categories()) {
      auto& cats = ex->sequences[seq + 1];
      for (int64_t it : items) cats.push_back(Category(it));
      seq += 2;
    } else {
      seq += 1;
    }
  }
  const double logit = Logit(*ex);
  // y = 1 iff u < sigmoid(logit), i.e. log(u) - log(1 - u) < logit.
  const double u = rng.Uniform();
  ex->label = Add(FastLog(u), -FastLog(Add(1.0, -u))) < logit ? 1.f : 0.f;
  return logit;
}

StatusOr<SyntheticResult> GenerateSynthetic(const proto::SyntheticConfig& config, int64_t rows,
                                            const SyntheticOptions& options) {
  LOOM_RETURN_IF_ERROR(ValidateSyntheticConfig(config));
  if (rows < 1) return InvalidArgumentError("synthetic: rows must be >= 1");
  if (options.out_dir.empty()) return InvalidArgumentError("synthetic: no output directory");
  const SyntheticModel model(config);
  const int64_t test_rows = static_cast<int64_t>(std::floor(rows * config.test_fraction()));
  const int64_t train_rows = rows - test_rows;
  WriterOptions wo;
  wo.block_rows = config.block_rows();
  wo.shard_rows = config.shard_rows();
  wo.producer = options.producer;
  LOOM_ASSIGN_OR_RETURN(auto train,
                        DatasetWriter::Create(options.out_dir + "/train", model.schema(), wo));
  LOOM_ASSIGN_OR_RETURN(auto test,
                        DatasetWriter::Create(options.out_dir + "/test", model.schema(), wo));
  AucAccumulator auc_test(options.exact_auc_limit), auc_train(options.exact_auc_limit);
  double logloss = 0;
  Progress progress("synthetic", rows, options.progress_interval_seconds);

  const int64_t chunk = std::max<int64_t>(1024, config.block_rows());
  std::vector<Example> examples(chunk);
  std::vector<double> logits(chunk);
  for (int64_t start = 0; start < rows; start += chunk) {
    const int64_t n = std::min(chunk, rows - start);
#pragma omp parallel for schedule(static)
    for (int64_t k = 0; k < n; ++k) logits[k] = model.Row(start + k, &examples[k]);
    for (int64_t k = 0; k < n; ++k) {
      const int64_t row = start + k;
      const bool y = examples[k].label > 0.5f;
      if (row < train_rows) {
        LOOM_RETURN_IF_ERROR(train->Add(examples[k]));
        auc_train.Add(logits[k], y);
      } else {
        LOOM_RETURN_IF_ERROR(test->Add(examples[k]));
        auc_test.Add(logits[k], y);
        // -log p(y) = log(1 + exp(-z)) with z = logit for y = 1, -logit for y = 0.
        const double z = y ? logits[k] : -logits[k];
        logloss += z > 0 ? std::log1p(std::exp(-z)) : -z + std::log1p(std::exp(z));
      }
    }
    progress.Update(start + n, start + n);
  }
  LOOM_RETURN_IF_ERROR(train->Close());
  LOOM_RETURN_IF_ERROR(test->Close());
  progress.Finish(rows);

  SyntheticResult r;
  r.rows = rows;
  r.train_rows = train_rows;
  r.test_rows = test_rows;
  r.oracle_auc = auc_test.Auc();
  r.oracle_auc_train = auc_train.Auc();
  r.oracle_logloss = test_rows > 0 ? logloss / test_rows : 0;
  r.positive_rate = test_rows > 0 ? static_cast<double>(auc_test.positives()) / test_rows : 0;
  r.auc_exact = auc_test.exact() && auc_train.exact();
  r.schema = model.schema();
  r.train_files = train->files();
  r.test_files = test->files();

  LOOM_RETURN_IF_ERROR(WriteTextProto(options.out_dir + "/schema.pbtxt", r.schema));
  LOOM_RETURN_IF_ERROR(WriteTextProto(options.out_dir + "/synthetic_config.pbtxt", config));
  std::ostringstream js;
  js.precision(6);
  js << std::fixed;
  js << "{\n  \"name\": \"" << JsonEscape(config.name()) << "\",\n  \"seed\": " << config.seed()
     << ",\n  \"rows\": " << rows << ",\n  \"train_rows\": " << train_rows
     << ",\n  \"test_rows\": " << test_rows << ",\n  \"oracle_auc\": " << r.oracle_auc
     << ",\n  \"oracle_auc_train\": " << r.oracle_auc_train
     << ",\n  \"oracle_logloss\": " << r.oracle_logloss
     << ",\n  \"positive_rate\": " << r.positive_rate << ",\n  \"auc_method\": \""
     << (r.auc_exact ? "exact" : "histogram") << "\"\n}\n";
  LOOM_RETURN_IF_ERROR(WriteStringToFile(options.out_dir + "/synthetic.json", js.str()));
  return r;
}

}  // namespace loom::data
