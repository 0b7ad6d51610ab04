// EmbeddingCollection: the sharded embedding tables of a job and their fused sparse
// optimizers, driven through a Communicator (model parallel, all-to-all).
//
// Per step, on every rank (docs/sharding.md has the buffer layouts):
//   Forward(batch)     bucketize ids by owner -> dedup per owner -> all-to-all counts ->
//                      all-to-all ids -> lookup on the owned shards -> all-to-all row slices
//                      -> pool / place in local order. On one rank: bucketize -> pool, rows
//                      read in place (the dedup moves to the backward: DefersDedup).
//   Backward(grads)    pack scaled gradient contributions per unique row -> all-to-all (and
//                      an all-gather for data-parallel tables) back to the owners -> merge
//                      entries by a stable sort -> reduce duplicates in the global canonical
//                      order -> fused sparse optimizer on the touched rows.
// Each stage is a public Stage* method, so tests and benchmarks can run them one by one;
// Forward and Backward just call them in order.
//
// Inputs, per feature in config order, CSR on the host:
//   ids      i64 [nnz]     raw 64-bit ids (mapped by the table's id_mapping)
//   offsets  i64 [B + 1]   bag b is ids[offsets[b] .. offsets[b+1])
//   weights  f32 [nnz]     POOLING_WEIGHTED_SUM only (empty view otherwise)
// SEQUENCE lists keep their last T ids (the most recent last).
//
// Outputs (owned by the collection, valid until the next Forward):
//   pooled     f32 (B, F, D) when every pooled feature has the same D, else (B, sum D);
//              features in config order (SINGLE and MULTI_HOT). Empty view if F = 0.
//   sequences  per SEQUENCE feature, f32 (B, T, D), pre-padded: token p of a list of len
//              L <= T sits at t = T - L + p; padding rows are 0.
//   masks      per SEQUENCE feature, f32 (B, T): 1 at tokens, 0 at padding.
//
// Gradients (Backward): grad_pooled and grad_sequences with the shapes of the outputs
// (padding rows are ignored). Backward consumes them and the state of the last Forward and
// updates the tables in place: parameters take the optimizer step (no gradient is kept).
//
// Determinism: the same config, seed, world size and batches give bit-identical tables and
// outputs. Across world sizes and plans (TW, RW, CW, DP, mixed), forward outputs, tables and
// optimizer state are bit-identical to a 1-rank run on the concatenated global batch (rank r
// holding samples [r B, (r+1) B)); docs/sharding.md explains why.
//
// Setup errors are Status; bad input inside a step (an id out of range of a DIRECT table, a
// bag longer than max_ids_per_sample) is fatal with a message naming the feature and id —
// ValidateBatch returns that message as a Status for callers that check first.
// Only the CPU device runs the collection end to end so far; the CUDA kernels of every stage
// exist (embedding_kernels.h, sparse_optimizer.h) and are tested against the CPU ones.
#ifndef LOOM_EMBEDDING_EMBEDDING_COLLECTION_H_
#define LOOM_EMBEDDING_EMBEDDING_COLLECTION_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "csrc/comm/communicator.h"
#include "csrc/core/macros.h"
#include "csrc/core/status.h"
#include "csrc/core/tensor.h"
#include "csrc/embedding/embedding_kernels.h"
#include "csrc/embedding/embedding_spec.h"
#include "csrc/embedding/sharding_plan.h"
#include "csrc/embedding/sparse_optimizer.h"
#include "csrc/proto/embedding.pb.h"

