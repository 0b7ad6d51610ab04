// Checkpoint conversion: a world-size-independent view of a Loom checkpoint ("global
// tensors"), streaming resharding to another world size and plan, merging into one rank,
// per-tensor diffs, and importing weights from safetensors. Offline: no communicator, no MPI,
// one process on a CPU machine reads and writes every file. What `loom ckpt reshard | merge |
// diff | import` run (ckpt_cli.h); export is ckpt_export.h.
//
// Global tensors. A checkpoint stores its tensors in pieces (checkpoint.proto: one piece per
// shard and rank); the tools see them whole, whatever the world size and plan that wrote them:
//   dense/<parameter>              a dense parameter, its stored shape
//   dense_opt/<parameter>/<slot>   a dense optimizer state tensor (exp_avg, ...)
//   embedding/<table>/weight       (rows, D) f32, the table
//   embedding/<table>/<slot>       its optimizer state: (rows, D) for element-wise slots
//                                  (adagrad_sum, adam_m, adam_v), (rows) for per-row slots
//                                  (rowwise_adagrad_sum f32, adam_step i32)
// Global element (g, c) of an embedding tensor is local element ((g - row_offset) / row_stride,
// c - col_begin) of the piece whose rows and columns hold it (EmbeddingPiece). Per-row slots
// are stored once per column slice (CW); the slices must agree bit for bit (they do: the
// trainer reduces row sums in a fixed block order), and the tools check that they do.
//
// Streaming. Every tool walks a global tensor in blocks of consecutive global rows
// (RowSource, about block_bytes each): for each block it reads, from every piece, the one
// contiguous range of the piece's local rows that falls in the block. Memory is a few blocks
// whatever the table size, and each piece is read exactly once, front to back, so its
// CRC-32C is checked as its last byte arrives (a mismatch is a DataLoss error naming the file
// and the tensor). Writers lay out every output tensor first (64-byte aligned, as the
// trainer does), preallocate the files and pwrite each block's rows at their place; a
// tensor's rows are produced in order, so its CRC-32C is extended block by block, and a
// file's CRC-32C is combined from its tensors' (Crc32cCombine), with no second pass.
//
// Atomic output. A converted checkpoint is written to <out>/.tmp-step-<step>/ and renamed to
// <out>/step-<step>/ once every file, the manifest and manifest.crc32c are written and
// fsynced (the trainer's commit protocol, checkpoint.h). On any error the temporary directory
// is removed and nothing else is touched; an existing <out>/step-<step> is an error unless
// `overwrite` (then it is replaced only after the new one is complete).
//
// Errors are Status values whose message names the file (and tensor) and what is wrong:
//   "step-000000000100/embedding-r00002.bin: missing (written by rank 2)"
//   "step-000000000100/embedding-r00001.bin: size 1024, the manifest says 2048 (truncated)"
//   "step-000000000100/dense.bin: tensor dense/head.out.weight: CRC-32C 1a2b3c4d, the manifest
//    says 5e6f7a8b (corrupted)"
#ifndef LOOM_TRAIN_CKPT_CONVERT_H_
#define LOOM_TRAIN_CKPT_CONVERT_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "csrc/core/dtype.h"
#include "csrc/core/status.h"
#include "csrc/embedding/sharding_plan.h"
#include "csrc/proto/checkpoint.pb.h"
#include "csrc/proto/config.pb.h"
#include "csrc/proto/embedding.pb.h"

