// Sharding plan: where every table lives, and the exact per-rank memory it costs.
//
// Strategies (docs/sharding.md):
//   TW  table-wise      the whole table on one rank.
//   RW  row-wise        n ranks; global row r on ranks[r mod n] at local row r / n (cyclic,
//                       so the hot low rows of a modulo-mapped Zipf feature spread evenly).
//   CW  column-wise     the D columns cut into n slices on multiples of 4; slice k on ranks[k].
//   DP  data-parallel   a replica on every rank; gradients all-gathered and reduced identically.
// Every piece is a Shard with a global index, the same on every rank. A row of a shard is
// addressed by the 64-bit key (shard << row_bits) | local_row.
//
// The planner honours ShardingOverrides, replicates tables of at most data_parallel_max_bytes,
// and places the others table-wise on the rank with the lowest (memory + lookup) load, largest
// first; a table larger than a fair share of the budget is spread row-wise. Memory is computed
// exactly (weights + optimizer state + communication buffers + workspace, bytes as allocated
// by EmbeddingCollection::Create) and a plan over budget is refused with what would fit.
#ifndef LOOM_EMBEDDING_SHARDING_PLAN_H_
#define LOOM_EMBEDDING_SHARDING_PLAN_H_

#include <cstdint>
#include <string>
#include <vector>

#include "csrc/core/status.h"
#include "csrc/embedding/embedding_spec.h"