namespace loom::embedding {

struct FeatureBatch {
  ConstTensorView ids;      // i64 [nnz]
  ConstTensorView offsets;  // i64 [B + 1]
  ConstTensorView weights;  // f32 [nnz] or empty
};

struct EmbeddingBatch {
  int64_t batch_size = 0;              // B <= CollectionOptions::batch_size
  std::vector<FeatureBatch> features;  // config order, one per feature
};

struct EmbeddingOutputs {
  TensorView pooled;
  std::vector<TensorView> sequences;
  std::vector<TensorView> masks;
};

struct EmbeddingGrads {
  ConstTensorView pooled;                  // shape of EmbeddingOutputs::pooled
  std::vector<ConstTensorView> sequences;  // shapes of EmbeddingOutputs::sequences
};

struct CollectionOptions {
  int64_t batch_size = 1;  // B: the largest local batch Forward accepts (sizes the buffers)
  int num_threads = 0;     // OpenMP threads the workspace is sized for; 0 = omp_get_max_threads
  bool log_plan = true;    // log the plan and per-rank memory (rank 0) before allocating
  // A plan to use instead of the planner's (tests); its memory is recomputed.
  const ShardingPlan* plan = nullptr;
};

// Contents of one table, global layout, as GatherTable returns them.
struct TableContents {
  std::vector<float> weights;  // [rows, D]
  std::vector<float> state0;   // Adagrad s [rows, D]; row-wise s [rows]; Adam m [rows, D]
  std::vector<float> state1;   // Adam v [rows, D]
  std::vector<int32_t> steps;  // Adam step counts [rows]
};

class EmbeddingCollection {
 public:
  // Validates the config, plans (or takes options.plan), logs the plan and exact per-rank
  // memory, refuses a plan over budget, then allocates and initializes the local shards.
  // comm must outlive the collection; every rank calls Create with the same config.
  static StatusOr<std::unique_ptr<EmbeddingCollection>> Create(const proto::EmbeddingConfig& config,
                                                               comm::Communicator* comm,
                                                               const CollectionOptions& options);
  ~EmbeddingCollection();
  LOOM_DISALLOW_COPY_AND_ASSIGN(EmbeddingCollection);

  // Checks shapes, bag lengths and DIRECT id ranges of a batch (what Forward CHECKs).
  Status ValidateBatch(const EmbeddingBatch& batch) const;

  // Runs the forward stages. Collective.
  const EmbeddingOutputs& Forward(const EmbeddingBatch& batch);
  // Whether Forward skips the dedup and the exchanges: on one rank every row is local, the
  // forward reads them in place, and only the backward needs the unique rows (as FBGEMM's
  // TBE, it sorts them there). A forward-only pass (evaluation) never sorts.
  bool DefersDedup() const { return world_ == 1; }
  // Runs every backward stage, with the learning rates scaled by lr_scale. Collective.
  void Backward(const EmbeddingGrads& grads, float lr_scale = 1.0f);

  // ---- The stages, in order (each CHECKs that the previous one ran). ----
  // Forward. On one rank (DefersDedup), StagePool may follow StageBucketize directly: it
  // then reads every row in place, and the dedup with the (local) exchange stages runs in
  // the backward: StageDedup after StagePool, or else by StagePackGradients itself.
  int64_t StageBucketize(const EmbeddingBatch& batch);  // returns N items
  int64_t StageDedup();                                 // returns U unique keys
  void StageExchangeCounts();
  void StageExchangeIds();
  void StageLookup();
  void StageExchangeVectors();
  const EmbeddingOutputs& StagePool();
  // Backward.
  // lr_scale is fixed here: without column-wise row-wise Adagrad tables, StageReduce applies
  // the update fused with the fold, and StageUpdate only checks it ran.
  void StagePackGradients(const EmbeddingGrads& grads, float lr_scale = 1.0f);
  void StageExchangeGradients();
  int64_t StageMerge();  // returns the number of touched rows owned here
  void StageReduce();
  void StageExchangeRowSums();
  void StageUpdate(float lr_scale = 1.0f);

  // All of a table, on every rank (collective; for tests, tools and small tables).
  TableContents GatherTable(int table);

