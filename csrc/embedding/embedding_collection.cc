#include "csrc/embedding/embedding_collection.h"

#include <sys/mman.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <sstream>

#include <omp.h>

#include "csrc/core/allocator.h"
#include "csrc/core/logging.h"
#include "csrc/core/philox.h"
#include "csrc/core/rng.h"
#include "csrc/embedding/bag_rules.h"

namespace loom::embedding {
namespace {

enum Stage {
  kStageIdle = 0,
  kStageBucketized,
  kStageDeduped,
  kStageCountsExchanged,
  kStageIdsExchanged,
  kStageLookedUp,
  kStageVectorsExchanged,
  kStagePooled,
  kStagePooledInPlace,  // one rank: pooled right after bucketize, no dedup yet (DefersDedup)
  kStagePacked,
  kStageGradientsExchanged,
  kStageMerged,
  kStageReduced,
  kStageRowSumsExchanged,
};

// Sequence outputs from this size on are written with streaming stores (StagePool).
constexpr int64_t kStreamOutputBytes = int64_t{4} << 20;

// Tables and the arena are read at random rows: with 4 KiB pages nearly every row costs a
// TLB miss (and, under a hypervisor, a two-level page walk). Large blocks are 2 MiB aligned and
// advised as huge pages (Linux THP in "madvise" mode honours it); small ones are 64-byte
// aligned. Freed with std::free.
void* LargeAlloc(int64_t bytes) {
  constexpr size_t kHuge = size_t{2} << 20;
  const size_t n = static_cast<size_t>(std::max<int64_t>(bytes, 64));
  const size_t align = n >= kHuge ? kHuge : 64;
  void* p = nullptr;
  CHECK_EQ(posix_memalign(&p, align, (n + align - 1) / align * align), 0)
      << "out of host memory allocating " << n << " bytes for the embedding collection";
#ifdef MADV_HUGEPAGE
  if (align == kHuge) madvise(p, (n + align - 1) / align * align, MADV_HUGEPAGE);
#endif
  return p;
}

}  // namespace

StatusOr<std::unique_ptr<EmbeddingCollection>> EmbeddingCollection::Create(
    const proto::EmbeddingConfig& config, comm::Communicator* comm,
    const CollectionOptions& options) {
  if (comm == nullptr) return InvalidArgumentError("EmbeddingCollection: null communicator");
  if (comm->device() != Device::Cpu()) {
    return UnimplementedError(
        "EmbeddingCollection: only host (MPI) communicators drive the collection so far");
  }
  std::unique_ptr<EmbeddingCollection> c(new EmbeddingCollection());
  LOOM_RETURN_IF_ERROR(c->Init(config, comm, options));
  return c;
}

EmbeddingCollection::~EmbeddingCollection() {
  for (void* p : shard_memory_) std::free(p);
  std::free(arena_);
}

Status EmbeddingCollection::Init(const proto::EmbeddingConfig& config, comm::Communicator* comm,
                                 const CollectionOptions& options) {
  comm_ = comm;
  rank_ = comm->rank();
  world_ = comm->size();
  if (options.batch_size < 1) {
    return InvalidArgumentError("CollectionOptions.batch_size must be >= 1");
  }
  max_batch_ = options.batch_size;
  LOOM_ASSIGN_OR_RETURN(spec_, BuildEmbeddingSpec(config, world_));
  const int threads = options.num_threads > 0 ? options.num_threads : omp_get_max_threads();
  if (options.plan != nullptr) {
    plan_ = *options.plan;
    plan_.world_size = world_;
    plan_.batch_size = max_batch_;
    plan_.num_threads = threads;
    LOOM_RETURN_IF_ERROR(FinalizePlan(spec_, &plan_));
    if (spec_.budget_bytes > 0) {
      for (int r = 0; r < world_; ++r) {
        if (plan_.memory[r].total() > spec_.budget_bytes) {
          return ResourceExhaustedError(
              "embedding plan does not fit per_rank_memory_budget_bytes = " +
              std::to_string(spec_.budget_bytes) + ": rank " + std::to_string(r) + " needs " +
              std::to_string(plan_.memory[r].total()) + " bytes");
        }
      }
    }
  } else {
    PlannerOptions po;
    po.world_size = world_;
    po.batch_size = max_batch_;
    po.num_threads = threads;
    LOOM_ASSIGN_OR_RETURN(plan_, PlanSharding(spec_, po));
  }
  if (options.log_plan) LOOM_LOG_RANK0(INFO) << plan_.ToString(spec_);

  const int num_shards = static_cast<int>(plan_.shards.size());
  key_bits_ = plan_.shard_bits + plan_.row_bits;
  // Slots: shards ordered by destination group (owner rank; R for DP), then shard index.
  std::vector<int> order(num_shards);
  for (int s = 0; s < num_shards; ++s) order[s] = s;
  auto group_of = [&](int s) { return plan_.shards[s].rank < 0 ? world_ : plan_.shards[s].rank; };
  std::stable_sort(order.begin(), order.end(),
                   [&](int a, int b) { return group_of(a) < group_of(b); });
  std::vector<int> shard_slot(num_shards);
  slot_shard_ = order;
  slot_group_.resize(num_shards);
  for (int k = 0; k < num_shards; ++k) {
    shard_slot[order[k]] = k;
    slot_group_[k] = group_of(order[k]);
  }
  // Routes.
  for (size_t f = 0; f < spec_.features.size(); ++f) {
    const FeatureSpec& fs = spec_.features[f];
    const TableSpec& ts = spec_.tables[fs.table];
    const TablePlan& tp = plan_.tables[fs.table];
    FeatureRoute r;
    r.num_rows = ts.num_rows;
    r.hash_seed = ts.hash_seed;
    r.mapping = static_cast<int32_t>(ts.mapping);
    r.kind = static_cast<int32_t>(fs.kind);
    r.pooling = static_cast<int32_t>(fs.pooling);
    r.max_ids = fs.max_ids;
    r.max_length = fs.max_length;
    r.strategy = static_cast<int32_t>(tp.strategy);
    r.part_begin = static_cast<int32_t>(parts_.size());
    r.num_parts = static_cast<int32_t>(tp.shards.size());
    r.dim = ts.dim;
    r.out_stride = fs.is_sequence() ? int64_t{fs.max_length} * ts.dim : spec_.pooled_width;
    r.out_col = fs.is_sequence() ? 0 : fs.pooled_col;
    for (int s : tp.shards) {
      RoutePart p;
      p.feature = static_cast<int32_t>(f);
      p.shard = s;
      p.slot = shard_slot[s];
      p.col_begin = plan_.shards[s].col_begin;
      p.width = plan_.shards[s].width;
      parts_.push_back(p);
    }
    routes_.push_back(r);
  }
  // Shards held here, and optimizer parameters of every shard.
  shard_views_.assign(num_shards, ShardView());
  params_.resize(num_shards);
  for (int s = 0; s < num_shards; ++s) {
    const Shard& sh = plan_.shards[s];
    const TableSpec& ts = spec_.tables[sh.table];
    const bool cw_rowwise =
        sh.strategy == Strategy::kColumnWise && ts.optimizer.type == OptimizerType::kRowwiseAdagrad;
    if (sh.strategy == Strategy::kDataParallel) has_dp_ = true;
    if (cw_rowwise) has_cw_rowwise_ = true;
    params_[s] = MakeOptimizerParams(ts.optimizer, ts.dim, cw_rowwise);
    shard_views_[s].num_rows = sh.num_rows;
    shard_views_[s].width = sh.width;
  }
  // Allocation: shards, then the arena (exactly the planned bytes).
  for (int s = 0; s < num_shards; ++s) {
    const Shard& sh = plan_.shards[s];
    if (!sh.owned_by(rank_)) continue;
    ShardView& v = shard_views_[s];
    const OptimizerType type = spec_.tables[sh.table].optimizer.type;
    auto alloc = [&](int64_t bytes) {
      const int64_t aligned = BufferSizes::Aligned(bytes);
      void* p = LargeAlloc(aligned);
      shard_memory_.push_back(p);
      allocated_bytes_ += aligned;
      return p;
    };
    const int64_t elems = sh.num_rows * sh.width;
    v.weights = static_cast<float*>(alloc(elems * 4));
    if (type == OptimizerType::kAdagrad || type == OptimizerType::kAdam) {
      v.state0 = static_cast<float*>(alloc(elems * 4));
    } else if (type == OptimizerType::kRowwiseAdagrad) {
      v.state0 = static_cast<float*>(alloc(sh.num_rows * 4));
    }
    if (type == OptimizerType::kAdam) {
      v.state1 = static_cast<float*>(alloc(elems * 4));
      v.steps = static_cast<int32_t*>(alloc(sh.num_rows * 4));
    }
    InitializeShard(s);
  }
  // Each slot's local weights (null for a shard held elsewhere): the one-rank forward reads
  // its rows in place through them.
  slot_weights_.resize(num_shards);
  for (int k = 0; k < num_shards; ++k) slot_weights_[k] = shard_views_[slot_shard_[k]].weights;
  const BufferSizes& bs = plan_.buffers[rank_];
  arena_bytes_ = 0;
  for (int i = 0; i < kNumBuffers; ++i) arena_bytes_ += bs.Bytes(i);
  arena_ = LargeAlloc(arena_bytes_);
  allocated_bytes_ += arena_bytes_;
  char* p = static_cast<char*>(arena_);
  for (int i = 0; i < kNumBuffers; ++i) {
    buffers_[i] = p;
    p += bs.Bytes(i);
  }
  CHECK_EQ(allocated_bytes_, plan_.memory[rank_].total()) << "memory accounting is off";

  // Output views (sized for max_batch_; Forward narrows them to the batch).
  feature_out_.assign(spec_.features.size(), nullptr);
  feature_mask_.assign(spec_.features.size(), nullptr);
  feature_grad_.assign(spec_.features.size(), nullptr);
  int64_t seq_off = 0, mask_off = 0;
  for (size_t f = 0; f < spec_.features.size(); ++f) {
    const FeatureSpec& fs = spec_.features[f];
    if (fs.is_sequence()) {
      feature_out_[f] = Buf<float>(kSequenceOut) + seq_off;
      feature_mask_[f] = Buf<float>(kMaskOut) + mask_off;
      seq_off += max_batch_ * fs.max_length * spec_.tables[fs.table].dim;
      mask_off += max_batch_ * fs.max_length;
    } else {
      feature_out_[f] = Buf<float>(kPooledOut);
    }
  }
  group_unique_.assign(world_ + 2, 0);
  send_words_.assign(world_ + 1, 0);
  send_word_off_.assign(world_ + 2, 0);
  recv_key_count_.assign(world_, 0);
  recv_key_off_.assign(world_ + 1, 0);
  recv_words_.assign(world_, 0);
  recv_word_off_.assign(world_ + 1, 0);
  dp_words_.assign(world_, 0);
  dp_word_off_.assign(world_ + 1, 0);
  // Per-step scratch of the collectives, sized once (Forward/Backward never allocate).
  comm3_send_.assign(3 * world_, 0);
  comm3_recv_.assign(3 * world_, 0);
  counts3_.assign(world_, 3);
  displs3_.resize(world_);
  for (int q = 0; q < world_; ++q) displs3_[q] = 3 * q;
  for (std::vector<int64_t>* v : {&comm_a_, &comm_b_, &comm_c_, &comm_d_}) v->assign(world_, 0);
  shard_range_.assign(num_shards + 1, 0);
  shard_count_.assign(num_shards, 0);
  shard_partials_.assign(num_shards, nullptr);
  send_vec_count_.assign(world_, 0);
  send_vec_off_.assign(world_ + 1, 0);
  recv_vec_count_.assign(world_, 0);
  recv_vec_off_.assign(world_ + 1, 0);
  return Status::Ok();
}

void EmbeddingCollection::InitializeShard(int s) {
  const Shard& sh = plan_.shards[s];
  const TableSpec& ts = spec_.tables[sh.table];
  ShardView& v = shard_views_[s];
  const uint64_t stream = MakeStream(kRngInitEmbedding, static_cast<uint64_t>(sh.table), 0);
  const uint64_t seed = spec_.seed;
  const InitializerSpec init = ts.init;
#pragma omp parallel for schedule(static)
  for (int64_t l = 0; l < sh.num_rows; ++l) {
    const int64_t grow = l * sh.row_stride + sh.row_offset;
    float* w = v.weights + l * sh.width;
    for (int c = 0; c < sh.width; ++c) {
      const uint64_t idx = static_cast<uint64_t>(grow) * ts.dim + sh.col_begin + c;
      if (init.kind == proto::EmbeddingInitializer::UNIFORM) {
        const double u = PhiloxUniform(seed, stream, idx);
        w[c] = static_cast<float>(static_cast<double>(init.low) +
                                  (static_cast<double>(init.high) - init.low) * u);
      } else if (init.kind == proto::EmbeddingInitializer::NORMAL) {
        w[c] = static_cast<float>(static_cast<double>(init.mean) +
                                  static_cast<double>(init.std) * PhiloxNormal(seed, stream, idx));
      } else {
        w[c] = 0.0f;
      }
    }
  }
  const OptimizerType type = ts.optimizer.type;
  const int64_t elems = sh.num_rows * sh.width;
  if (type == OptimizerType::kAdagrad) {
    std::fill(v.state0, v.state0 + elems, ts.optimizer.initial_accumulator);
  } else if (type == OptimizerType::kRowwiseAdagrad) {
    std::fill(v.state0, v.state0 + sh.num_rows, ts.optimizer.initial_accumulator);
  } else if (type == OptimizerType::kAdam) {
    std::fill(v.state0, v.state0 + elems, 0.0f);
    std::fill(v.state1, v.state1 + elems, 0.0f);
    std::fill(v.steps, v.steps + sh.num_rows, 0);
  }
}

// ---------------------------------------------------------------------------------------
// Input checks.

Status EmbeddingCollection::CheckBatch(const EmbeddingBatch& batch, BucketizeError* error) const {
  if (batch.batch_size < 1 || batch.batch_size > max_batch_) {
    return InvalidArgumentError("embedding batch: batch_size " + std::to_string(batch.batch_size) +
                                " is outside [1, " + std::to_string(max_batch_) + "]");
  }
  if (batch.features.size() != spec_.features.size()) {
    return InvalidArgumentError("embedding batch: " + std::to_string(batch.features.size()) +
                                " features, config has " + std::to_string(spec_.features.size()));
  }
  for (size_t f = 0; f < batch.features.size(); ++f) {
    const FeatureBatch& fb = batch.features[f];
    const FeatureSpec& fs = spec_.features[f];
    const std::string where = "embedding batch, feature '" + fs.name + "': ";
    if (fb.offsets.dtype() != DType::kI64 || fb.offsets.numel() != batch.batch_size + 1 ||
        !fb.offsets.device().is_cpu()) {
      return InvalidArgumentError(
          where + "offsets must be host i64 [B + 1 = " + std::to_string(batch.batch_size + 1) +
          "], got " + fb.offsets.spec().ToString());
    }
    const int64_t* off = fb.offsets.data<int64_t>();
    if (off[0] != 0) return InvalidArgumentError(where + "offsets[0] must be 0");
    for (int64_t b = 0; b < batch.batch_size; ++b) {
      if (off[b + 1] < off[b]) {
        return InvalidArgumentError(where + "offsets decrease at sample " + std::to_string(b));
      }
    }
    const int64_t nnz = off[batch.batch_size];
    if (fb.ids.dtype() != DType::kI64 || fb.ids.numel() < nnz || !fb.ids.device().is_cpu()) {
      return InvalidArgumentError(where + "ids must be host i64 with at least " +
                                  std::to_string(nnz) + " elements, got " +
                                  fb.ids.spec().ToString());
    }
    if (fs.pooling == Pooling::kWeightedSum &&
        (fb.weights.dtype() != DType::kF32 || fb.weights.numel() < nnz)) {
      return InvalidArgumentError(where + "POOLING_WEIGHTED_SUM needs f32 weights with " +
                                  std::to_string(nnz) + " elements");
    }
  }
  // Bag lengths and DIRECT ranges: the bucketize pass over a copy of the routes.
  std::vector<FeatureRoute> routes = routes_;
  for (size_t f = 0; f < routes.size(); ++f) {
    routes[f].ids = batch.features[f].ids.data<int64_t>();
    routes[f].offsets = batch.features[f].offsets.data<int64_t>();
  }
  const int F = static_cast<int>(routes.size());
  for (int64_t g = 0; g < batch.batch_size * F; ++g) {
    const int f = static_cast<int>(g % F);
    int64_t first, len, raw_len;
    internal::BagRange(routes[f], g / F, &first, &len, &raw_len);
    if (internal::BagTooLong(routes[f], raw_len) ||
        internal::FirstBadDirectPos(routes[f], first, len) >= 0) {
      internal::DescribeBadBag(routes[f], f, g / F, error);
      return OutOfRangeError(DescribeError(*error));
    }
  }
  return Status::Ok();
}

std::string EmbeddingCollection::DescribeError(const BucketizeError& e) const {
  std::ostringstream os;
  const FeatureSpec& fs = spec_.features[e.feature];
  const TableSpec& ts = spec_.tables[fs.table];
  if (e.kind == 1) {
    os << "feature '" << fs.name << "': id " << e.id << " (sample " << e.sample
       << ") is outside [0, " << ts.num_rows << ") of table '" << ts.name
       << "' (id_mapping ID_MAPPING_DIRECT)";
  } else {
    os << "feature '" << fs.name << "': sample " << e.sample << " carries " << e.count
       << " ids, more than max_ids_per_sample = " << fs.max_ids;
  }
  return os.str();
}

Status EmbeddingCollection::ValidateBatch(const EmbeddingBatch& batch) const {
  BucketizeError error;
  return CheckBatch(batch, &error);
}

// ---------------------------------------------------------------------------------------
// Forward stages.

int64_t EmbeddingCollection::StageBucketize(const EmbeddingBatch& batch) {
  CHECK_GE(batch.batch_size, 1);
  CHECK_LE(batch.batch_size, max_batch_) << "batch larger than CollectionOptions.batch_size";
  CHECK_EQ(batch.features.size(), spec_.features.size());
  batch_ = batch.batch_size;
  for (size_t f = 0; f < routes_.size(); ++f) {
    const FeatureBatch& fb = batch.features[f];
    CHECK(fb.offsets.dtype() == DType::kI64 && fb.offsets.numel() == batch_ + 1)
        << "feature '" << spec_.features[f].name << "': offsets must be i64 [B + 1]";
    CHECK(fb.ids.dtype() == DType::kI64) << "feature '" << spec_.features[f].name << "': ids";
    routes_[f].ids = fb.ids.data<int64_t>();
    routes_[f].offsets = fb.offsets.data<int64_t>();
    routes_[f].weights = fb.weights.empty() ? nullptr : fb.weights.data<float>();
    const int64_t nnz = routes_[f].offsets[batch_];
    CHECK(spec_.features[f].pooling != Pooling::kWeightedSum || nnz == 0 ||
          (routes_[f].weights != nullptr && fb.weights.numel() >= nnz))
        << "feature '" << spec_.features[f].name << "': POOLING_WEIGHTED_SUM needs " << nnz
        << " weights";
    CHECK_GE(fb.ids.numel(), nnz) << "feature '" << spec_.features[f].name << "': ids";
  }
  BucketizeArgs a;
  a.features = routes_.data();
  a.num_features = static_cast<int>(routes_.size());
  a.parts = parts_.data();
  a.batch = batch_;
  a.row_bits = plan_.row_bits;
  a.bag_item_begin = Buf<int64_t>(kBagItemBegin);
  a.item_key = Buf<uint64_t>(kItemKey);
  a.item_part = Buf<int32_t>(kItemPart);
  a.item_scale = Buf<float>(kItemScale);
  a.item_out = Buf<int64_t>(kItemOut);
  BucketizeError error;
  num_items_ = Bucketize(ExecContext::Cpu(), a, &error);
  if (num_items_ < 0) LOG(FATAL) << "embedding forward: " << DescribeError(error);
  CHECK_LE(num_items_, plan_.buffers[rank_].elements[kItemKey]);
  stage_ = kStageBucketized;
  return num_items_;
}

int64_t EmbeddingCollection::SortKeys(uint64_t* keys, int64_t n, int32_t* perm,
                                      uint64_t* unique_keys, int32_t* unique_begin,
                                      int32_t* inverse) {
  SortUniqueArgs a;
  a.keys = keys;
  a.n = n;
  a.bits = key_bits_;
  a.keys_tmp = Buf<uint64_t>(kSortKeysTmp);
  a.vals_tmp = Buf<int32_t>(kSortValsTmp);
  a.histogram = Buf<int64_t>(kRadixHistogram);
  a.histogram_threads = plan_.num_threads;
  a.perm = perm;
  a.unique_keys = unique_keys;
  a.unique_begin = unique_begin;
  a.inverse = inverse;
  return SortUnique(ExecContext::Cpu(), a);
}

int64_t EmbeddingCollection::StageDedup() {
  if (stage_ == kStagePooledInPlace) {
    // The forward pooled in place (DefersDedup): dedup now, for the backward, then run the
    // exchange stages, which on one rank only set up the bookkeeping the backward reads.
    stage_ = kStageBucketized;
    const int64_t u = StageDedup();
    StageExchangeCounts();
    StageExchangeIds();
    StageLookup();
    StageExchangeVectors();
    stage_ = kStagePooled;
    return u;
  }
  CHECK_EQ(stage_, kStageBucketized);
  num_unique_ =
      SortKeys(Buf<uint64_t>(kItemKey), num_items_, Buf<int32_t>(kItemPerm),
               Buf<uint64_t>(kUniqueKey), Buf<int32_t>(kUniqueBegin), Buf<int32_t>(kItemToUnique));

  // Group ranges (keys are slot-major and slots destination-major), global keys, forward
  // read pointers and the backward message layout.
  const int rb = plan_.row_bits;
  const uint64_t row_mask = (uint64_t{1} << rb) - 1;
  uint64_t* keys = Buf<uint64_t>(kUniqueKey);
  const int32_t* ubegin = Buf<int32_t>(kUniqueBegin);
  const float** uptr = Buf<const float*>(kUniquePtr);
  int64_t* contrib_off = Buf<int64_t>(kUniqueContribOff);
  std::fill(group_unique_.begin(), group_unique_.end(), 0);
  for (int64_t u = 0; u < num_unique_; ++u) {
    ++group_unique_[slot_group_[keys[u] >> rb] + 1];
  }
  for (int g = 0; g <= world_; ++g) group_unique_[g + 1] += group_unique_[g];
  int64_t word = 0;
  int64_t vec = 0;
  std::fill(recv_vec_count_.begin(), recv_vec_count_.end(), 0);
  for (int g = 0; g <= world_; ++g) {
    const int64_t u0 = group_unique_[g], u1 = group_unique_[g + 1];
    send_word_off_[g] = word;
    const bool dp = g == world_;
    CHECK(!dp || has_dp_ || u1 == u0);
    // Message to group g: [counts] (+ for DP: [n][keys] first), then the contributions.
    word += dp ? (has_dp_ ? 1 + 3 * (u1 - u0) : 0) : (u1 - u0);
    if (!dp) recv_vec_off_[g] = vec;
    for (int64_t u = u0; u < u1; ++u) {
      const int slot = static_cast<int>(keys[u] >> rb);
      const int shard = slot_shard_[slot];
      const int64_t row = static_cast<int64_t>(keys[u] & row_mask);
      const int w = shard_views_[shard].width;
      keys[u] = (static_cast<uint64_t>(shard) << rb) | static_cast<uint64_t>(row);
      contrib_off[u] = word;
      word += static_cast<int64_t>(ubegin[u + 1] - ubegin[u]) * w;
      if (g == rank_ || dp) {
        uptr[u] = shard_views_[shard].weights + row * w;
      } else {
        uptr[u] = Buf<float>(kRecvVec) + vec;
        vec += w;
      }
    }
    if (g != rank_ && !dp) recv_vec_count_[g] = vec - recv_vec_off_[g];
    send_words_[g] = word - send_word_off_[g];
  }
  send_word_off_[world_ + 1] = word;
  CHECK_LE(word, plan_.buffers[rank_].elements[kBwdSend]);
  stage_ = kStageDeduped;
  return num_unique_;
}

void EmbeddingCollection::StageExchangeCounts() {
  CHECK_EQ(stage_, kStageDeduped);
  // Per peer: [unique keys I send it, backward words I send it, my DP message words].
  std::vector<int64_t>& send = comm3_send_;
  std::vector<int64_t>& recv = comm3_recv_;
  for (int p = 0; p < world_; ++p) {
    send[3 * p] = p == rank_ ? 0 : group_unique_[p + 1] - group_unique_[p];
    send[3 * p + 1] = p == rank_ ? 0 : send_words_[p];
    send[3 * p + 2] = send_words_[world_];
  }
  comm_->AllToAllV(send.data(), counts3_, displs3_, recv.data(), counts3_, displs3_, DType::kI64);
  for (int s = 0; s < world_; ++s) {
    recv_key_count_[s] = recv[3 * s];
    recv_words_[s] = recv[3 * s + 1];
    dp_words_[s] = recv[3 * s + 2];
    recv_key_off_[s + 1] = recv_key_off_[s] + recv_key_count_[s];
    recv_word_off_[s + 1] = recv_word_off_[s] + recv_words_[s];
    dp_word_off_[s + 1] = dp_word_off_[s] + dp_words_[s];
  }
  const BufferSizes& bs = plan_.buffers[rank_];
  CHECK_LE(recv_key_off_[world_], bs.elements[kRecvKeys]);
  CHECK_LE(recv_word_off_[world_], bs.elements[kBwdRecv]);
  CHECK_LE(dp_word_off_[world_], bs.elements[kDpRecv]);
  stage_ = kStageCountsExchanged;
}

void EmbeddingCollection::StageExchangeIds() {
  CHECK_EQ(stage_, kStageCountsExchanged);
  std::vector<int64_t>& sc = comm_a_;
  std::vector<int64_t>& sd = comm_b_;
  std::vector<int64_t>& rc = comm_c_;
  std::vector<int64_t>& rd = comm_d_;
  for (int p = 0; p < world_; ++p) {
    sc[p] = p == rank_ ? 0 : group_unique_[p + 1] - group_unique_[p];
    sd[p] = group_unique_[p];
    rc[p] = recv_key_count_[p];
    rd[p] = recv_key_off_[p];
  }
  comm_->AllToAllV(Buf<uint64_t>(kUniqueKey), sc, sd, Buf<uint64_t>(kRecvKeys), rc, rd,
                   DType::kI64);
  stage_ = kStageIdsExchanged;
}

void EmbeddingCollection::StageLookup() {
  CHECK_EQ(stage_, kStageIdsExchanged);
  const int rb = plan_.row_bits;
  const uint64_t* keys = Buf<uint64_t>(kRecvKeys);
  int64_t* off = Buf<int64_t>(kRecvKeyOff);
  int64_t pos = 0;
  for (int s = 0; s < world_; ++s) {
    send_vec_off_[s] = pos;
    for (int64_t i = recv_key_off_[s]; i < recv_key_off_[s + 1]; ++i) {
      const int shard = static_cast<int>(keys[i] >> rb);
      CHECK(shard < static_cast<int>(plan_.shards.size()) && plan_.shards[shard].owned_by(rank_))
          << "received a key of shard " << shard << " not held by rank " << rank_;
      off[i] = pos;
      pos += shard_views_[shard].width;
    }
    send_vec_count_[s] = pos - send_vec_off_[s];
  }
  send_vec_off_[world_] = pos;
  CHECK_LE(pos, plan_.buffers[rank_].elements[kSendVec]);
  GatherRows(ExecContext::Cpu(), keys, recv_key_off_[world_], rb, shard_views_.data(), off,
             Buf<float>(kSendVec));
  stage_ = kStageLookedUp;
}

void EmbeddingCollection::StageExchangeVectors() {
  CHECK_EQ(stage_, kStageLookedUp);
  std::vector<int64_t>& sd = comm_a_;
  std::vector<int64_t>& rd = comm_b_;
  std::copy(send_vec_off_.begin(), send_vec_off_.end() - 1, sd.begin());
  std::copy(recv_vec_off_.begin(), recv_vec_off_.end() - 1, rd.begin());
  comm_->AllToAllV(Buf<float>(kSendVec), send_vec_count_, sd, Buf<float>(kRecvVec), recv_vec_count_,
                   rd, DType::kF32);
  stage_ = kStageVectorsExchanged;
}

const EmbeddingOutputs& EmbeddingCollection::StagePool() {
  // Right after StageBucketize (DefersDedup), items read their rows in place, by key.
  const bool in_place = stage_ == kStageBucketized && DefersDedup();
  CHECK(stage_ == kStageVectorsExchanged || in_place)
      << "StagePool runs after StageExchangeVectors"
      << (DefersDedup() ? ", or right after StageBucketize on one rank" : "");
  PoolArgs a;
  a.features = routes_.data();
  a.num_features = static_cast<int>(routes_.size());
  a.parts = parts_.data();
  a.batch = batch_;
  a.bag_item_begin = Buf<int64_t>(kBagItemBegin);
  a.item_part = Buf<int32_t>(kItemPart);
  a.item_scale = Buf<float>(kItemScale);
  a.item_out = Buf<int64_t>(kItemOut);
  if (in_place) {
    a.item_key = Buf<uint64_t>(kItemKey);
    a.slot_weights = slot_weights_.data();
    a.row_bits = plan_.row_bits;
  } else {
    a.item_to_unique = Buf<int32_t>(kItemToUnique);
    a.unique_ptr = Buf<const float*>(kUniquePtr);
  }
  a.feature_out = feature_out_.data();
  a.feature_mask = feature_mask_.data();
  // Sequence outputs larger than a core's L2 leave the cache before the model reads them, so
  // they are written without first reading every line (embedding_kernels.h).
  int64_t sequence_bytes = 0;
  for (const FeatureSpec& fs : spec_.features) {
    if (fs.is_sequence()) {
      sequence_bytes += batch_ * fs.max_length * spec_.tables[fs.table].dim * sizeof(float);
    }
  }
  a.stream_outputs = sequence_bytes >= kStreamOutputBytes;
  PoolForward(ExecContext::Cpu(), a);
  // Views narrowed to this batch.
  outputs_ = EmbeddingOutputs();
  if (spec_.num_pooled > 0) {
    int common_dim = -1;
    for (const FeatureSpec& fs : spec_.features) {
      if (fs.is_sequence()) continue;
      const int d = spec_.tables[fs.table].dim;
      common_dim = common_dim < 0 || common_dim == d ? d : 0;
    }
    const Shape shape = common_dim > 0 ? Shape{batch_, spec_.num_pooled, common_dim}
                                       : Shape{batch_, spec_.pooled_width};
    outputs_.pooled = TensorView(Buf<float>(kPooledOut), TensorSpec{shape, DType::kF32});
  }
  for (size_t f = 0; f < spec_.features.size(); ++f) {
    const FeatureSpec& fs = spec_.features[f];
    if (!fs.is_sequence()) continue;
    const int64_t T = fs.max_length, D = spec_.tables[fs.table].dim;
    outputs_.sequences.emplace_back(feature_out_[f], TensorSpec{Shape{batch_, T, D}, DType::kF32});
    outputs_.masks.emplace_back(feature_mask_[f], TensorSpec{Shape{batch_, T}, DType::kF32});
  }
  stage_ = in_place ? kStagePooledInPlace : kStagePooled;
  return outputs_;
}

const EmbeddingOutputs& EmbeddingCollection::Forward(const EmbeddingBatch& batch) {
  StageBucketize(batch);
  if (!DefersDedup()) {
    StageDedup();
    StageExchangeCounts();
    StageExchangeIds();
    StageLookup();
    StageExchangeVectors();
  }
  return StagePool();
}

// ---------------------------------------------------------------------------------------
// Backward stages.

void EmbeddingCollection::StagePackGradients(const EmbeddingGrads& grads, float lr_scale) {
  if (stage_ == kStagePooledInPlace) StageDedup();
  CHECK_EQ(stage_, kStagePooled) << "Backward needs a Forward first";
  lr_scale_ = lr_scale;
  if (spec_.num_pooled > 0) {
    CHECK(grads.pooled.dtype() == DType::kF32 &&
          grads.pooled.numel() == batch_ * spec_.pooled_width)
        << "grad_pooled must be f32 with the shape of the pooled output, got "
        << grads.pooled.spec().ToString();
  }
  CHECK_EQ(grads.sequences.size(), static_cast<size_t>(spec_.num_sequence));
  for (size_t f = 0; f < spec_.features.size(); ++f) {
    const FeatureSpec& fs = spec_.features[f];
    if (fs.is_sequence()) {
      const ConstTensorView& g = grads.sequences[fs.sequence_index];
      CHECK(g.dtype() == DType::kF32 &&
            g.numel() == batch_ * fs.max_length * spec_.tables[fs.table].dim)
          << "grad of sequence feature '" << fs.name << "' must be f32 (B, T, D), got "
          << g.spec().ToString();
      feature_grad_[f] = g.data<float>();
    } else {
      feature_grad_[f] = grads.pooled.data<float>();
    }
  }
  int32_t* words = Buf<int32_t>(kBwdSend);
  const int32_t* ubegin = Buf<int32_t>(kUniqueBegin);
  const uint64_t* keys = Buf<uint64_t>(kUniqueKey);
  // Headers: counts per unique (and, for DP, the key list).
  for (int g = 0; g <= world_; ++g) {
    const int64_t u0 = group_unique_[g], u1 = group_unique_[g + 1];
    int32_t* w = words + send_word_off_[g];
    if (g == world_) {
      if (!has_dp_) break;
      w[0] = static_cast<int32_t>(u1 - u0);
      std::memcpy(w + 1, keys + u0, (u1 - u0) * sizeof(uint64_t));
      w += 1 + 2 * (u1 - u0);
    }
    for (int64_t u = u0; u < u1; ++u) w[u - u0] = ubegin[u + 1] - ubegin[u];
  }
  // Contributions for every destination but this rank itself: the owner side reads its own
  // items' gradients in place (ReduceArgs::entry_local), with the same float operations.
  PackArgs a;
  a.unique_begin = ubegin;
  a.perm = Buf<int32_t>(kItemPerm);
  a.item_part = Buf<int32_t>(kItemPart);
  a.item_scale = Buf<float>(kItemScale);
  a.item_out = Buf<int64_t>(kItemOut);
  a.parts = parts_.data();
  a.feature_grad = feature_grad_.data();
  a.contrib_off = Buf<int64_t>(kUniqueContribOff);
  a.out = reinterpret_cast<float*>(words);
  const int64_t self0 = group_unique_[rank_], self1 = group_unique_[rank_ + 1];
  PackArgs before = a, after = a;
  before.num_unique = self0;
  after.num_unique = num_unique_ - self1;
  after.unique_begin = ubegin + self1;
  after.contrib_off = a.contrib_off + self1;
  PackContributions(ExecContext::Cpu(), before);
  PackContributions(ExecContext::Cpu(), after);
  stage_ = kStagePacked;
}

void EmbeddingCollection::StageExchangeGradients() {
  CHECK_EQ(stage_, kStagePacked);
  std::vector<int64_t>& sc = comm_a_;
  std::vector<int64_t>& sd = comm_b_;
  std::vector<int64_t>& rd = comm_c_;
  std::copy(recv_word_off_.begin(), recv_word_off_.end() - 1, rd.begin());
  for (int p = 0; p < world_; ++p) {
    sc[p] = p == rank_ ? 0 : send_words_[p];
    sd[p] = send_word_off_[p];
  }
  comm_->AllToAllV(Buf<int32_t>(kBwdSend), sc, sd, Buf<int32_t>(kBwdRecv), recv_words_, rd,
                   DType::kI32);
  if (has_dp_) {
    std::vector<int64_t>& dd = comm_d_;
    std::copy(dp_word_off_.begin(), dp_word_off_.end() - 1, dd.begin());
    comm_->AllGatherV(Buf<int32_t>(kBwdSend) + send_word_off_[world_], send_words_[world_],
                      Buf<int32_t>(kDpRecv), dp_words_, dd, DType::kI32);
  }
  stage_ = kStageGradientsExchanged;
}

int64_t EmbeddingCollection::StageMerge() {
  CHECK_EQ(stage_, kStageGradientsExchanged);
  const int rb = plan_.row_bits;
  uint64_t* ekey = Buf<uint64_t>(kEntryKey);
  const float** econtrib = Buf<const float*>(kEntryContrib);
  int32_t* ecount = Buf<int32_t>(kEntryCount);
  int32_t* elocal = Buf<int32_t>(kEntryLocal);
  int64_t e = 0;
  const int64_t max_entries = plan_.buffers[rank_].elements[kEntryKey];
  // One message: counts[n] then the contributions, keys given separately.
  auto walk = [&](const uint64_t* keys, bool keys_unaligned, int64_t n, const int32_t* counts) {
    const float* x = reinterpret_cast<const float*>(counts + n);
    CHECK_LE(e + n, max_entries);
    for (int64_t k = 0; k < n; ++k, ++e) {
      uint64_t key;
      if (keys_unaligned) {
        std::memcpy(&key, reinterpret_cast<const char*>(keys) + k * 8, 8);
      } else {
        key = keys[k];
      }
      ekey[e] = key;
      econtrib[e] = x;
      ecount[e] = counts[k];
      elocal[e] = -1;
      x += static_cast<int64_t>(counts[k]) * shard_views_[key >> rb].width;
    }
  };
  for (int s = 0; s < world_; ++s) {
    if (s == rank_) {  // this rank's own keys: entries that read its items directly
      const uint64_t* keys = Buf<uint64_t>(kUniqueKey);
      for (int64_t u = group_unique_[s]; u < group_unique_[s + 1]; ++u, ++e) {
        ekey[e] = keys[u];
        econtrib[e] = nullptr;
        ecount[e] = 0;
        elocal[e] = static_cast<int32_t>(u);
      }
    } else {
      walk(Buf<uint64_t>(kRecvKeys) + recv_key_off_[s], false, recv_key_count_[s],
           Buf<int32_t>(kBwdRecv) + recv_word_off_[s]);
    }
  }
  if (has_dp_) {
    for (int s = 0; s < world_; ++s) {
      const int32_t* m = Buf<int32_t>(kDpRecv) + dp_word_off_[s];
      const int64_t n = m[0];
      walk(reinterpret_cast<const uint64_t*>(m + 1), true, n, m + 1 + 2 * n);
    }
  }
  num_entries_ = e;
  num_merged_ = SortKeys(ekey, num_entries_, Buf<int32_t>(kEntryPerm), Buf<uint64_t>(kMergedKey),
                         Buf<int32_t>(kMergedBegin), nullptr);
  // Merged row of each of this rank's own keys (for the canonical-order sweep of the fold).
  int32_t* l2m = Buf<int32_t>(kLocalToMerged);
  std::fill(l2m, l2m + num_unique_, -1);
  const int32_t* mbegin = Buf<int32_t>(kMergedBegin);
  const int32_t* eperm = Buf<int32_t>(kEntryPerm);
  for (int64_t m = 0; m < num_merged_; ++m) {
    for (int32_t j = mbegin[m]; j < mbegin[m + 1]; ++j) {
      if (elocal[eperm[j]] >= 0) l2m[elocal[eperm[j]]] = static_cast<int32_t>(m);
    }
  }
  int64_t* roff = Buf<int64_t>(kReducedOff);
  const uint64_t* mkey = Buf<uint64_t>(kMergedKey);
  int64_t pos = 0;
  for (int64_t u = 0; u < num_merged_; ++u) {
    roff[u] = pos;
    pos += shard_views_[mkey[u] >> rb].width;
  }
  roff[num_merged_] = pos;
  CHECK_LE(pos, plan_.buffers[rank_].elements[kReduced]);
  stage_ = kStageMerged;
  return num_merged_;
}

void EmbeddingCollection::StageReduce() {
  CHECK_EQ(stage_, kStageMerged);
  ReduceArgs a;
  a.num_rows = num_merged_;
  a.keys = Buf<uint64_t>(kMergedKey);
  a.begin = Buf<int32_t>(kMergedBegin);
  a.entry_perm = Buf<int32_t>(kEntryPerm);
  a.entry_contrib = Buf<const float*>(kEntryContrib);
  a.entry_count = Buf<int32_t>(kEntryCount);
  a.row_bits = plan_.row_bits;
  a.shards = shard_views_.data();
  a.params = params_.data();
  a.reduced_off = Buf<int64_t>(kReducedOff);
  a.reduced = Buf<float>(kReduced);
  a.entry_local = Buf<int32_t>(kEntryLocal);
  a.local_unique_begin = Buf<int32_t>(kUniqueBegin);
  a.local_perm = Buf<int32_t>(kItemPerm);
  a.local_item_part = Buf<int32_t>(kItemPart);
  a.local_item_scale = Buf<float>(kItemScale);
  a.local_item_out = Buf<int64_t>(kItemOut);
  a.local_parts = parts_.data();
  a.local_feature_grad = feature_grad_.data();
  a.local_num_items = num_items_;
  a.local_item_to_unique = Buf<int32_t>(kItemToUnique);
  a.local_to_merged = Buf<int32_t>(kLocalToMerged);
  a.local_item_merged = Buf<int32_t>(kSortValsTmp);  // free once StageMerge has sorted
  if (has_cw_rowwise_) {
    ReduceRows(ExecContext::Cpu(), a);
  } else {
    // Nothing to exchange between the fold and the update: fuse them per row.
    ReduceAndUpdateRows(ExecContext::Cpu(), a, MakeUpdateArgs(lr_scale_));
    fused_ = true;
  }
  stage_ = kStageReduced;
}

void EmbeddingCollection::StageExchangeRowSums() {
  CHECK_EQ(stage_, kStageReduced);
  if (!has_cw_rowwise_) {
    stage_ = kStageRowSumsExchanged;
    return;
  }
  // Column-wise shards with row-wise Adagrad: every slice owner publishes, per touched row,
  // the square sums of its 4-column blocks; every owner then adds all blocks of the row in
  // column order, which is the unsharded RowSquareSum bit for bit.
  const int rb = plan_.row_bits;
  const uint64_t* mkey = Buf<uint64_t>(kMergedKey);
  const float* red = Buf<float>(kReduced);
  const int64_t* roff = Buf<int64_t>(kReducedOff);
  const int num_shards = static_cast<int>(plan_.shards.size());
  auto is_cw_rw = [&](int s) {
    return plan_.shards[s].strategy == Strategy::kColumnWise && params_[s].external_row_sq;
  };
  // Merged keys are sorted, so each shard's rows are one contiguous range.
  std::vector<int64_t>& range_begin = shard_range_;
  std::fill(range_begin.begin(), range_begin.end(), 0);
  {
    std::vector<int64_t>& count = shard_count_;
    std::fill(count.begin(), count.end(), 0);
    for (int64_t u = 0; u < num_merged_; ++u) ++count[mkey[u] >> rb];
    for (int s = 0; s < num_shards; ++s) range_begin[s + 1] = range_begin[s] + count[s];
  }
  int32_t* mine = Buf<int32_t>(kCwPartial);
  int64_t words = 0;
  for (int s = 0; s < num_shards; ++s) {
    if (!is_cw_rw(s) || plan_.shards[s].rank != rank_) continue;
    const int64_t n = range_begin[s + 1] - range_begin[s];
    const int w = plan_.shards[s].width, nb = (w + kColumnBlock - 1) / kColumnBlock;
    mine[words++] = static_cast<int32_t>(n);
    float* part = reinterpret_cast<float*>(mine + words);
    for (int64_t u = range_begin[s]; u < range_begin[s + 1]; ++u) {
      const float* g = red + roff[u];
      for (int b = 0; b < nb; ++b) {
        *part++ = BlockSquareSum(g, b * kColumnBlock, std::min(w, (b + 1) * kColumnBlock));
      }
    }
    words += n * nb;
  }
  CHECK_LE(words, plan_.buffers[rank_].elements[kCwPartial]);
  std::vector<int64_t>& all_words = comm_a_;
  std::vector<int64_t>& displs = comm_b_;
  comm_->AllGather(&words, all_words.data(), 1, DType::kI64);
  int64_t total = 0;
  for (int r = 0; r < world_; ++r) {
    displs[r] = total;
    total += all_words[r];
  }
  CHECK_LE(total, plan_.buffers[rank_].elements[kCwGather]);
  int32_t* all = Buf<int32_t>(kCwGather);
  comm_->AllGatherV(mine, words, all, all_words, displs, DType::kI32);
  // Where each shard's partials sit in the gathered buffer.
  std::vector<const float*>& partials = shard_partials_;
  std::vector<int64_t>& rows = shard_count_;  // reused: rows each shard's owner published
  std::fill(partials.begin(), partials.end(), nullptr);
  std::fill(rows.begin(), rows.end(), 0);
  for (int r = 0; r < world_; ++r) {
    const int32_t* m = all + displs[r];
    for (int s = 0; s < num_shards; ++s) {
      if (!is_cw_rw(s) || plan_.shards[s].rank != r) continue;
      const int w = plan_.shards[s].width, nb = (w + kColumnBlock - 1) / kColumnBlock;
      rows[s] = m[0];
      partials[s] = reinterpret_cast<const float*>(m + 1);
      m += 1 + rows[s] * nb;
    }
  }
  float* row_sq = Buf<float>(kRowSq);
  for (int s = 0; s < num_shards; ++s) {
    if (!is_cw_rw(s) || plan_.shards[s].rank != rank_) continue;
    const TablePlan& tp = plan_.tables[plan_.shards[s].table];
    const int64_t n = range_begin[s + 1] - range_begin[s];
    for (int k : tp.shards) {
      CHECK_EQ(rows[k], n) << "column slices of table '" << spec_.tables[plan_.shards[s].table].name
                           << "' touched different rows";
    }
    for (int64_t i = 0; i < n; ++i) {
      float total_sq = 0.0f;
      for (int k : tp.shards) {  // slices in column order, blocks in column order
        const int nb = (plan_.shards[k].width + kColumnBlock - 1) / kColumnBlock;
        const float* p = partials[k] + i * nb;
        for (int b = 0; b < nb; ++b) total_sq = total_sq + p[b];
      }
      row_sq[range_begin[s] + i] = total_sq;
    }
  }
  stage_ = kStageRowSumsExchanged;
}

UpdateArgs EmbeddingCollection::MakeUpdateArgs(float lr_scale) const {
  UpdateArgs a;
  a.num_rows = num_merged_;
  a.keys = Buf<uint64_t>(kMergedKey);
  a.row_bits = plan_.row_bits;
  a.shards = shard_views_.data();
  a.params = params_.data();
  a.reduced_off = Buf<int64_t>(kReducedOff);
  a.reduced = Buf<float>(kReduced);
  a.row_sq = Buf<float>(kRowSq);
  a.lr_scale = lr_scale;
  return a;
}

void EmbeddingCollection::StageUpdate(float lr_scale) {
  CHECK_EQ(stage_, kStageRowSumsExchanged);
  if (!fused_) {
    UpdateRows(ExecContext::Cpu(), MakeUpdateArgs(lr_scale));
  } else {
    CHECK_EQ(lr_scale, lr_scale_) << "StageReduce already applied the update with lr_scale "
                                  << lr_scale_;
  }
  {  // ---- Non-lazy Adam (update_mode UPDATE_DENSE; sparse_optimizer.h): the held rows the
     // batch did not touch take their zero-gradient step too. O(S) without such tables. ----
    UntouchedArgs d;
    d.num_shards = static_cast<int>(shard_views_.size());
    d.shards = shard_views_.data();
    d.params = params_.data();
    d.num_touched = num_merged_;
    d.touched_keys = Buf<uint64_t>(kMergedKey);
    d.row_bits = plan_.row_bits;
    d.lr_scale = lr_scale;
    StepUntouchedRows(ExecContext::Cpu(), d);
  }  // ---- end non-lazy Adam ----
  fused_ = false;
  stage_ = kStageIdle;
}

void EmbeddingCollection::Backward(const EmbeddingGrads& grads, float lr_scale) {
  StagePackGradients(grads, lr_scale);
  StageExchangeGradients();
  StageMerge();
  StageReduce();
  StageExchangeRowSums();
  StageUpdate(lr_scale);
}

// ---------------------------------------------------------------------------------------

TableContents EmbeddingCollection::GatherTable(int table) {
  CHECK(table >= 0 && table < static_cast<int>(spec_.tables.size()));
  const TableSpec& ts = spec_.tables[table];
  const TablePlan& tp = plan_.tables[table];
  const OptimizerType type = ts.optimizer.type;
  // Words per shard: weights, then state0, state1, steps as the optimizer has them.
  auto shard_words = [&](int s) {
    const Shard& sh = plan_.shards[s];
    const int64_t e = sh.num_rows * sh.width;
    switch (type) {
      case OptimizerType::kSgd:
        return e;
      case OptimizerType::kAdagrad:
        return 2 * e;
      case OptimizerType::kRowwiseAdagrad:
        return e + sh.num_rows;
      case OptimizerType::kAdam:
        return 3 * e + sh.num_rows;
    }
    return e;
  };
  auto pack = [&](int s, int32_t* out) {
    const Shard& sh = plan_.shards[s];
    const ShardView& v = shard_views_[s];
    const int64_t e = sh.num_rows * sh.width;
    std::memcpy(out, v.weights, e * 4);
    out += e;
    if (type == OptimizerType::kAdagrad || type == OptimizerType::kAdam) {
      std::memcpy(out, v.state0, e * 4);
      out += e;
    }
    if (type == OptimizerType::kRowwiseAdagrad) std::memcpy(out, v.state0, sh.num_rows * 4);
    if (type == OptimizerType::kAdam) {
      std::memcpy(out, v.state1, e * 4);
      out += e;
      std::memcpy(out, v.steps, sh.num_rows * 4);
    }
  };
  std::vector<int32_t> gathered;
  std::vector<const int32_t*> where(plan_.shards.size(), nullptr);
  if (tp.strategy == Strategy::kDataParallel) {
    gathered.resize(shard_words(tp.shards[0]));
    pack(tp.shards[0], gathered.data());
    where[tp.shards[0]] = gathered.data();
  } else {
    std::vector<int64_t> counts(world_, 0), displs(world_, 0);
    for (int s : tp.shards) counts[plan_.shards[s].rank] += shard_words(s);
    int64_t total = 0;
    for (int r = 0; r < world_; ++r) {
      displs[r] = total;
      total += counts[r];
    }
    std::vector<int32_t> mine(counts[rank_]);
    std::vector<int64_t> cursor(displs);
    int64_t my = 0;
    for (int s : tp.shards) {
      const int r = plan_.shards[s].rank;
      if (r == rank_) {
        pack(s, mine.data() + my);
        my += shard_words(s);
      }
    }
    gathered.resize(total);
    comm_->AllGatherV(mine.data(), counts[rank_], gathered.data(), counts, displs, DType::kI32);
    for (int s : tp.shards) {
      const int r = plan_.shards[s].rank;
      where[s] = gathered.data() + cursor[r];
      cursor[r] += shard_words(s);
    }
  }
  TableContents out;
  const int64_t rows = ts.num_rows, D = ts.dim;
  out.weights.assign(rows * D, 0.0f);
  if (type == OptimizerType::kAdagrad || type == OptimizerType::kAdam)
    out.state0.assign(rows * D, 0);
  if (type == OptimizerType::kRowwiseAdagrad) out.state0.assign(rows, 0.0f);
  if (type == OptimizerType::kAdam) {
    out.state1.assign(rows * D, 0.0f);
    out.steps.assign(rows, 0);
  }
  for (size_t k = 0; k < tp.shards.size(); ++k) {
    const int s = tp.shards[k];
    const Shard& sh = plan_.shards[s];
    const float* src = reinterpret_cast<const float*>(where[s]);
    const int64_t e = sh.num_rows * sh.width;
    auto scatter = [&](const float* from, std::vector<float>* to) {
      for (int64_t l = 0; l < sh.num_rows; ++l) {
        const int64_t g = l * sh.row_stride + sh.row_offset;
        std::memcpy(to->data() + g * D + sh.col_begin, from + l * sh.width, sh.width * 4);
      }
    };
    scatter(src, &out.weights);
    const float* st = src + e;
    if (type == OptimizerType::kAdagrad || type == OptimizerType::kAdam) {
      scatter(st, &out.state0);
      st += e;
    }
    const bool first_slice = k == 0 || sh.strategy != Strategy::kColumnWise;
    if (type == OptimizerType::kRowwiseAdagrad && first_slice) {
      for (int64_t l = 0; l < sh.num_rows; ++l)
        out.state0[l * sh.row_stride + sh.row_offset] = st[l];
    }
    if (type == OptimizerType::kAdam) {
      scatter(st, &out.state1);
      st += e;
      if (first_slice) {
        const int32_t* steps = reinterpret_cast<const int32_t*>(st);
        for (int64_t l = 0; l < sh.num_rows; ++l)
          out.steps[l * sh.row_stride + sh.row_offset] = steps[l];
      }
    }
  }
  return out;
}

}  // namespace loom::embedding