namespace loom::embedding {

// Column cuts of column-wise shards fall on multiples of this; row-wise Adagrad sums the
// squares of a row in blocks of this many columns, then the blocks in order (bit-exact CW).
constexpr int kColumnBlock = 4;

struct Shard {
  int table = 0;
  Strategy strategy = Strategy::kTableWise;
  int rank = 0;            // owner; -1 for DP (every rank holds it)
  int64_t row_stride = 1;  // global row = local_row * row_stride + row_offset
  int64_t row_offset = 0;
  int64_t num_rows = 0;  // local rows
  int col_begin = 0;     // columns [col_begin, col_begin + width) of the table
  int width = 0;
  bool owned_by(int r) const { return rank < 0 || rank == r; }
};

struct TablePlan {
  Strategy strategy = Strategy::kTableWise;
  std::vector<int> ranks;   // TW: 1; RW/CW: the n ranks; DP: empty
  std::vector<int> shards;  // global shard indices: RW shard j / CW slice k at position j / k
  bool overridden = false;
};

// Bytes one rank holds. comm = buffers that travel through the communicator; workspace = the
// other per-step scratch (sort buffers, item arrays, reduced gradients of touched rows).
struct RankMemory {
  int64_t weights = 0;
  int64_t optimizer = 0;
  int64_t comm = 0;
  int64_t workspace = 0;
  int64_t total() const { return weights + optimizer + comm + workspace; }
};

// The per-step buffers of one rank, worst case for the planned batch size. EmbeddingCollection
// carves exactly these from one arena, each rounded up to 64 bytes; memory is their sum.
enum BufferId : int {
  // Requester side (every rank). N = items (id occurrences x column slices), NB = B * F.
  kBagItemBegin = 0,  // i64 [NB + 1]
  kItemKey,           // u64 [N]  sort key (slot << row_bits | local row); sorted in place
  kItemPart,          // i32 [N]  route part (feature, shard, columns)
  kItemScale,         // f32 [N]  pooling scale (1, 1/len or the id's weight)
  kItemOut,           // i64 [N]  float offset of the item's output (and gradient) slice
  kItemPerm,          // i32 [N]  items in (key, canonical order) order
  kItemToUnique,      // i32 [N]
  kUniqueKey,         // u64 [N]  unique keys, grouped by destination; become global keys
  kUniqueBegin,       // i32 [N + 1]  run starts in kItemPerm
  kUniquePtr,         // ptr [N]  where each unique row slice is read from in forward
  kUniqueContribOff,  // i64 [N + 1]  word offset of each unique's contributions (backward)
  kLocalToMerged,     // i32 [N]  merged row of each of this rank's own unique keys, or -1
  kRecvVec,           // f32 [sum of item widths]  remote unique row slices        (comm)
  kBwdSend,           // i32 [...]  counts + contributions (+ DP keys)               (comm)
  // Owner side.
  kRecvKeys,       // u64 [(R-1) M]  keys from the other ranks                    (comm)
  kRecvKeyOff,     // i64 [(R-1) M + 1]
  kSendVec,        // f32 [(R-1) MW]  their row slices                             (comm)
  kBwdRecv,        // i32 [(R-1) (M + MW)]  their counts + contributions          (comm)
  kDpRecv,         // i32 [R x DP message]  all ranks' DP contributions            (comm)
  kEntryKey,       // u64 [E]
  kEntryContrib,   // ptr [E]
  kEntryCount,     // i32 [E]
  kEntryLocal,     // i32 [E]  requester's unique index of a self entry, else -1
  kEntryPerm,      // i32 [E]
  kEntryToUnique,  // i32 [E]
  kMergedKey,      // u64 [E]
  kMergedBegin,    // i32 [E + 1]
  kReducedOff,     // i64 [E + 1]
  kReduced,        // f32 [EW]  reduced gradient slices of the touched rows
  kRowSq,          // f32 [E]  row-wise Adagrad: sum of g^2 over the whole row
  kCwPartial,      // i32 [...]  this rank's column-block partials (CW + row-wise)  (comm)
  kCwGather,       // i32 [...]  every rank's partials                              (comm)
  // Shared scratch.
  kSortKeysTmp,     // u64 [max(N, E)]
  kSortValsTmp,     // i32 [max(N, E)]
  kRadixHistogram,  // i64 [threads * 2048]
  // Forward outputs (the dense model reads them).
  kPooledOut,    // f32 [B, sum of pooled D]
  kSequenceOut,  // f32 [sum over sequence features of B * T * D]
  kMaskOut,      // f32 [sum over sequence features of B * T]
  kNumBuffers
};

struct BufferSizes {
  int64_t elements[kNumBuffers] = {};
  static int64_t ElementBytes(int id);
  static bool IsComm(int id);
  static const char* Name(int id);
  static int64_t Aligned(int64_t bytes) { return (bytes + 63) / 64 * 64; }
  int64_t Bytes(int id) const { return Aligned(elements[id] * ElementBytes(id)); }
  int64_t CommBytes() const;
  int64_t WorkspaceBytes() const;
};

struct ShardingPlan {
  int world_size = 1;
  int64_t batch_size = 0;  // B, local samples per rank (the maximum Forward accepts)
  int num_threads = 1;     // OpenMP threads the workspace is sized for
  int row_bits = 1;        // bits of local_row in a key
  int shard_bits = 1;
  std::vector<TablePlan> tables;
  std::vector<Shard> shards;
  std::vector<BufferSizes> buffers;  // per rank
  std::vector<RankMemory> memory;    // per rank

  // A fixed-width table of the placement and of every rank's memory, for the log.
  std::string ToString(const EmbeddingSpec& spec) const;
  // The rank owning global `row` of `table` (RW: ranks[row mod n]); -1 for DP.
  int OwnerOfRow(int table, int64_t row) const;
};

struct PlannerOptions {
  int world_size = 1;
  int64_t batch_size = 1;  // B per rank
  int num_threads = 1;
  int64_t budget_bytes = -1;  // < 0: take EmbeddingSpec::budget_bytes; 0 = unlimited
};

// Plans every table and computes memory. ResourceExhausted when a rank exceeds the budget,
// naming the rank, its bytes by kind, and the budget / world size that would fit.
StatusOr<ShardingPlan> PlanSharding(const EmbeddingSpec& spec, const PlannerOptions& options);

// Recomputes shards, key widths, buffers and memory of a plan whose tables[] are set.
// InvalidArgument for an impossible placement.
Status FinalizePlan(const EmbeddingSpec& spec, ShardingPlan* plan);

}  // namespace loom::embedding

#endif  // LOOM_EMBEDDING_SHARDING_PLAN_H_