namespace loom::train {

inline constexpr int64_t kDefaultBlockBytes = int64_t{64} << 20;

// CRC-32C of A||B from crc(A), crc(B) and |B| (zlib's crc32_combine method over the
// Castagnoli polynomial).
uint32_t Crc32cCombine(uint32_t crc_a, uint32_t crc_b, uint64_t len_b);

// PATH as `loom ckpt` takes it: a checkpoint directory (holding manifest.pb), a directory of
// step-* checkpoints (the newest is taken) or a run directory (its checkpoints/).
StatusOr<std::string> ResolveCheckpointPath(const std::string& path);

// ---------------------------------------------------------------------------------------------
// Reading.

struct GlobalTensor {
  std::string name;  // "dense/<p>", "dense_opt/<p>/<slot>", "embedding/<table>/<slot>"
  proto::TensorEntry::Kind kind = proto::TensorEntry::DENSE_PARAMETER;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;  // global shape
  std::string parameter;       // the dense parameter or the table
  std::string slot;            // "" for dense parameters; "weight" or the state slot for tables
  bool per_row = false;        // an embedding state slot with one element per row
  int table = -1;              // embedding tensors: index into manifest.tables()
  std::vector<int> entries;    // the manifest.tensors() holding its pieces
  int64_t rows() const { return shape.empty() ? 1 : shape[0]; }
  int64_t row_elements() const;  // product of shape[1..]
  int64_t row_bytes() const { return row_elements() * DTypeSize(dtype); }
  int64_t bytes() const { return rows() * row_bytes(); }
};

// Rows of one tensor, front to back.
class RowSource {
 public:
  virtual ~RowSource() = default;
  // Puts the next min(max_rows, rows left) rows (max_rows >= 1; full rows, row-major, the
  // tensor's dtype) into *out and returns how many; 0 once every row was returned (and, for a
  // checkpoint, every piece's CRC checked).
  virtual StatusOr<int64_t> Next(int64_t max_rows, std::vector<char>* out) = 0;
};

class CheckpointSource {
 public:
  // Reads the manifest (CRC-checked), checks that every file exists with its recorded size
  // and every tensor lies inside its file (VerifyCheckpoint without checksums: a missing or
  // truncated file is reported here, by name), and that the pieces of every table tile it
  // exactly. `path` is resolved by ResolveCheckpointPath.
  static StatusOr<std::unique_ptr<CheckpointSource>> Open(const std::string& path);
  ~CheckpointSource();
  CheckpointSource(const CheckpointSource&) = delete;
  CheckpointSource& operator=(const CheckpointSource&) = delete;

  const std::string& path() const { return path_; }
  const proto::CheckpointManifest& manifest() const { return manifest_; }
  // Dense parameters, dense optimizer state (manifest order), then every table's weight and
  // state slots (table order, slots in stored order).
  const std::vector<GlobalTensor>& tensors() const { return tensors_; }
  const GlobalTensor* Find(const std::string& name) const;  // nullptr if absent

  // A streaming reader of `t` (one of tensors()).
  StatusOr<std::unique_ptr<RowSource>> Stream(const GlobalTensor& t) const;
  // The whole tensor in memory (small tensors and tests).
  StatusOr<std::vector<char>> ReadAll(const GlobalTensor& t) const;

