// Trainer: the distributed training loop of `loom train` (docs/training.md).
//
// Every rank runs the same program on its own slice of the training data (csrc/data/reader.h).
// One step, with B local samples (the last batch of an epoch may be shorter):
//   1. agree      one small all-reduce: does every rank have a batch, and the global sample
//                 count G of this step. If one rank has run out, the epoch ends on every rank
//                 (slices differ by at most one row, so at most one short batch is dropped).
//   2. embedding  EmbeddingCollection::Forward (model parallel, all-to-all).
//   3. dense      DenseModel Forward, mean BCE loss, Backward with grad_scale = B / G, so the
//                 sum over ranks of the parameter gradients is the gradient of the global mean
//                 loss over the G samples (whatever B each rank had).
//   4. overlap    the dense gradients (one flat buffer, cut into chunks of grad_bucket_bytes,
//                 one all-reduce bucket each) are handed to comm::GradientBucketer chunk by
//                 chunk DURING the dense backward: the model reports each module's gradient
//                 range as final (DenseModel::SetGradsFinalCallback) and a chunk is marked
//                 ready once all its elements are, so the non-blocking all-reduces progress
//                 while the rest of the dense backward runs and while
//   5. embedding  EmbeddingCollection::Backward sends the embedding gradients to their owners
//                 and applies the fused sparse optimizers (learning rates scaled by the dense
//                 schedule's factor lr_t / lr, so warm-up and decay apply to both);
//   6. optimizer  GradientBucketer::Wait, then DenseOptimizer::Step (identical on every rank).
// The loss reported is the global mean over the G samples (an all-reduce per progress line).
//
// Around the steps: evaluation on the eval split every eval_every_steps (or at every epoch end
// when 0) and at the end, with exact global metrics (metrics.h); rank 0 appends one JSON object
// per evaluation to <run_dir>/metrics.jsonl and logs progress lines (step, loss, samples/s,
// ETA) every log_every_steps; early stopping on the watched metric; the reduce-on-plateau
// schedule observes the same metric; checkpoints every checkpoint.every_steps and at the end
// (checkpoint.h), and resume at start (checkpoint.resume).
//
// Determinism: the same config, seed and world size give bit-identical weights, losses and
// metrics; a run resumed from a checkpoint continues bit-identically (the checkpoint holds
// every tensor, the optimizer scalars, the reader positions and the trainer's counters; the
// random streams are counter-based). Across world sizes at the same global batch, embedding
// updates and per-sample forward values are computed in the same order; only the dense
// gradient sums are rounded differently (docs/training.md §Equivalence).
//
// Backends: the CPU device with the MPI communicator (the embedding collection runs end to end
// on the CPU only so far); DEVICE_CUDA is refused at Create with Unimplemented.
#ifndef LOOM_TRAIN_TRAINER_H_
#define LOOM_TRAIN_TRAINER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "csrc/comm/communicator.h"
#include "csrc/comm/gradient_bucketer.h"
#include "csrc/core/status.h"
#include "csrc/core/tensor.h"
#include "csrc/data/batch.h"
#include "csrc/data/reader.h"
#include "csrc/embedding/embedding_collection.h"
#include "csrc/optim/dense_optimizer.h"
#include "csrc/proto/checkpoint.pb.h"
#include "csrc/proto/config.pb.h"
#include "csrc/train/checkpoint.h"
#include "csrc/train/dense_model.h"
#include "csrc/train/input_adapter.h"
#include "csrc/train/metrics.h"

namespace loom::train {

struct TrainerOptions {
  // Size of one gradient all-reduce bucket (bytes, > 0).
  int64_t grad_bucket_bytes = 4 << 20;
  // Write the effective config, metrics.jsonl and train_log.jsonl into the run directory
  // (rank 0). Tests that only need numbers may turn it off.
  bool write_run_files = true;
  // S, the number of data slices the training data is read in (0 = R): rank r reads slices
  // [r S/R, (r+1) S/R) (each is the reader slice "rank s of S", csrc/data/reader.h) and
  // concatenates B / (S/R) rows of each into its local batch, in slice order. With the same S
  // and global batch, every world size R dividing S sees the same global batches, sample for
  // sample (the basis of world-size equivalence, docs/training.md). S must be a multiple of
  // R, and B a multiple of S/R.
  int data_slices = 0;
  // "loom_train --config a.pbtxt ..." for the checkpoint manifest's producer field.
  std::string producer = "loom_train";
};

struct TrainSummary {
  int64_t step = 0;          // optimizer steps completed (including resumed ones)
  int64_t epoch = 0;         // epochs completed
  int64_t samples_seen = 0;  // global training samples
  bool stopped_early = false;
  std::string resumed_from;  // checkpoint path, or empty
  std::string last_checkpoint;
  std::optional<EvalMetrics> final_metrics;  // the last evaluation, if any
  double train_seconds = 0;                  // wall time in training steps (this process's run)
  double samples_per_sec = 0;                // global training throughput of this process's run
};

class Trainer {
 public:
  // Collective: every rank of `comm` (an MPI communicator; it must outlive the trainer) calls
  // it with the same config. Validates the config against the data schema and the model,
  // opens the readers, plans and allocates embeddings, model and optimizers. Errors name the
  // file or field at fault; every rank returns an error if one rank failed.
  static StatusOr<std::unique_ptr<Trainer>> Create(const proto::LoomConfig& config,
                                                   comm::Communicator* comm,
                                                   const TrainerOptions& options = {});
  ~Trainer();

