#include "csrc/embedding/sharding_plan.h"

#include <algorithm>
#include <cstdio>
#include <numeric>
#include <sstream>

namespace loom::embedding {

int64_t BufferSizes::ElementBytes(int id) {
  switch (id) {
    case kBagItemBegin:
    case kItemKey:
    case kItemOut:
    case kUniqueKey:
    case kUniquePtr:
    case kUniqueContribOff:
    case kRecvKeys:
    case kRecvKeyOff:
    case kEntryKey:
    case kEntryContrib:
    case kMergedKey:
    case kReducedOff:
    case kSortKeysTmp:
    case kRadixHistogram:
      return 8;
    default:
      return 4;
  }
}

bool BufferSizes::IsComm(int id) {
  switch (id) {
    case kRecvVec:
    case kBwdSend:
    case kRecvKeys:
    case kSendVec:
    case kBwdRecv:
    case kDpRecv:
    case kCwPartial:
    case kCwGather:
      return true;
    default:
      return false;
  }
}

const char* BufferSizes::Name(int id) {
  static const char* kNames[kNumBuffers] = {
      "bag_item_begin",     "item_key",        "item_part",     "item_scale",    "item_out",
      "item_perm",          "item_to_unique",  "unique_key",    "unique_begin",  "unique_ptr",
      "unique_contrib_off", "local_to_merged", "recv_vec",      "bwd_send",      "recv_keys",
      "recv_key_off",       "send_vec",        "bwd_recv",      "dp_recv",       "entry_key",
      "entry_contrib",      "entry_count",     "entry_local",   "entry_perm",    "entry_to_unique",
      "merged_key",         "merged_begin",    "reduced_off",   "reduced",       "row_sq",
      "cw_partial",         "cw_gather",       "sort_keys_tmp", "sort_vals_tmp", "radix_histogram",
      "pooled_out",         "sequence_out",    "mask_out"};
  return (id >= 0 && id < kNumBuffers) ? kNames[id] : "?";
}

int64_t BufferSizes::CommBytes() const {
  int64_t s = 0;
  for (int i = 0; i < kNumBuffers; ++i) {
    if (IsComm(i)) s += Bytes(i);
  }
  return s;
}

int64_t BufferSizes::WorkspaceBytes() const {
  int64_t s = 0;
  for (int i = 0; i < kNumBuffers; ++i) {
    if (!IsComm(i)) s += Bytes(i);
  }
  return s;
}

namespace {

int BitsFor(int64_t max_value) {
  int bits = 1;
  while (bits < 62 && (int64_t{1} << bits) <= max_value) ++bits;
  return bits;
}

std::string Bytes(int64_t b) {
  char buf[64];
  if (b >= (int64_t{1} << 30)) {
    snprintf(buf, sizeof(buf), "%.2f GiB", b / 1073741824.0);
  } else if (b >= (int64_t{1} << 20)) {
    snprintf(buf, sizeof(buf), "%.2f MiB", b / 1048576.0);
  } else if (b >= 1024) {
    snprintf(buf, sizeof(buf), "%.1f KiB", b / 1024.0);
  } else {
    snprintf(buf, sizeof(buf), "%lld B", static_cast<long long>(b));
  }
  return buf;
}

int64_t TableBytes(const TableSpec& t) { return t.weight_bytes() + t.state_bytes(); }

// Ids per step of a table on one rank: sum over its features of B * max_ids.
int64_t TableIds(const EmbeddingSpec& spec, int t, int64_t batch) {
  int64_t n = 0;
  for (int f : spec.tables[t].features) n += batch * spec.features[f].max_ids;
  return n;
}

void BuildShards(const EmbeddingSpec& spec, ShardingPlan* plan) {
  plan->shards.clear();
  for (size_t t = 0; t < plan->tables.size(); ++t) {
    TablePlan& tp = plan->tables[t];
    const TableSpec& ts = spec.tables[t];
    tp.shards.clear();
    auto add = [&](const Shard& s) {
      tp.shards.push_back(static_cast<int>(plan->shards.size()));
      plan->shards.push_back(s);
    };
    Shard s;
    s.table = static_cast<int>(t);
    s.strategy = tp.strategy;
    switch (tp.strategy) {
      case Strategy::kTableWise:
        s.rank = tp.ranks[0];
        s.num_rows = ts.num_rows;
        s.width = ts.dim;
        add(s);
        break;
      case Strategy::kDataParallel:
        s.rank = -1;
        s.num_rows = ts.num_rows;
        s.width = ts.dim;
        add(s);
        break;
      case Strategy::kRowWise: {
        const int64_t n = static_cast<int64_t>(tp.ranks.size());
        for (int64_t j = 0; j < n; ++j) {
          s.rank = tp.ranks[j];
          s.row_stride = n;
          s.row_offset = j;
          s.num_rows = (ts.num_rows - j + n - 1) / n;
          s.width = ts.dim;
          add(s);
        }
        break;
      }
      case Strategy::kColumnWise: {
        // K slices; cuts at multiples of kColumnBlock, as even as the blocks allow.
        const int k = static_cast<int>(tp.ranks.size());
        const int blocks = (ts.dim + kColumnBlock - 1) / kColumnBlock;
        int col = 0;
        for (int j = 0; j < k; ++j) {
          const int b0 = blocks * j / k, b1 = blocks * (j + 1) / k;
          const int c1 = std::min(ts.dim, b1 * kColumnBlock);
          s.rank = tp.ranks[j];
          s.num_rows = ts.num_rows;
          s.col_begin = std::min(ts.dim, b0 * kColumnBlock);
          s.width = c1 - s.col_begin;
          col = c1;
          add(s);
        }
        (void)col;
        break;
      }
    }
  }
}

void ComputeBuffers(const EmbeddingSpec& spec, ShardingPlan* plan) {
  const int R = plan->world_size;
  const int64_t B = plan->batch_size;
  int64_t items = 0, item_width = 0, n_dp = 0, iw_dp = 0;
  for (const FeatureSpec& f : spec.features) {
    const TablePlan& tp = plan->tables[f.table];
    const int64_t n = B * f.max_ids;
    const int D = spec.tables[f.table].dim;
    items +=
        n * (tp.strategy == Strategy::kColumnWise ? static_cast<int64_t>(tp.shards.size()) : 1);
    item_width += n * D;
    if (tp.strategy == Strategy::kDataParallel) {
      n_dp += n;
      iw_dp += n * D;
    }
  }
  int64_t seq_out = 0, mask_out = 0;
  for (const FeatureSpec& f : spec.features) {
    if (!f.is_sequence()) continue;
    seq_out += B * f.max_length * spec.tables[f.table].dim;
    mask_out += B * f.max_length;
  }
  const int64_t dp_message = n_dp > 0 ? 1 + 3 * n_dp + iw_dp : 0;
  std::vector<int64_t> cw_mine(R, 0);
  std::vector<int64_t> M(R, 0), MW(R, 0);
  for (const Shard& s : plan->shards) {
    if (s.rank < 0) continue;
    const int64_t ids = TableIds(spec, s.table, B);
    M[s.rank] += ids;
    MW[s.rank] += ids * s.width;
    if (s.strategy == Strategy::kColumnWise &&
        spec.tables[s.table].optimizer.type == OptimizerType::kRowwiseAdagrad) {
      cw_mine[s.rank] += 1 + R * ids * ((s.width + kColumnBlock - 1) / kColumnBlock);
    }
  }
  const int64_t cw_all = std::accumulate(cw_mine.begin(), cw_mine.end(), int64_t{0});
  plan->buffers.assign(R, BufferSizes());
  for (int r = 0; r < R; ++r) {
    int64_t* e = plan->buffers[r].elements;
    const int64_t N = items;
    const int64_t E = R * M[r] + R * n_dp;
    e[kBagItemBegin] = B * static_cast<int64_t>(spec.features.size()) + 1;
    e[kItemKey] = N;
    e[kItemPart] = N;
    e[kItemScale] = N;
    e[kItemOut] = N;
    e[kItemPerm] = N;
    e[kItemToUnique] = N;
    e[kUniqueKey] = N;
    e[kUniqueBegin] = N + 1;
    e[kUniquePtr] = N;
    e[kUniqueContribOff] = N + 1;
    e[kLocalToMerged] = N;
    e[kRecvVec] = item_width;
    e[kBwdSend] = N + item_width + (n_dp > 0 ? 1 + 2 * n_dp : 0);
    e[kRecvKeys] = (R - 1) * M[r];
    e[kRecvKeyOff] = (R - 1) * M[r] + 1;
    e[kSendVec] = (R - 1) * MW[r];
    e[kBwdRecv] = (R - 1) * (M[r] + MW[r]);
    e[kDpRecv] = R * dp_message;
    e[kEntryKey] = E;
    e[kEntryContrib] = E;
    e[kEntryCount] = E;
    e[kEntryLocal] = E;
    e[kEntryPerm] = E;
    e[kEntryToUnique] = E;
    e[kMergedKey] = E;
    e[kMergedBegin] = E + 1;
    e[kReducedOff] = E + 1;
    e[kReduced] = R * MW[r] + R * iw_dp;
    e[kRowSq] = E;
    e[kCwPartial] = cw_mine[r];
    e[kCwGather] = cw_all;
    e[kSortKeysTmp] = std::max(N, E);
    e[kSortValsTmp] = std::max(N, E);
    e[kRadixHistogram] = static_cast<int64_t>(plan->num_threads) * 2048;
    e[kPooledOut] = B * spec.pooled_width;
    e[kSequenceOut] = seq_out;
    e[kMaskOut] = mask_out;
  }
}

void ComputeMemory(const EmbeddingSpec& spec, ShardingPlan* plan) {
  plan->memory.assign(plan->world_size, RankMemory());
  for (int r = 0; r < plan->world_size; ++r) {
    RankMemory& m = plan->memory[r];
    for (const Shard& s : plan->shards) {
      if (!s.owned_by(r)) continue;
      const TableSpec& t = spec.tables[s.table];
      m.weights += BufferSizes::Aligned(s.num_rows * s.width * 4);
      const int64_t elems = s.num_rows * s.width;
      switch (t.optimizer.type) {
        case OptimizerType::kSgd:
          break;
        case OptimizerType::kAdagrad:
          m.optimizer += BufferSizes::Aligned(elems * 4);
          break;
        case OptimizerType::kRowwiseAdagrad:
          m.optimizer += BufferSizes::Aligned(s.num_rows * 4);
          break;
        case OptimizerType::kAdam:
          m.optimizer += 2 * BufferSizes::Aligned(elems * 4) + BufferSizes::Aligned(s.num_rows * 4);
          break;
      }
    }
    m.comm = plan->buffers[r].CommBytes();
    m.workspace = plan->buffers[r].WorkspaceBytes();
  }
}

int64_t MaxTotal(const ShardingPlan& plan, int* worst_rank) {
  int64_t worst = -1;
  for (int r = 0; r < plan.world_size; ++r) {
    if (plan.memory[r].total() > worst) {
      worst = plan.memory[r].total();
      *worst_rank = r;
    }
  }
  return worst;
}

// The automatic plan (overrides honoured) with no budget check.
StatusOr<ShardingPlan> AutoPlan(const EmbeddingSpec& spec, const PlannerOptions& options,
                                int64_t budget) {
  const int R = options.world_size;
  ShardingPlan plan;
  plan.world_size = R;
  plan.batch_size = options.batch_size;
  plan.num_threads = std::max(1, options.num_threads);
  const int T = static_cast<int>(spec.tables.size());
  plan.tables.assign(T, TablePlan());
  std::vector<bool> fixed(T, false);
  for (const OverrideSpec& o : spec.overrides) {
    for (int r : o.ranks) {
      if (r >= R) {
        return InvalidArgumentError("EmbeddingConfig.sharding_overrides (" +
                                    spec.tables[o.table].name + "): rank " + std::to_string(r) +
                                    " is outside [0, " + std::to_string(R) + ")");
      }
    }
    TablePlan& tp = plan.tables[o.table];
    tp.strategy = o.strategy;
    tp.ranks = o.ranks;
    tp.overridden = true;
    fixed[o.table] = true;
    if (tp.strategy == Strategy::kRowWise && tp.ranks.empty()) {
      tp.ranks.resize(R);
      std::iota(tp.ranks.begin(), tp.ranks.end(), 0);
    }
  }
  int64_t total_bytes = 0;
  for (int t = 0; t < T; ++t) {
    if (!fixed[t]) total_bytes += TableBytes(spec.tables[t]);
  }
  for (int t = 0; t < T; ++t) {
    if (fixed[t]) continue;
    TablePlan& tp = plan.tables[t];
    const int64_t bytes = TableBytes(spec.tables[t]);
    if (spec.dp_max_bytes > 0 && bytes <= spec.dp_max_bytes) {
      tp.strategy = Strategy::kDataParallel;
    } else if (R > 1 && (bytes * R > 2 * total_bytes || (budget > 0 && 2 * bytes > budget))) {
      // Larger than twice a fair share, or than half a rank's budget: spread row-wise.
      tp.strategy = Strategy::kRowWise;
      tp.ranks.resize(R);
      std::iota(tp.ranks.begin(), tp.ranks.end(), 0);
    } else {
      tp.strategy = Strategy::kTableWise;
    }
  }
  // Loads of what is already placed, then greedy placement of the rest, largest first.
  std::vector<double> mem(R, 0.0), look(R, 0.0);
  double total_mem = 1.0, total_look = 1.0;
  for (int t = 0; t < T; ++t) {
    total_mem += static_cast<double>(TableBytes(spec.tables[t]));
    total_look +=
        static_cast<double>(TableIds(spec, t, options.batch_size)) * spec.tables[t].dim * 4.0 * R;
  }
  auto table_look = [&](int t) {
    return static_cast<double>(TableIds(spec, t, options.batch_size)) * spec.tables[t].dim * 4.0 *
           R;
  };
  auto add_load = [&](int t, int r, double frac) {
    mem[r] += frac * static_cast<double>(TableBytes(spec.tables[t]));
    look[r] += frac * table_look(t);
  };
  std::vector<int> pending;
  for (int t = 0; t < T; ++t) {
    TablePlan& tp = plan.tables[t];
    if (tp.strategy == Strategy::kDataParallel) {
      for (int r = 0; r < R; ++r) add_load(t, r, 1.0 / R);
    } else if ((tp.strategy == Strategy::kTableWise || tp.strategy == Strategy::kColumnWise) &&
               tp.ranks.empty()) {
      pending.push_back(t);
    } else {
      for (int r : tp.ranks) add_load(t, r, 1.0 / static_cast<double>(tp.ranks.size()));
    }
  }
  auto cost = [&](int t) {
    return static_cast<double>(TableBytes(spec.tables[t])) / total_mem + table_look(t) / total_look;
  };
  std::stable_sort(pending.begin(), pending.end(), [&](int a, int b) { return cost(a) > cost(b); });
  for (int t : pending) {
    TablePlan& tp = plan.tables[t];
    const int k = tp.strategy == Strategy::kColumnWise
                      ? std::min(R, (spec.tables[t].dim + kColumnBlock - 1) / kColumnBlock)
                      : 1;
    std::vector<int> order(R);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
      return mem[a] / total_mem + look[a] / total_look < mem[b] / total_mem + look[b] / total_look;
    });
    tp.ranks.assign(order.begin(), order.begin() + k);
    std::sort(tp.ranks.begin(), tp.ranks.end());
    for (int r : tp.ranks) add_load(t, r, 1.0 / k);
  }
  LOOM_RETURN_IF_ERROR(FinalizePlan(spec, &plan));
  return plan;
}

}  // namespace