  const EmbeddingSpec& spec() const { return spec_; }
  const ShardingPlan& plan() const { return plan_; }
  const EmbeddingOutputs& outputs() const { return outputs_; }
  // Bytes this rank allocated (shards + arena): equals plan().memory[rank].total().
  int64_t allocated_bytes() const { return allocated_bytes_; }
  // This rank's storage of a global shard (null weights when not held here).
  const ShardView& shard_view(int shard) const { return shard_views_[shard]; }
  // Unique keys this rank sent to each destination in the last dedup (group R = DP).
  int64_t unique_count(int group) const { return group_unique_[group + 1] - group_unique_[group]; }

 private:
  EmbeddingCollection() = default;
  Status Init(const proto::EmbeddingConfig& config, comm::Communicator* comm,
              const CollectionOptions& options);
  void InitializeShard(int shard);
  template <typename T>
  T* Buf(int id) const {
    return reinterpret_cast<T*>(buffers_[id]);
  }
  UpdateArgs MakeUpdateArgs(float lr_scale) const;
  // SortUnique of n keys (< 2^key_bits_, overwritten) with the shared sort scratch; returns U.
  int64_t SortKeys(uint64_t* keys, int64_t n, int32_t* perm, uint64_t* unique_keys,
                   int32_t* unique_begin, int32_t* inverse);
  Status CheckBatch(const EmbeddingBatch& batch, BucketizeError* error) const;
  std::string DescribeError(const BucketizeError& e) const;

  EmbeddingSpec spec_;
  ShardingPlan plan_;
  comm::Communicator* comm_ = nullptr;
  int rank_ = 0;
  int world_ = 1;
  int64_t max_batch_ = 0;
  int key_bits_ = 1;
  bool has_dp_ = false;
  bool has_cw_rowwise_ = false;

  // Routing.
  std::vector<RoutePart> parts_;
  std::vector<FeatureRoute> routes_;
  std::vector<int> slot_shard_;             // slot -> global shard
  std::vector<int> slot_group_;             // slot -> destination rank, or R for DP
  std::vector<const float*> slot_weights_;  // slot -> local weights (null: held elsewhere)
  std::vector<OptimizerParams> params_;     // by global shard
  std::vector<ShardView> shard_views_;      // by global shard
  std::vector<void*> shard_memory_;         // owned allocations

  // Arena.
  void* arena_ = nullptr;
  int64_t arena_bytes_ = 0;
  void* buffers_[kNumBuffers] = {};
  int64_t allocated_bytes_ = 0;

  // Per-step state.
  int64_t batch_ = 0;
  int64_t num_items_ = 0;
  int64_t num_unique_ = 0;
  std::vector<int64_t> group_unique_;                   // [R + 2] unique ranges per group (R = DP)
  std::vector<int64_t> send_words_;                     // [R + 1] backward words per group
  std::vector<int64_t> send_word_off_;                  // [R + 2]
  std::vector<int64_t> recv_key_count_, recv_key_off_;  // [R], [R + 1] per source
  std::vector<int64_t> recv_words_, recv_word_off_;     // [R], [R + 1]
  std::vector<int64_t> dp_words_, dp_word_off_;         // [R], [R + 1]
  std::vector<int64_t> send_vec_count_, send_vec_off_;  // per source (owner side)
  std::vector<int64_t> recv_vec_count_, recv_vec_off_;  // per destination (requester)
  std::vector<int64_t> comm3_send_, comm3_recv_, counts3_, displs3_;  // [3R], [3R], [R], [R]
  std::vector<int64_t> comm_a_, comm_b_, comm_c_, comm_d_;            // [R] each
  std::vector<int64_t> shard_range_, shard_count_;                    // [S + 1], [S]
  std::vector<const float*> shard_partials_;                          // [S]
  std::vector<float*> feature_out_, feature_mask_;
  std::vector<const float*> feature_grad_;
  int64_t num_entries_ = 0;
  int64_t num_merged_ = 0;
  int stage_ = 0;
  float lr_scale_ = 1.0f;
  bool fused_ = false;
  EmbeddingOutputs outputs_;
};

}  // namespace loom::embedding

#endif  // LOOM_EMBEDDING_EMBEDDING_COLLECTION_H_