 private:
  CheckpointSource() = default;
  struct Files;
  std::string path_;
  proto::CheckpointManifest manifest_;
  std::vector<GlobalTensor> tensors_;
  std::unique_ptr<Files> files_;
  friend class CheckpointRowSource;
};

// ---------------------------------------------------------------------------------------------
// Progress of a long conversion (the CLI prints it; the library never prints).

struct ConvertProgress {
  std::string stage;     // "reshard", "merge", "export", "import", "diff"
  std::string tensor;    // the global tensor in progress
  int tensors_done = 0;  // finished global tensors
  int tensors_total = 0;
  int tables_done = 0;  // finished embedding tables (all their slots)
  int tables_total = 0;
  int64_t bytes_done = 0;  // bytes of global tensors processed so far
  int64_t bytes_total = 0;
  double seconds = 0;            // since the start
  bool tensor_finished = false;  // this call reports the end of `tensor`
};
using ProgressFn = std::function<void(const ConvertProgress&)>;

// ---------------------------------------------------------------------------------------------
// Resharding and merging.

// What happens to the training-data reader positions when the world size changes. The
// trainer reads its data as S slices (S = R for `loom train`; TrainerOptions::data_slices),
// each with an exact position. At the same world size the positions are kept as they are.
// Otherwise rank r of M needs the positions of slices r of M, which no N-rank run recorded:
//   kRestartEpoch  every new slice starts at the beginning of the current epoch
//                  (TrainerState.epoch): the samples already seen in this epoch are seen again;
//                  exact when the checkpoint was taken at an epoch boundary.
//   kNextEpoch     every new slice starts at the beginning of the next epoch (epoch + 1, and
//                  TrainerState.epoch advances): the rest of the current epoch is skipped.
// In both cases, when S is a multiple of M the S exact positions are kept too (rank r lists
// slices [r S/M, (r+1) S/M) of S), so a trainer reading S slices resumes exactly. Step,
// samples_seen, the LR schedule, the optimizer state and the RNG are never changed.
enum class PositionPolicy { kRestartEpoch, kNextEpoch };

struct ReshardOptions {
  int world_size = 1;  // M
  // The target plan: sharding_overrides of this message replace the checkpoint's config's
  // (an empty list = the planner's own choice for every table); its data_parallel_max_bytes
  // and per_rank_memory_budget_bytes replace the config's when set. Without it the config's
  // overrides are kept. The target plan is then exactly what `loom train` plans at M ranks
  // (PlanSharding on the embedding config), and the new manifest's config_text carries the
  // replaced fields, so the config to resume with can be read back from it.
  bool has_plan = false;
  proto::EmbeddingConfig plan;
  PositionPolicy positions = PositionPolicy::kRestartEpoch;
  int64_t block_bytes = kDefaultBlockBytes;  // rows per block: block_bytes / row bytes (>= 1)
  bool overwrite = false;                    // replace an existing <out>/step-<step>
  std::string producer = "loom ckpt";        // appended to the manifest's producer
  ProgressFn progress;
};

struct ConvertResult {
  std::string path;                // the committed checkpoint directory
  int64_t bytes_written = 0;       // data files, manifest excluded
  std::string plan;                // the target plan (ShardingPlan::ToString), for people
  std::vector<std::string> notes;  // what the caller should know (reader positions, config)
};

// The target plan and the new config of a reshard, without writing anything.
StatusOr<embedding::ShardingPlan> PlanReshard(const proto::CheckpointManifest& manifest,
                                              const ReshardOptions& options,
                                              proto::LoomConfig* new_config);

// Rewrites the checkpoint at `source` (any world size N, any plan) for options.world_size
// ranks and the target plan into <out_dir>/step-<step>/. Every global tensor keeps its exact
// bytes (bit-identical), every piece and file gets new CRCs; the manifest gets the new world
// size, tables' plans, rank states (reader positions per PositionPolicy) and producer.
StatusOr<ConvertResult> Reshard(const std::string& source, const std::string& out_dir,
                                const ReshardOptions& options);

// A single-rank checkpoint: Reshard to world size 1 with the planner's own plan (the config's
// overrides dropped, since they may name other ranks) unless options.has_plan.
StatusOr<ConvertResult> Merge(const std::string& source, const std::string& out_dir,
                              ReshardOptions options);

// ---------------------------------------------------------------------------------------------
// Diff.

struct TensorDiff {
  std::string name;            // the global tensor name
  std::vector<int64_t> shape;  // A's shape
  bool in_a = true, in_b = true;
  bool comparable = true;  // same shape and dtype, present in both
  std::string note;        // why not comparable
  int64_t numel = 0;
  int64_t num_different = 0;  // elements whose bits differ
  double max_abs_diff = 0;    // max |a - b| (in double)
  double cosine = 1;          // a.b / (|a| |b|); 1 when both are zero, 0 when one is
  bool identical() const { return comparable && num_different == 0; }
};

struct DiffOptions {
  bool optimizer_state = true;  // also compare dense_opt/* and embedding state slots
  int64_t block_bytes = kDefaultBlockBytes;
  ProgressFn progress;
};

// Compares every global tensor of two checkpoints (any world sizes and plans), streaming
// both side by side. Tensors present in one only are listed with in_a / in_b.
StatusOr<std::vector<TensorDiff>> DiffCheckpoints(const std::string& a, const std::string& b,
                                                  const DiffOptions& options);

// ---------------------------------------------------------------------------------------------
// Import.

struct ImportOptions {
  // Tensors of the checkpoint that the file lacks keep the template's values (otherwise an
  // error listing them).
  bool allow_missing = false;
  // Tensors of the file that the checkpoint lacks are ignored (otherwise an error).
  bool ignore_unknown = false;
  // Start training afresh from the imported weights: dense and embedding optimizer state
  // zeroed (Adagrad accumulators set to the table's initial_accumulator_value), dense
  // optimizer scalars and trainer counters reset, step 0, reader positions at epoch 0.
  bool reset_training_state = false;
  int64_t block_bytes = kDefaultBlockBytes;
  bool overwrite = false;
  ProgressFn progress;
};

// Writes <out_dir>/step-<step>/: the checkpoint `template_checkpoint` (its world size, plan,
// optimizer state, counters) with the weights of the safetensors file `weights` (names as
// export writes them, docs/checkpoint-format.md: "<parameter>" for dense parameters,
// "embedding.<table>.weight", or the int8 triple "embedding.<table>.weight_int8 /
// weight_scale / weight_bias", dequantized). F32, F64, BF16 and F16 values are converted to
// the checkpoint's f32 (F64 rounds to nearest). Shapes must match exactly.
StatusOr<ConvertResult> ImportSafetensors(const std::string& weights,
                                          const std::string& template_checkpoint,
                                          const std::string& out_dir, const ImportOptions& options);

}  // namespace loom::train

#endif  // LOOM_TRAIN_CKPT_CONVERT_H_