int ShardingPlan::OwnerOfRow(int table, int64_t row) const {
  const TablePlan& tp = tables[table];
  switch (tp.strategy) {
    case Strategy::kDataParallel:
      return -1;
    case Strategy::kRowWise:
      return tp.ranks[row % static_cast<int64_t>(tp.ranks.size())];
    default:
      return tp.ranks[0];
  }
}

Status FinalizePlan(const EmbeddingSpec& spec, ShardingPlan* plan) {
  if (plan->world_size < 1) return InvalidArgumentError("world size must be >= 1");
  if (plan->batch_size < 1) return InvalidArgumentError("batch size must be >= 1");
  if (plan->tables.size() != spec.tables.size()) {
    return InvalidArgumentError("plan has " + std::to_string(plan->tables.size()) +
                                " tables, config has " + std::to_string(spec.tables.size()));
  }
  for (size_t t = 0; t < plan->tables.size(); ++t) {
    const TablePlan& tp = plan->tables[t];
    const std::string where =
        "table '" + spec.tables[t].name + "' (" + StrategyName(tp.strategy) + "): ";
    for (int r : tp.ranks) {
      if (r < 0 || r >= plan->world_size) {
        return InvalidArgumentError(where + "rank " + std::to_string(r) + " outside [0, " +
                                    std::to_string(plan->world_size) + ")");
      }
    }
    if (tp.strategy == Strategy::kTableWise && tp.ranks.size() != 1) {
      return InvalidArgumentError(where + "needs exactly one rank");
    }
    if ((tp.strategy == Strategy::kRowWise || tp.strategy == Strategy::kColumnWise) &&
        tp.ranks.empty()) {
      return InvalidArgumentError(where + "needs at least one rank");
    }
    if (tp.strategy == Strategy::kColumnWise &&
        static_cast<int>(tp.ranks.size()) >
            (spec.tables[t].dim + kColumnBlock - 1) / kColumnBlock) {
      return InvalidArgumentError(where + "more column slices than 4-column blocks");
    }
  }
  BuildShards(spec, plan);
  int64_t max_rows = 1;
  for (const Shard& s : plan->shards) max_rows = std::max(max_rows, s.num_rows);
  plan->row_bits = BitsFor(max_rows - 1);
  plan->shard_bits = BitsFor(static_cast<int64_t>(plan->shards.size()) - 1);
  if (plan->row_bits + plan->shard_bits > 63) {
    return InvalidArgumentError("too many shards and rows for 63-bit keys");
  }
  ComputeBuffers(spec, plan);
  for (int r = 0; r < plan->world_size; ++r) {
    const int64_t* e = plan->buffers[r].elements;
    const int64_t most = std::max({e[kItemKey], e[kEntryKey], e[kBwdSend], e[kBwdRecv]});
    if (most >= (int64_t{1} << 31)) {
      return InvalidArgumentError(
          "embedding plan: rank " + std::to_string(r) + " would index " + std::to_string(most) +
          " items or words per step, more than int32 offsets hold; lower the batch size or "
          "max_ids_per_sample / max_length");
    }
  }
  ComputeMemory(spec, plan);
  return Status::Ok();
}

