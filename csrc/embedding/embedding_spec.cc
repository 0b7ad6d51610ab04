#include "csrc/embedding/embedding_spec.h"

#include <cmath>
#include <map>
#include <set>
#include <sstream>

namespace loom::embedding {
namespace {

bool ValidName(const std::string& s) {
  if (s.empty()) return false;
  for (char c : s) {
    const bool ok =
        (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
    if (!ok) return false;
  }
  return true;
}

std::string Path(const char* list, int i, const std::string& name, const char* field) {
  std::ostringstream os;
  os << list << "[" << i << "]";
  if (!name.empty()) os << " (" << name << ")";
  os << "." << field;
  return os.str();
}

Status Bad(const std::string& path, const std::string& what) {
  return InvalidArgumentError("EmbeddingConfig." + path + ": " + what);
}

}  // namespace

const char* OptimizerName(OptimizerType t) {
  switch (t) {
    case OptimizerType::kSgd:
      return "sgd";
    case OptimizerType::kAdagrad:
      return "adagrad";
    case OptimizerType::kRowwiseAdagrad:
      return "rowwise_adagrad";
    case OptimizerType::kAdam:
      return "adam";
  }
  return "?";
}

const char* StrategyName(Strategy s) {
  switch (s) {
    case Strategy::kTableWise:
      return "TW";
    case Strategy::kRowWise:
      return "RW";
    case Strategy::kColumnWise:
      return "CW";
    case Strategy::kDataParallel:
      return "DP";
  }
  return "?";
}

int64_t OptimizerStateBytesPerRow(OptimizerType t, int64_t dim) {
  switch (t) {
    case OptimizerType::kSgd:
      return 0;
    case OptimizerType::kAdagrad:
      return 4 * dim;
    case OptimizerType::kRowwiseAdagrad:
      return 4;
    case OptimizerType::kAdam:
      return 8 * dim + 4;
  }
  return 0;
}

StatusOr<EmbeddingSpec> BuildEmbeddingSpec(const proto::EmbeddingConfig& config, int world_size) {
  EmbeddingSpec spec;
  if (config.tables_size() == 0) return Bad("tables", "at least one table is required");
  if (config.features_size() == 0) return Bad("features", "at least one feature is required");
  std::map<std::string, int> table_index;
  for (int i = 0; i < config.tables_size(); ++i) {
    const proto::EmbeddingTableConfig& t = config.tables(i);
    TableSpec ts;
    ts.name = t.name();
    if (!ValidName(t.name())) {
      return Bad(Path("tables", i, "", "name"), "'" + t.name() + "' is not [A-Za-z0-9_]+");
    }
    if (table_index.count(t.name())) {
      return Bad(Path("tables", i, t.name(), "name"), "duplicate table name");
    }
    table_index[t.name()] = i;
    if (!t.has_num_rows() || t.num_rows() < 1 || t.num_rows() >= (int64_t{1} << 40)) {
      return Bad(Path("tables", i, t.name(), "num_rows"),
                 std::to_string(t.num_rows()) + " is outside [1, 2^40)");
    }
    if (!t.has_dim() || t.dim() < 1 || t.dim() > 4096) {
      return Bad(Path("tables", i, t.name(), "dim"),
                 std::to_string(t.dim()) + " is outside [1, 4096]");
    }
    if (t.storage_type() != proto::EmbeddingTableConfig::STORAGE_F32) {
      return UnimplementedError("EmbeddingConfig." + Path("tables", i, t.name(), "storage_type") +
                                ": only STORAGE_F32 is implemented");
    }
    ts.num_rows = t.num_rows();
    ts.dim = t.dim();
    ts.mapping = static_cast<IdMapping>(t.id_mapping());
    ts.hash_seed = t.hash_seed();
    const proto::EmbeddingInitializer& in = t.initializer();
    ts.init.kind = in.kind();
    ts.init.low = in.low();
    ts.init.high = in.high();
    ts.init.mean = in.mean();
    ts.init.std = in.std();
    if (in.kind() == proto::EmbeddingInitializer::UNIFORM &&
        !(std::isfinite(in.low()) && std::isfinite(in.high()) && in.low() < in.high())) {
      return Bad(Path("tables", i, t.name(), "initializer"), "UNIFORM needs finite low < high");
    }
    if (in.kind() == proto::EmbeddingInitializer::NORMAL &&
        !(std::isfinite(in.mean()) && in.std() >= 0 && in.std() <= 1e3f)) {
      return Bad(Path("tables", i, t.name(), "initializer.std"), "must be in [0, 1e3]");
    }
    const proto::SparseOptimizerConfig& o = t.optimizer();
    OptimizerSpec& os = ts.optimizer;
    os.type = static_cast<OptimizerType>(o.type());
    os.lr = o.learning_rate();
    os.eps = o.eps();
    os.beta1 = o.beta1();
    os.beta2 = o.beta2();
    os.weight_decay = o.weight_decay();
    os.decoupled_weight_decay =
        o.weight_decay_mode() == proto::SparseOptimizerConfig::WEIGHT_DECAY_DECOUPLED;
    os.initial_accumulator = o.initial_accumulator_value();
    os.dense_update = o.update_mode() == proto::SparseOptimizerConfig::UPDATE_DENSE;
    const std::string opath = Path("tables", i, t.name(), "optimizer.");
    if (!(os.lr > 0 && os.lr <= 1e3f)) {
      return Bad(opath + "learning_rate", std::to_string(os.lr) + " is outside (0, 1e3]");
    }
    if (!(os.eps > 0 && os.eps <= 1)) {
      return Bad(opath + "eps", std::to_string(os.eps) + " is outside (0, 1]");
    }
    if (!(os.beta1 >= 0 && os.beta1 < 1)) return Bad(opath + "beta1", "outside [0, 1)");
    if (!(os.beta2 >= 0 && os.beta2 < 1)) return Bad(opath + "beta2", "outside [0, 1)");
    if (!(os.weight_decay >= 0 && os.weight_decay <= 1)) {
      return Bad(opath + "weight_decay", "outside [0, 1]");
    }
    if (!(os.initial_accumulator >= 0 && os.initial_accumulator <= 1e3f)) {
      return Bad(opath + "initial_accumulator_value", "outside [0, 1e3]");
    }
    if (os.dense_update && os.type != OptimizerType::kAdam) {
      return Bad(
          opath + "update_mode",
          std::string("UPDATE_DENSE is implemented for ADAM only, not ") + OptimizerName(os.type));
    }
    spec.tables.push_back(ts);
  }

  std::set<std::string> feature_names;
  for (int i = 0; i < config.features_size(); ++i) {
    const proto::EmbeddingFeatureConfig& f = config.features(i);
    FeatureSpec fs;
    fs.name = f.name();
    if (!ValidName(f.name())) {
      return Bad(Path("features", i, "", "name"), "'" + f.name() + "' is not [A-Za-z0-9_]+");
    }
    if (!feature_names.insert(f.name()).second) {
      return Bad(Path("features", i, f.name(), "name"), "duplicate feature name");
    }
    auto it = table_index.find(f.table());
    if (it == table_index.end()) {
      return Bad(Path("features", i, f.name(), "table"), "no table named '" + f.table() + "'");
    }
    fs.table = it->second;
    fs.kind = static_cast<FeatureKind>(f.kind());
    fs.pooling = static_cast<Pooling>(f.pooling());
    switch (fs.kind) {
      case FeatureKind::kSingle:
        if (f.max_ids_per_sample() > 1 || f.max_ids_per_sample() < 0) {
          return Bad(Path("features", i, f.name(), "max_ids_per_sample"),
                     "a SINGLE feature carries at most 1 id");
        }
        if (f.pooling() != proto::EmbeddingFeatureConfig::POOLING_SUM) {
          return Bad(Path("features", i, f.name(), "pooling"), "only MULTI_HOT features pool");
        }
        fs.max_ids = 1;
        break;
      case FeatureKind::kMultiHot:
        if (f.max_ids_per_sample() < 1 || f.max_ids_per_sample() > 65536) {
          return Bad(Path("features", i, f.name(), "max_ids_per_sample"),
                     std::to_string(f.max_ids_per_sample()) + " is outside [1, 65536]");
        }
        fs.max_ids = f.max_ids_per_sample();
        break;
      case FeatureKind::kSequence:
        if (f.max_length() < 1 || f.max_length() > 65536) {
          return Bad(Path("features", i, f.name(), "max_length"),
                     std::to_string(f.max_length()) + " is outside [1, 65536]");
        }
        if (f.pooling() != proto::EmbeddingFeatureConfig::POOLING_SUM) {
          return Bad(Path("features", i, f.name(), "pooling"), "only MULTI_HOT features pool");
        }
        fs.max_ids = f.max_length();
        fs.max_length = f.max_length();
        break;
    }
    if (fs.is_sequence()) {
      fs.sequence_index = spec.num_sequence++;
    } else {
      fs.pooled_index = spec.num_pooled++;
      fs.pooled_col = spec.pooled_width;
      spec.pooled_width += spec.tables[fs.table].dim;
    }
    spec.tables[fs.table].features.push_back(i);
    spec.features.push_back(fs);
  }
  for (size_t t = 0; t < spec.tables.size(); ++t) {
    if (spec.tables[t].features.empty()) {
      return Bad(Path("tables", static_cast<int>(t), spec.tables[t].name, "name"),
                 "no feature looks this table up");
    }
  }

  std::set<int> overridden;
  for (int i = 0; i < config.sharding_overrides_size(); ++i) {
    const proto::ShardingOverride& o = config.sharding_overrides(i);
    auto it = table_index.find(o.table());
    if (it == table_index.end()) {
      return Bad(Path("sharding_overrides", i, "", "table"), "no table named '" + o.table() + "'");
    }
    if (!overridden.insert(it->second).second) {
      return Bad(Path("sharding_overrides", i, o.table(), "table"), "table overridden twice");
    }
    OverrideSpec os;
    os.table = it->second;
    os.strategy = static_cast<Strategy>(o.strategy());
    std::set<int> seen;
    for (int r : o.ranks()) {
      if (r < 0 || r >= world_size) {
        return Bad(
            Path("sharding_overrides", i, o.table(), "ranks"),
            "rank " + std::to_string(r) + " is outside [0, " + std::to_string(world_size) + ")");
      }
      if (!seen.insert(r).second) {
        return Bad(Path("sharding_overrides", i, o.table(), "ranks"),
                   "rank " + std::to_string(r) + " listed twice");
      }
      os.ranks.push_back(r);
    }
    const TableSpec& ts = spec.tables[os.table];
    if (os.strategy == Strategy::kTableWise && os.ranks.size() > 1) {
      return Bad(Path("sharding_overrides", i, o.table(), "ranks"),
                 "TABLE_WISE takes at most one rank");
    }
    if (os.strategy == Strategy::kDataParallel && !os.ranks.empty()) {
      return Bad(Path("sharding_overrides", i, o.table(), "ranks"),
                 "DATA_PARALLEL replicates on every rank: leave ranks empty");
    }
    if (os.strategy == Strategy::kColumnWise) {
      const int max_slices = (ts.dim + 3) / 4;
      if (static_cast<int>(os.ranks.size()) > max_slices) {
        return Bad(
            Path("sharding_overrides", i, o.table(), "ranks"),
            std::to_string(os.ranks.size()) + " column slices of D = " + std::to_string(ts.dim) +
                " (cuts on multiples of 4 allow at most " + std::to_string(max_slices) + ")");
      }
    }
    if (os.strategy == Strategy::kRowWise && !os.ranks.empty() &&
        static_cast<int64_t>(os.ranks.size()) > ts.num_rows) {
      return Bad(Path("sharding_overrides", i, o.table(), "ranks"), "more ranks than rows");
    }
    spec.overrides.push_back(os);
  }
  if (config.per_rank_memory_budget_bytes() < 0) {
    return Bad("per_rank_memory_budget_bytes", "must be >= 0");
  }
  if (config.data_parallel_max_bytes() < 0) return Bad("data_parallel_max_bytes", "must be >= 0");
  spec.budget_bytes = config.per_rank_memory_budget_bytes();
  spec.dp_max_bytes = config.data_parallel_max_bytes();
  spec.seed = config.seed();
  return spec;
}

}  // namespace loom::embedding