  // Collective. Resumes per train.checkpoint.resume, trains until a limit or early stopping,
  // evaluates and checkpoints as configured.
  StatusOr<TrainSummary> Run();

  // ---- Building blocks (tests). All collective. ----
  // Restores per train.checkpoint.resume; returns the checkpoint path or "" (fresh start).
  StatusOr<std::string> Resume();
  // Runs one step. Returns false (and runs nothing) at the end of an epoch.
  bool Step();
  // One evaluation pass over the eval split (InvalidArgument without eval files).
  StatusOr<EvalMetrics> Evaluate();
  StatusOr<std::string> SaveCheckpoint();
  // The global mean training loss over the steps since the last call (NaN if none).
  double TakeMeanLoss();

  int64_t step() const { return step_; }
  int64_t epoch() const { return epoch_; }
  int64_t local_batch_size() const { return batch_size_; }
  // Steps per epoch (every rank takes this many full-or-short batches), and the planned total
  // (min of max_steps and epochs * steps_per_epoch; 0 when unbounded).
  int64_t steps_per_epoch() const { return steps_per_epoch_; }
  int64_t total_steps() const { return total_steps_; }
  // Its Backward reports final gradient ranges to this trainer's bucketer: call Forward /
  // evaluation only; Backward belongs to Step.
  DenseModel& model() { return *model_; }
  embedding::EmbeddingCollection& embeddings() { return *embeddings_; }
  optim::DenseOptimizer& optimizer() { return *optimizer_; }
  const proto::LoomConfig& config() const { return config_; }
  // FNV-1a 64 of the shape-determining config (model type, model section, tables' names,
  // rows, dims and optimizer types, features): what a checkpoint must match to be resumed.
  uint64_t model_hash() const { return model_hash_; }

 private:
  Trainer() = default;
  // Create's local part (no collective) and collective part.
  Status Init(const proto::LoomConfig& config, comm::Communicator* comm,
              const TrainerOptions& options);
  Status InitCollective();
  void RunStep(const data::Batch& batch, int64_t global_samples);
  // The dense model's gradient-final callback: counts the range's elements per chunk and marks
  // every chunk that became complete ready in the bucketer.
  void OnGradsFinal(int64_t begin, int64_t end);
  TrainingState MakeTrainingState();
  // Observes an evaluation for early stopping and the plateau schedule; returns true when
  // training should stop.
  bool ObserveEval(const EvalMetrics& m);
  Status LogEval(const EvalMetrics& m, double samples_per_sec, double train_loss);

  proto::LoomConfig config_;
  TrainerOptions options_;
  comm::Communicator* comm_ = nullptr;
  int rank_ = 0, world_ = 1;
  int64_t batch_size_ = 0, eval_batch_size_ = 0;
  std::string run_dir_;

  std::vector<std::unique_ptr<data::Reader>> train_readers_;  // this rank's slices, in order
  std::unique_ptr<data::Reader> eval_reader_;
  int num_slices_ = 1, first_slice_ = 0;
  int64_t slice_batch_size_ = 0;  // rows per slice per step
  proto::ReaderPosition eval_start_;
  proto::DataSchema schema_;
  std::optional<InputAdapter> adapter_;
  std::unique_ptr<embedding::EmbeddingCollection> embeddings_;
  std::unique_ptr<DenseModel> model_;
  std::unique_ptr<optim::DenseOptimizer> optimizer_;
  std::unique_ptr<comm::GradientBucketer> bucketer_;
  int num_grad_chunks_ = 0;
  int64_t grad_chunk_elems_ = 1;  // elements per chunk (the last one may be shorter)
  // Per step: elements of each chunk not yet reported final, and the ranges reported (checked
  // to tile the gradient buffer exactly once at the end of the dense backward).
  std::vector<int64_t> chunk_pending_;
  std::vector<std::pair<int64_t, int64_t>> final_ranges_;
  std::unique_ptr<Checkpointer> checkpointer_;
  uint64_t model_hash_ = 0;
  uint64_t dropout_seed_ = 0;

  // Step buffers.
  data::Batch batch_, eval_batch_, empty_batch_;
  std::vector<data::Batch> slice_batches_;
  std::vector<char> ended_;  // per slice: Next returned false in this step
  embedding::EmbeddingBatch emb_batch_;
  Tensor logits_, loss_, grad_logits_;
  std::vector<float> predictions_;
  EvalBuffer eval_buffer_;

  // Counters (checkpointed through proto::TrainerState).
  int64_t step_ = 0;
  int64_t epoch_ = 0;
  int64_t samples_seen_ = 0;
  int64_t evaluations_ = 0;
  double best_metric_ = 0;
  int64_t best_step_ = -1;
  int evals_without_improvement_ = 0;
  bool stopped_early_ = false;
  int64_t last_eval_step_ = -1;
  double elapsed_train_seconds_ = 0;
  int64_t steps_per_epoch_ = 0, total_steps_ = 0;

  // Loss accumulators (local sums of loss * B, and global samples), per progress window and
  // per evaluation window.
  double window_loss_sum_ = 0, eval_loss_sum_ = 0;
  int64_t window_samples_ = 0, eval_samples_ = 0;
};

// Collective: OK on every rank when `local` is OK on every rank; otherwise the failing ranks
// return their own error and the others "rank <k> failed" for the lowest failing rank k.
Status AgreeOnStatus(comm::Communicator* comm, const Status& local);

// The model hash of a config (see Trainer::model_hash).
uint64_t ModelHash(const proto::LoomConfig& config);

}  // namespace loom::train

#endif  // LOOM_TRAIN_TRAINER_H_