StatusOr<ShardingPlan> PlanSharding(const EmbeddingSpec& spec, const PlannerOptions& options) {
  if (options.world_size < 1 || options.batch_size < 1) {
    return InvalidArgumentError("PlanSharding: world_size and batch_size must be >= 1");
  }
  const int64_t budget = options.budget_bytes < 0 ? spec.budget_bytes : options.budget_bytes;
  LOOM_ASSIGN_OR_RETURN(ShardingPlan plan, AutoPlan(spec, options, budget));
  if (budget <= 0) return plan;
  int worst_rank = 0;
  const int64_t worst = MaxTotal(plan, &worst_rank);
  if (worst <= budget) return plan;
  const RankMemory& m = plan.memory[worst_rank];
  std::ostringstream os;
  os << "embedding plan does not fit per_rank_memory_budget_bytes = " << budget << " ("
     << Bytes(budget) << "): rank " << worst_rank << " needs " << worst << " bytes ("
     << Bytes(worst) << ": weights " << Bytes(m.weights) << ", optimizer state "
     << Bytes(m.optimizer) << ", communication buffers " << Bytes(m.comm) << ", workspace "
     << Bytes(m.workspace) << ") at world size " << options.world_size << ", batch size "
     << options.batch_size << ". It would fit with per_rank_memory_budget_bytes >= " << worst;
  // The smallest larger world size (R+1 .. 2R, then doublings) at which the plan fits.
  std::vector<int> candidates;
  for (int r = options.world_size + 1; r <= 2 * options.world_size; ++r) candidates.push_back(r);
  for (int r = 4 * options.world_size; r <= 4096; r *= 2) candidates.push_back(r);
  for (int r : candidates) {
    PlannerOptions o = options;
    o.world_size = r;
    StatusOr<ShardingPlan> p = AutoPlan(spec, o, budget);
    if (!p.ok()) continue;
    int wr = 0;
    if (MaxTotal(*p, &wr) <= budget) {
      os << ", or at world size " << r << " with the same per-rank batch";
      break;
    }
  }
  os << ".";
  return ResourceExhaustedError(os.str());
}

