// Checkpoints: sharded, checksummed, atomically committed snapshots of the whole training
// state (docs/checkpoint-format.md describes the files; csrc/proto/checkpoint.proto the
// manifest).
//
// Layout: <checkpoint dir>/step-<step, 12 digits>/ with manifest.pb, manifest.crc32c,
// dense.bin (rank 0) and embedding-r<rank, 5 digits>.bin (each rank owning shards).
//
// Save (collective, Checkpointer::Save):
//   1. rank 0 removes a stale ".tmp-step-<step>" left by a crashed save of the same step and
//      creates it afresh; barrier;
//   2. every rank writes its data file into it (tensors end to end, 64-byte aligned, CRC-32C
//      per tensor and per file) and fsyncs it;
//   3. the ranks' partial manifests (their tensors, file, reader position) are all-gathered;
//      rank 0 writes manifest.pb and manifest.crc32c, fsyncs them and the directory, then
//      renames ".tmp-step-<step>" to "step-<step>" (the commit: before it the checkpoint does
//      not exist, after it it is complete), fsyncs the parent directory;
//   4. rank 0 deletes the oldest complete checkpoints beyond keep_last (never the new one) and
//      any other ".tmp-*" directory (crashed saves); barrier.
// A process killed at any point before the rename leaves only a ".tmp-*" directory, which no
// reader considers; the previous checkpoints are never touched before the new one is committed.
//
// Restore (collective, Checkpointer::RestoreLatest): candidates are the "step-*" directories,
// newest first. For each: rank 0 reads and checks the manifest (CRC, parse, compatibility:
// world size, model hash) and broadcasts it; every rank reads the files it needs (dense.bin and
// its own embedding file) completely into memory, checking sizes and CRCs of files and
// tensors and the shapes against the live tensors; the ranks agree; only then is any state
// overwritten. A damaged candidate (checksum, truncation, missing file) is reported by name and
// the next older one is tried; an incompatible one (other world size or model) is an error.
//
// Offline functions (no communicator; what `loom ckpt` uses) read and verify checkpoints,
// and name the file and what is wrong: "step-000000000100/embedding-r00001.bin: size 1024,
// the manifest says 2048 (truncated?)", "...: CRC-32C 1a2b3c4d, the manifest says 5e6f7a8b".
#ifndef LOOM_TRAIN_CHECKPOINT_H_
#define LOOM_TRAIN_CHECKPOINT_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "csrc/comm/communicator.h"
#include "csrc/core/status.h"
#include "csrc/core/tensor.h"
#include "csrc/embedding/embedding_collection.h"
#include "csrc/model/parameter.h"
#include "csrc/optim/dense_optimizer.h"
#include "csrc/proto/checkpoint.pb.h"
#include "csrc/proto/data.pb.h"