std::string ShardingPlan::ToString(const EmbeddingSpec& spec) const {
  std::ostringstream os;
  char line[256];
  os << "embedding sharding plan: world size " << world_size << ", batch " << batch_size
     << " per rank, " << shards.size() << " shards\n";
  snprintf(line, sizeof(line), "  %-20s %12s %5s %-16s %-3s %-16s %12s\n", "table", "rows", "dim",
           "optimizer", "how", "ranks", "bytes");
  os << line;
  for (size_t t = 0; t < tables.size(); ++t) {
    const TableSpec& ts = spec.tables[t];
    std::string ranks;
    if (tables[t].strategy == Strategy::kDataParallel) {
      ranks = "all";
    } else {
      for (size_t i = 0; i < tables[t].ranks.size(); ++i) {
        if (i > 0) ranks += ",";
        if (ranks.size() > 12) {
          ranks += "...";
          break;
        }
        ranks += std::to_string(tables[t].ranks[i]);
      }
    }
    snprintf(line, sizeof(line), "  %-20s %12lld %5d %-16s %-3s %-16s %12lld%s\n", ts.name.c_str(),
             static_cast<long long>(ts.num_rows), ts.dim, OptimizerName(ts.optimizer.type),
             StrategyName(tables[t].strategy), ranks.c_str(),
             static_cast<long long>(TableBytes(ts)), tables[t].overridden ? " (override)" : "");
    os << line;
  }
  snprintf(line, sizeof(line), "  %-5s %14s %14s %14s %14s %14s\n", "rank", "weights", "optimizer",
           "comm buffers", "workspace", "total bytes");
  os << line;
  for (int r = 0; r < world_size; ++r) {
    const RankMemory& m = memory[r];
    snprintf(line, sizeof(line), "  %-5d %14lld %14lld %14lld %14lld %14lld (%s)\n", r,
             static_cast<long long>(m.weights), static_cast<long long>(m.optimizer),
             static_cast<long long>(m.comm), static_cast<long long>(m.workspace),
             static_cast<long long>(m.total()), Bytes(m.total()).c_str());
    os << line;
  }
  return os.str();
}

}  // namespace loom::embedding