namespace loom::train {

inline constexpr char kManifestFileName[] = "manifest.pb";
inline constexpr char kManifestCrcFileName[] = "manifest.crc32c";
inline constexpr char kDenseFileName[] = "dense.bin";
inline constexpr int kCheckpointFormatVersion = 1;
inline constexpr int64_t kTensorAlignment = 64;

// "step-000000000100".
std::string CheckpointDirName(int64_t step);
// "embedding-r00001.bin".
std::string EmbeddingFileName(int rank);
// FNV-1a 64 (offset basis 0xcbf29ce484222325, prime 0x100000001b3) of the bytes.
uint64_t Fnv1a64(const std::string& bytes);

// ---------------------------------------------------------------------------------------------
// Offline access.

struct CheckpointRef {
  int64_t step = 0;
  std::string path;  // <dir>/step-<step>
};

// The committed checkpoints ("step-<digits>" directories) under `dir`, newest (highest step)
// first. A missing `dir` gives an empty list; other I/O errors are errors.
StatusOr<std::vector<CheckpointRef>> ListCheckpoints(const std::string& dir);

// Reads manifest.pb, checks it against manifest.crc32c and parses it. DataLoss / NotFound
// name the file and the fault.
StatusOr<proto::CheckpointManifest> ReadManifest(const std::string& checkpoint_path);

// Checks that every file of the manifest exists with its recorded size and, when
// `checksums`, that the CRC-32C of every file and every tensor matches. Every problem found
// is reported (joined by "; "), each naming the file (and tensor).
Status VerifyCheckpoint(const std::string& checkpoint_path,
                        const proto::CheckpointManifest& manifest, bool checksums);

// The bytes of one tensor (size and CRC checked). For tools.
StatusOr<std::vector<char>> ReadTensorBytes(const std::string& checkpoint_path,
                                            const proto::TensorEntry& entry);

// DType <-> TensorDType.
proto::TensorDType ToTensorDType(DType dtype);
DType FromTensorDType(proto::TensorDType dtype);

// ---------------------------------------------------------------------------------------------
// Distributed save and restore.

// What a checkpoint captures, given as pointers to the live objects (owned by the trainer).
struct TrainingState {
  model::ParameterStore* parameters = nullptr;  // dense parameters (host)
  optim::DenseOptimizer* optimizer = nullptr;   // dense optimizer (state tensors + scalars)
  embedding::EmbeddingCollection* embeddings = nullptr;
  // Manifest fields set by the trainer: step, model_type, config_text, config_hash,
  // model_hash, trainer, rng, data_schema. Save fills in the rest.
  proto::CheckpointManifest header;
  // The positions of the data slices this rank reads (Save records them). Restore fills in,
  // for each slice listed here (by DataSlicePosition.slice and num_slices), the saved
  // position of that slice, whichever rank read it; a slice the checkpoint lacks is an error.
  std::vector<proto::DataSlicePosition> data_positions;
};

struct CheckpointerOptions {
  std::string dir;    // the checkpoint directory (created by Save when missing)
  int keep_last = 3;  // 0 = keep all
  std::string producer = "loom_train";
};

class Checkpointer {
 public:
  // comm: a host (MPI) communicator, shared with the caller; every rank constructs one.
  Checkpointer(comm::Communicator* comm, CheckpointerOptions options);

  // Collective. Writes the checkpoint of `state` at state.header.step and returns its path.
  // Errors (I/O) are agreed on: every rank returns an error if any rank failed.
  StatusOr<std::string> Save(const TrainingState& state);

  // Collective. Restores the newest valid checkpoint into `state` (tensors, optimizer state,
  // state->header with the saved trainer/rng fields, state->reader_position for this rank)
  // and returns its path; NotFound when there is no checkpoint at all, DataLoss when every one
  // is damaged (the message lists why each was skipped). Incompatible checkpoints are errors
  // (FailedPrecondition naming the field). `expected_model_hash`: refuse a checkpoint of
  // another model (0 = do not check).
  StatusOr<std::string> RestoreLatest(TrainingState* state, uint64_t expected_model_hash);

  // Collective. Restores the checkpoint at `path` (same checks; no fallback).
  Status Restore(const std::string& path, TrainingState* state, uint64_t expected_model_hash);

  const CheckpointerOptions& options() const { return options_; }

 private:
  struct Loaded;
  // Rank 0 reads/checks the manifest; the result is shared with every rank.
  StatusOr<proto::CheckpointManifest> ShareManifest(const std::string& path,
                                                    uint64_t expected_model_hash,
                                                    bool* incompatible);
  Status ReadAndCheck(const std::string& path, const proto::CheckpointManifest& manifest,
                      const TrainingState& state, Loaded* loaded);
  Status Apply(const proto::CheckpointManifest& manifest, Loaded* loaded, TrainingState* state);
  Status AgreeOnStatus(const Status& local);

  comm::Communicator* comm_;
  CheckpointerOptions options_;
};

// Test hook: when the environment variable LOOM_FAULT_INJECT is "<point>:step=<s>:rank=<r>"
// and (point, step, rank) match, the process kills itself with SIGKILL (as a crash would).
// Points: "checkpoint_write" (halfway through writing the rank's data file),
// "checkpoint_commit" (rank 0, after the manifest is written, before the rename).
void MaybeInjectFault(const char* point, int64_t step, int rank);

}  // namespace loom::train

#endif  // LOOM_TRAIN_CHECKPOINT_H_
