#include "csrc/train/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <limits>
#include <utility>

#include <omp.h>

#include "csrc/core/logging.h"
#include "csrc/proto/config_io.h"
#include "csrc/train/run_log.h"

namespace loom::train {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

bool HigherIsBetter(proto::EarlyStoppingConfig::Metric m) {
  return m == proto::EarlyStoppingConfig::METRIC_AUC ||
         m == proto::EarlyStoppingConfig::METRIC_GAUC;
}

double MetricValue(const EvalMetrics& m, proto::EarlyStoppingConfig::Metric which) {
  switch (which) {
    case proto::EarlyStoppingConfig::METRIC_AUC:
      return m.auc;
    case proto::EarlyStoppingConfig::METRIC_GAUC:
      return m.gauc;
    case proto::EarlyStoppingConfig::METRIC_LOGLOSS:
      return m.logloss;
    case proto::EarlyStoppingConfig::METRIC_NE:
      return m.ne;
  }
  return m.auc;
}

// Steps one rank takes through `rows` rows.
int64_t Batches(int64_t rows, int64_t batch, bool drop_remainder) {
  return drop_remainder ? rows / batch : (rows + batch - 1) / batch;
}

}  // namespace

uint64_t ModelHash(const proto::LoomConfig& config) {
  // The architecture enters as its name (as before the field existed, so a config that spells
  // out the default hashes like one that does not).
  proto::ModelConfig model = config.model();
  model.clear_architecture();
  std::string text = "model_type=" + ModelTypeName(config.model()) + "\n" + config::ToText(model);
  for (const auto& t : config.embedding().tables()) {
    text += "table " + t.name() + " " + std::to_string(t.num_rows()) + " " +
            std::to_string(t.dim()) + " " + std::to_string(static_cast<int>(t.optimizer().type())) +
            "\n";
  }
  for (const auto& f : config.embedding().features()) {
    text += "feature " + f.name() + " " + std::to_string(static_cast<int>(f.kind())) + " " +
            f.table() + " " + std::to_string(f.max_length()) + "\n";
  }
  return Fnv1a64(text);
}

Trainer::~Trainer() = default;

StatusOr<std::unique_ptr<Trainer>> Trainer::Create(const proto::LoomConfig& config,
                                                   comm::Communicator* comm,
                                                   const TrainerOptions& options) {
  std::unique_ptr<Trainer> t(new Trainer());
  // Local setup first (files, shapes, allocations), agreed on before the collective part, so
  // a rank that failed never leaves the others waiting in a collective.
  LOOM_RETURN_IF_ERROR(AgreeOnStatus(comm, t->Init(config, comm, options)));
  LOOM_RETURN_IF_ERROR(AgreeOnStatus(comm, t->InitCollective()));
  return t;
}

Status AgreeOnStatus(comm::Communicator* comm, const Status& local) {
  const int world = comm->size();
  int64_t mark = local.ok() ? 0 : world - comm->rank();  // the max names the lowest failing rank
  comm->AllReduce(&mark, &mark, 1, DType::kI64, comm::ReduceOp::kMax);
  if (!local.ok()) return local;
  if (mark == 0) return Status::Ok();
  return Status(StatusCode::kInternal,
                "rank " + std::to_string(world - mark) + " failed (its log says why)");
}

Status Trainer::Init(const proto::LoomConfig& config, comm::Communicator* comm,
                     const TrainerOptions& options) {
  config_ = config;
  options_ = options;
  comm_ = comm;
  rank_ = comm->rank();
  world_ = comm->size();
  const proto::TrainConfig& train = config_.train();
  if (!comm->device().is_cpu()) {
    return UnimplementedError("the trainer needs a host (MPI) communicator, got " +
                              comm->backend());
  }
  if (train.device() != proto::TrainConfig::DEVICE_CPU) {
    return UnimplementedError(
        "train.device: the trainer runs on DEVICE_CPU only so far (the embedding collection "
        "runs end to end on the CPU only), got " +
        proto::TrainConfig::Device_Name(train.device()));
  }
  if (options.grad_bucket_bytes <= 0) {
    return InvalidArgumentError("grad_bucket_bytes must be > 0");
  }
  if (train.num_threads() > 0) omp_set_num_threads(train.num_threads());
  LOOM_ASSIGN_OR_RETURN(batch_size_, config::ResolveLocalBatchSize(train, world_));
  eval_batch_size_ =
      train.eval_local_batch_size() > 0 ? train.eval_local_batch_size() : batch_size_;
  run_dir_ = train.run_dir();

  // Data.
  const proto::DataConfig& dc = config_.data();
  if (dc.train_files_size() == 0) {
    return InvalidArgumentError("data.train_files: required (the training shard files)");
  }
  LOOM_ASSIGN_OR_RETURN(auto train_files, data::ExpandFilePatterns(
                                              {dc.train_files().begin(), dc.train_files().end()}));
  proto::DataSchema expected;
  const proto::DataSchema* expected_ptr = nullptr;
  if (!dc.schema_file().empty()) {
    LOOM_ASSIGN_OR_RETURN(expected,
                          config::ParseTextProtoFile<proto::DataSchema>(dc.schema_file()));
    expected_ptr = &expected;
  }
  const data::ReaderOptions ropts = data::ReaderOptions::FromConfig(dc.reader());
  num_slices_ = options.data_slices > 0 ? options.data_slices : world_;
  if (num_slices_ % world_ != 0) {
    return InvalidArgumentError("data slices: " + std::to_string(num_slices_) +
                                " is not a multiple of the world size " + std::to_string(world_));
  }
  const int per_rank = num_slices_ / world_;
  if (batch_size_ % per_rank != 0) {
    return InvalidArgumentError("train: the local batch " + std::to_string(batch_size_) +
                                " is not a multiple of the " + std::to_string(per_rank) +
                                " data slices each rank reads");
  }
  slice_batch_size_ = batch_size_ / per_rank;
  first_slice_ = rank_ * per_rank;
  for (int i = 0; i < per_rank; ++i) {
    LOOM_ASSIGN_OR_RETURN(auto reader, data::Reader::Open(train_files, expected_ptr,
                                                          first_slice_ + i, num_slices_, ropts));
    if (i == 0) {
      schema_ = reader->schema();
      expected_ptr = &schema_;
    }
    train_readers_.push_back(std::move(reader));
  }
  slice_batches_.resize(per_rank);
  if (dc.eval_files_size() > 0) {
    LOOM_ASSIGN_OR_RETURN(auto eval_files, data::ExpandFilePatterns(
                                               {dc.eval_files().begin(), dc.eval_files().end()}));
    LOOM_ASSIGN_OR_RETURN(eval_reader_,
                          data::Reader::Open(eval_files, &schema_, rank_, world_, ropts.ForEval()));
    eval_start_ = eval_reader_->Position();
  }
  steps_per_epoch_ = std::numeric_limits<int64_t>::max();
  for (int s = 0; s < num_slices_; ++s) {
    steps_per_epoch_ = std::min(steps_per_epoch_, Batches(train_readers_[0]->SliceRows(s),
                                                          slice_batch_size_, ropts.drop_remainder));
  }
  if (steps_per_epoch_ <= 0) {
    return InvalidArgumentError("data.train_files: data slices of " +
                                std::to_string(train_readers_[0]->SliceRows(0)) +
                                " rows give no batch of " + std::to_string(slice_batch_size_) +
                                " samples (fewer rows "
                                "than slices, or drop_remainder with slices shorter than a batch)");
  }
  total_steps_ = 0;
  if (train.epochs() > 0) total_steps_ = train.epochs() * steps_per_epoch_;
  if (train.max_steps() > 0) {
    total_steps_ = total_steps_ > 0 ? std::min(total_steps_, train.max_steps()) : train.max_steps();
  }

  // Inputs, embeddings, model, optimizer.
  const int64_t max_batch = std::max(batch_size_, eval_batch_size_);
  LOOM_ASSIGN_OR_RETURN(InputAdapter adapter,
                        InputAdapter::Create(config_, schema_, max_batch,
                                             ModelTypeName(config_.model()) == kModelDlrmBaseline));
  adapter_.emplace(std::move(adapter));
  embedding::CollectionOptions copts;
  copts.batch_size = max_batch;
  copts.num_threads = train.num_threads();
  copts.log_plan = true;
  LOOM_ASSIGN_OR_RETURN(embeddings_,
                        embedding::EmbeddingCollection::Create(config_.embedding(), comm, copts));
  LOOM_ASSIGN_OR_RETURN(model_, CreateDenseModel(ModelTypeName(config_.model()), config_.model(),
                                                 max_batch, adapter_->seq_len(), Device::Cpu()));
  model_->Initialize(train.seed());
  std::vector<optim::DenseParam> params;
  for (model::Parameter& p : model_->parameters().parameters()) {
    // Weight decay applies to weight matrices, not to biases and norm gains (rank-1 tensors).
    params.push_back(optim::DenseParam{p.name, p.value, p.grad, p.shape.rank() >= 2});
  }
  LOOM_ASSIGN_OR_RETURN(optimizer_, optim::DenseOptimizer::Create(config_.optimizer(), params));

  CheckpointerOptions ck;
  ck.dir = config::CheckpointDir(train);
  ck.keep_last = train.checkpoint().keep_last();
  ck.producer = options.producer;
  checkpointer_ = std::make_unique<Checkpointer>(comm, ck);
  model_hash_ = ModelHash(config_);
  // Dropout masks: Philox keyed by (seed with the rank folded in, site, step).
  dropout_seed_ = train.seed() + static_cast<uint64_t>(rank_) * 0x9E3779B97F4A7C15ull;

  logits_ = Tensor::Zeros(Shape{max_batch}, DType::kF32);
  grad_logits_ = Tensor::Zeros(Shape{max_batch}, DType::kF32);
  loss_ = Tensor::Zeros(Shape{1}, DType::kF32);
  predictions_.resize(static_cast<size_t>(max_batch));
  InputAdapter::MakeEmptyBatch(schema_, &empty_batch_);
  best_metric_ = HigherIsBetter(train.early_stopping().metric())
                     ? -std::numeric_limits<double>::infinity()
                     : std::numeric_limits<double>::infinity();

  return Status::Ok();
}

Status Trainer::InitCollective() {
  // Gradient buckets: the flat gradient buffer cut into chunks of the bucket size, so each
  // bucket is one contiguous range (no packing copies).
  const int64_t total = model_->parameters().total_elements();
  const int64_t chunk = std::max<int64_t>(options_.grad_bucket_bytes / 4, 1);
  std::vector<comm::GradientBuffer> chunks;
  float* grads = model_->parameters().grads().data<float>();
  for (int64_t off = 0; off < total; off += chunk) {
    chunks.push_back(comm::GradientBuffer{grads + off, std::min(chunk, total - off)});
  }
  num_grad_chunks_ = static_cast<int>(chunks.size());
  grad_chunk_elems_ = chunk;
  if (num_grad_chunks_ > 0) {
    comm::GradientBucketerOptions bo;
    bo.bucket_bytes = options_.grad_bucket_bytes;
    bo.average = false;  // the loss gradient is already scaled by B / G
    LOOM_ASSIGN_OR_RETURN(bucketer_,
                          comm::GradientBucketer::Create(comm_, chunks, DType::kF32, bo));
    // Layer-wise overlap: the dense backward reports its final gradient ranges; a chunk's
    // all-reduce may start as soon as every element of it is final.
    chunk_pending_.assign(chunks.size(), 0);
    final_ranges_.reserve(model_->parameters().parameters().size() + 1);
    model_->SetGradsFinalCallback([this](int64_t begin, int64_t end) { OnGradsFinal(begin, end); });
  }
  LOOM_LOG_RANK0(INFO) << "trainer: " << model_->type() << " with "
                       << model_->parameters().total_elements() << " dense parameters ("
                       << num_grad_chunks_ << " all-reduce buckets), " << world_
                       << " ranks, B = " << batch_size_ << " (global " << batch_size_ * world_
                       << "), " << num_slices_ << " data slices, "
                       << train_readers_[0]->total_rows() << " training rows, " << steps_per_epoch_
                       << " steps per epoch"
                       << (eval_reader_
                               ? ", " + std::to_string(eval_reader_->total_rows()) + " eval rows"
                               : std::string(", no eval data"));
  return Status::Ok();
}

TrainingState Trainer::MakeTrainingState() {
  TrainingState s;
  s.parameters = &model_->parameters();
  s.optimizer = optimizer_.get();
  s.embeddings = embeddings_.get();
  proto::CheckpointManifest& h = s.header;
  h.set_step(step_);
  h.set_model_type(model_->type());
  const proto::LoomConfig effective = config::EffectiveConfig(config_);
  h.set_config_text(config::ToText(effective));
  h.set_config_hash(Fnv1a64(h.config_text()));
  h.set_model_hash(model_hash_);
  h.set_dense_parameter_count(model_->parameters().total_elements());
  *h.mutable_dense_optimizer() = optimizer_->SaveState();
  proto::TrainerState* ts = h.mutable_trainer();
  ts->set_step(step_);
  ts->set_epoch(epoch_);
  ts->set_samples_seen(samples_seen_);
  ts->set_evaluations(evaluations_);
  ts->set_best_metric(best_metric_);
  ts->set_best_step(best_step_);
  ts->set_evals_without_improvement(evals_without_improvement_);
  ts->set_stopped_early(stopped_early_);
  ts->set_last_eval_step(last_eval_step_);
  ts->set_elapsed_train_seconds(elapsed_train_seconds_);
  proto::RngState* rng = h.mutable_rng();
  rng->set_seed(config_.train().seed());
  rng->set_embedding_seed(config_.embedding().seed());
  rng->set_reader_seed(config_.data().reader().seed());
  rng->set_next_step(step_);
  *h.mutable_data_schema() = schema_;
  for (size_t i = 0; i < train_readers_.size(); ++i) {
    proto::DataSlicePosition p;
    p.set_slice(first_slice_ + static_cast<int>(i));
    p.set_num_slices(num_slices_);
    *p.mutable_position() = train_readers_[i]->Position();
    s.data_positions.push_back(p);
  }
  return s;
}

StatusOr<std::string> Trainer::SaveCheckpoint() {
  const auto t0 = Clock::now();
  TrainingState s = MakeTrainingState();
  LOOM_ASSIGN_OR_RETURN(std::string path, checkpointer_->Save(s));
  LOOM_LOG_RANK0(INFO) << "checkpoint " << path << " written in "
                       << FormatDuration(Seconds(t0, Clock::now()));
  return path;
}

StatusOr<std::string> Trainer::Resume() {
  const auto mode = config_.train().checkpoint().resume();
  if (mode == proto::CheckpointConfig::RESUME_NEVER) return std::string();
  TrainingState s = MakeTrainingState();
  auto restored = checkpointer_->RestoreLatest(&s, model_hash_);
  if (!restored.ok()) {
    if (restored.status().code() == StatusCode::kNotFound &&
        mode == proto::CheckpointConfig::RESUME_AUTO) {
      LOOM_LOG_RANK0(INFO) << "no checkpoint in " << checkpointer_->options().dir
                           << ": starting at step 0";
      return std::string();
    }
    return restored.status();
  }
  const proto::TrainerState& ts = s.header.trainer();
  step_ = ts.step();
  epoch_ = ts.epoch();
  samples_seen_ = ts.samples_seen();
  evaluations_ = ts.evaluations();
  best_metric_ = ts.best_metric();
  best_step_ = ts.best_step();
  evals_without_improvement_ = ts.evals_without_improvement();
  stopped_early_ = ts.stopped_early();
  last_eval_step_ = ts.last_eval_step();
  elapsed_train_seconds_ = ts.elapsed_train_seconds();
  Status seek;
  for (size_t i = 0; i < train_readers_.size() && seek.ok(); ++i) {
    seek = train_readers_[i]->Seek(s.data_positions[i].position());
  }
  int64_t failed = seek.ok() ? 0 : 1;
  comm_->AllReduce(&failed, &failed, 1, DType::kI64, comm::ReduceOp::kMax);
  if (!seek.ok()) return seek.WithContext(*restored + ": training reader position");
  if (failed) return InternalError(*restored + ": another rank could not restore its reader");
  LOOM_LOG_RANK0(INFO) << "resumed from " << *restored << " at step " << step_ << ", epoch "
                       << epoch_;
  return *restored;
}

void Trainer::RunStep(const data::Batch& batch, int64_t global_samples) {
  const ExecContext ctx = ExecContext::Cpu();
  const int64_t b = batch.size;
  adapter_->EmbeddingBatch(batch, &emb_batch_);
  const embedding::EmbeddingOutputs& out = embeddings_->Forward(emb_batch_);
  const model::DenseInputs in = adapter_->DenseInputs(batch, out);
  model_->SetTraining(true, dropout_seed_, static_cast<uint64_t>(step_));
  TensorView logits = logits_.view().Slice0(0, b);
  TensorView grad_logits = grad_logits_.view().Slice0(0, b);
  model_->Forward(ctx, in, logits);
  model_->parameters().ZeroGrad();
  model_->Loss(ctx, InputAdapter::Labels(batch), loss_.view(), grad_logits,
               static_cast<double>(b) / static_cast<double>(global_samples));
  // The dense backward marks each gradient chunk ready (OnGradsFinal) as soon as all of its
  // elements are final, so the chunks' all-reduces progress during the rest of the dense
  // backward and during the embedding backward.
  const int64_t total = model_->parameters().total_elements();
  for (int i = 0; i < num_grad_chunks_; ++i) {
    chunk_pending_[i] = std::min(grad_chunk_elems_, total - i * grad_chunk_elems_);
  }
  final_ranges_.clear();
  model_->Backward(ctx, grad_logits);
  if (bucketer_) {
    // Every element must have been reported exactly once: the ranges tile [0, total).
    std::sort(final_ranges_.begin(), final_ranges_.end());
    int64_t covered = 0;
    for (const auto& r : final_ranges_) {
      CHECK_EQ(r.first, covered) << "dense backward: gradient elements [" << covered << ", "
                                 << r.first << ") reported twice or never as final";
      covered = r.second;
    }
    CHECK_EQ(covered, total) << "dense backward: gradient elements [" << covered << ", " << total
                             << ") never reported as final";
    for (int i = 0; i < num_grad_chunks_; ++i) {
      CHECK_EQ(chunk_pending_[i], 0) << "gradient chunk " << i << " was never marked ready";
    }
  }
  const model::DenseInputGrads& g = model_->input_grads();
  embedding::EmbeddingGrads eg;
  if (config_.model().num_sparse_features() > 0) eg.pooled = g.sparse;
  for (const TensorView& s : g.seq) eg.sequences.push_back(s);
  const float lr_scale = static_cast<float>(optimizer_->LearningRate() / config_.optimizer().lr());
  embeddings_->Backward(eg, lr_scale);
  if (bucketer_) bucketer_->Wait();
  optimizer_->Step(ctx);
  const double local = static_cast<double>(loss_.data<float>()[0]) * static_cast<double>(b);
  window_loss_sum_ += local;
  eval_loss_sum_ += local;
}

void Trainer::OnGradsFinal(int64_t begin, int64_t end) {
  const int64_t total = model_->parameters().total_elements();
  CHECK(0 <= begin && begin < end && end <= total)
      << "dense backward reported the gradient range [" << begin << ", " << end << ") of " << total
      << " elements";
  final_ranges_.emplace_back(begin, end);
  for (int64_t i = begin / grad_chunk_elems_; i * grad_chunk_elems_ < end; ++i) {
    const int64_t lo = std::max(begin, i * grad_chunk_elems_);
    const int64_t hi = std::min(end, (i + 1) * grad_chunk_elems_);
    CHECK_LE(hi - lo, chunk_pending_[i])
        << "dense backward reported elements of gradient chunk " << i << " twice";
    chunk_pending_[i] -= hi - lo;
    if (chunk_pending_[i] == 0) bucketer_->MarkReady(static_cast<int>(i));
  }
}

bool Trainer::Step() {
  // Every slice of this rank must give rows; a reader error is fatal for the job.
  bool got = true, bad = false;
  ended_.assign(train_readers_.size(), 0);
  for (size_t i = 0; i < train_readers_.size(); ++i) {
    if (!train_readers_[i]->Next(&slice_batches_[i], slice_batch_size_)) {
      got = false;
      ended_[i] = 1;
      bad = bad || !train_readers_[i]->status().ok();
    }
  }
  const data::Batch* batch = &slice_batches_[0];
  if (got && slice_batches_.size() > 1) {
    std::vector<const data::Batch*> parts;
    for (const auto& b : slice_batches_) parts.push_back(&b);
    InputAdapter::ConcatBatches(parts, &batch_);
    batch = &batch_;
  }
  int64_t agree[3] = {got ? 1 : 0, got ? batch->size : 0, bad ? 1 : 0};
  comm_->AllReduce(agree, agree, 3, DType::kI64, comm::ReduceOp::kSum);
  for (const auto& r : train_readers_) {
    if (!r->status().ok()) LOG(FATAL) << "training data: " << r->status();
  }
  if (agree[2] > 0) LOG(FATAL) << "the training reader of another rank failed (see its log)";
  if (agree[0] < world_) {
    // A slice is exhausted: the epoch ends everywhere. The other slices' remaining rows (at
    // most one short batch when every block is intact) are skipped: each reader is advanced
    // to the end of its epoch.
    int64_t dropped = 0;
    for (size_t i = 0; i < train_readers_.size(); ++i) {
      if (ended_[i]) continue;  // this one has already moved to its next epoch
      while (train_readers_[i]->Next(&slice_batches_[i], slice_batch_size_)) {
        dropped += slice_batches_[i].size;
      }
      if (!train_readers_[i]->status().ok()) {
        LOG(FATAL) << "training data: " << train_readers_[i]->status();
      }
    }
    if (dropped > 0) {
      VLOG(1) << "epoch end: " << dropped << " rows of this rank's slices were not used";
    }
    return false;
  }
  RunStep(*batch, agree[1]);
  ++step_;
  samples_seen_ += agree[1];
  window_samples_ += agree[1];
  eval_samples_ += agree[1];
  return true;
}

double Trainer::TakeMeanLoss() {
  double sum = window_loss_sum_;
  comm_->AllReduce(&sum, &sum, 1, DType::kF64, comm::ReduceOp::kSum);
  const double mean =
      window_samples_ > 0 ? sum / static_cast<double>(window_samples_) : EvalMetrics::kNaN;
  window_loss_sum_ = 0;
  window_samples_ = 0;
  return mean;
}

StatusOr<EvalMetrics> Trainer::Evaluate() {
  if (!eval_reader_) return InvalidArgumentError("data.eval_files: no eval data configured");
  const ExecContext ctx = ExecContext::Cpu();
  model_->SetTraining(false, 0, 0);
  Status st = eval_reader_->Seek(eval_start_);
  if (!st.ok()) LOG(FATAL) << "eval data: rewinding: " << st;
  eval_buffer_.Clear();
  const int64_t max_batches = config_.train().eval_max_batches();
  const bool has_groups = !schema_.group_id().empty();
  for (int64_t n = 0;; ++n) {
    bool got =
        (max_batches == 0 || n < max_batches) && eval_reader_->Next(&eval_batch_, eval_batch_size_);
    const bool bad = !got && !eval_reader_->status().ok();
    int64_t agree[2] = {got ? 1 : 0, bad ? 1 : 0};
    comm_->AllReduce(agree, agree, 2, DType::kI64, comm::ReduceOp::kSum);
    if (bad) LOG(FATAL) << "eval data: " << eval_reader_->status();
    if (agree[1] > 0) LOG(FATAL) << "the eval reader of another rank failed (see its log)";
    if (agree[0] == 0) break;
    const data::Batch& batch = got ? eval_batch_ : empty_batch_;
    const int64_t b = batch.size;
    adapter_->EmbeddingBatch(batch, &emb_batch_);
    const embedding::EmbeddingOutputs& out = embeddings_->Forward(emb_batch_);
    const model::DenseInputs in = adapter_->DenseInputs(batch, out);
    TensorView logits = logits_.view().Slice0(0, b);
    model_->Forward(ctx, in, logits);
    if (!got) continue;
    const float* z = logits_.data<float>();
    for (int64_t i = 0; i < b; ++i) {
      predictions_[i] = static_cast<float>(1.0 / (1.0 + std::exp(-static_cast<double>(z[i]))));
    }
    eval_buffer_.Append(predictions_.data(), batch.labels.data(),
                        has_groups ? batch.group_ids.data() : nullptr, b);
  }
  MetricOptions mo;
  auto m = ComputeGlobalMetrics(*comm_, eval_buffer_.samples(), mo);
  if (!m.ok()) return m.status().WithContext("evaluation at step " + std::to_string(step_));
  ++evaluations_;
  last_eval_step_ = step_;
  return m;
}

bool Trainer::ObserveEval(const EvalMetrics& m) {
  const proto::EarlyStoppingConfig& es = config_.train().early_stopping();
  const double v = MetricValue(m, es.metric());
  optimizer_->ObserveMetric(v);
  const bool higher = HigherIsBetter(es.metric());
  const bool improved = !std::isnan(v) && (higher ? v > best_metric_ + es.min_delta()
                                                  : v < best_metric_ - es.min_delta());
  if (improved) {
    best_metric_ = v;
    best_step_ = step_;
    evals_without_improvement_ = 0;
  } else {
    ++evals_without_improvement_;
  }
  if (es.patience() > 0 && evals_without_improvement_ >= es.patience()) {
    LOOM_LOG_RANK0(INFO) << "early stopping at step " << step_ << ": "
                         << proto::EarlyStoppingConfig::Metric_Name(es.metric())
                         << " has not improved for " << evals_without_improvement_
                         << " evaluations (best " << best_metric_ << " at step " << best_step_
                         << ")";
    stopped_early_ = true;
  }
  return stopped_early_;
}

Status Trainer::LogEval(const EvalMetrics& m, double samples_per_sec, double train_loss) {
  LOOM_LOG_RANK0(INFO) << "eval at step " << step_ << ": " << m.ToString();
  if (!options_.write_run_files) return Status::Ok();
  if (rank_ != 0) return AgreeOnStatus(comm_, Status::Ok());
  EvalRecord r;
  r.step = step_;
  r.epoch = epoch_;
  r.metrics = m;
  r.samples_per_sec = samples_per_sec;
  r.train_loss = train_loss;
  r.lr = optimizer_->LearningRate();
  r.elapsed_sec = elapsed_train_seconds_;
  return AgreeOnStatus(
      comm_,
      AppendLine((std::filesystem::path(run_dir_) / kMetricsFileName).string(), EvalRecordJson(r)));
}

StatusOr<TrainSummary> Trainer::Run() {
  TrainSummary summary;
  LOOM_ASSIGN_OR_RETURN(summary.resumed_from, Resume());
  const proto::TrainConfig& train = config_.train();
  if (options_.write_run_files) {
    LOOM_RETURN_IF_ERROR(AgreeOnStatus(
        comm_, rank_ == 0 ? config::WriteEffectiveConfig(config_, run_dir_) : Status::Ok()));
  }
  const int64_t log_every = std::max<int64_t>(train.log_every_steps(), 1);
  double window_time = 0, eval_window_time = 0, run_time = 0;
  int64_t run_samples = 0;
  int64_t last_checkpoint_step = summary.resumed_from.empty() ? -1 : step_;
  std::optional<EvalMetrics> last_metrics;
  window_loss_sum_ = eval_loss_sum_ = 0;
  window_samples_ = eval_samples_ = 0;

  auto evaluate = [&]() -> Status {
    LOOM_ASSIGN_OR_RETURN(EvalMetrics m, Evaluate());
    double sums[1] = {eval_loss_sum_};
    comm_->AllReduce(sums, sums, 1, DType::kF64, comm::ReduceOp::kSum);
    const double train_loss =
        eval_samples_ > 0 ? sums[0] / static_cast<double>(eval_samples_) : EvalMetrics::kNaN;
    const double sps = eval_window_time > 0 ? eval_samples_ / eval_window_time : 0.0;
    LOOM_RETURN_IF_ERROR(LogEval(m, sps, train_loss));
    eval_loss_sum_ = 0;
    eval_samples_ = 0;
    eval_window_time = 0;
    ObserveEval(m);
    last_metrics = m;
    return Status::Ok();
  };
  auto save = [&]() -> Status {
    LOOM_ASSIGN_OR_RETURN(summary.last_checkpoint, SaveCheckpoint());
    last_checkpoint_step = step_;
    return Status::Ok();
  };

  if (!stopped_early_) {
    LOOM_LOG_RANK0(INFO) << "training from step " << step_ << " (epoch " << epoch_ << ")"
                         << (total_steps_ > 0 ? " to step " + std::to_string(total_steps_)
                                              : std::string());
  }
  while (!stopped_early_) {
    if (train.max_steps() > 0 && step_ >= train.max_steps()) break;
    if (train.epochs() > 0 && epoch_ >= train.epochs()) break;
    const auto t0 = Clock::now();
    const int64_t before = samples_seen_;
    const bool stepped = Step();
    const double dt = Seconds(t0, Clock::now());
    window_time += dt;
    eval_window_time += dt;
    run_time += dt;
    elapsed_train_seconds_ += dt;
    run_samples += samples_seen_ - before;
    if (!stepped) {
      ++epoch_;
      LOOM_LOG_RANK0(INFO) << "epoch " << epoch_ - 1 << " done at step " << step_;
      if (train.eval_every_steps() == 0 && eval_reader_ && last_eval_step_ != step_) {
        LOOM_RETURN_IF_ERROR(evaluate());
      }
      continue;
    }
    if (step_ % log_every == 0) {
      ProgressRecord p;
      p.step = step_;
      p.total_steps = total_steps_;
      p.epoch = epoch_;
      const int64_t samples = window_samples_;
      p.loss = TakeMeanLoss();
      p.samples_per_sec = window_time > 0 ? samples / window_time : 0;
      p.lr = optimizer_->LearningRate();
      p.elapsed_sec = elapsed_train_seconds_;
      const double per_step =
          run_time / std::max<double>(1, run_samples) * static_cast<double>(batch_size_ * world_);
      p.eta_sec = total_steps_ > 0 ? std::max<int64_t>(total_steps_ - step_, 0) * per_step : -1;
      LOOM_LOG_RANK0(INFO) << ProgressLine(p);
      if (rank_ == 0 && options_.write_run_files) {
        // Not agreed on (no collective per progress line): a failure is only logged.
        Status s = AppendLine((std::filesystem::path(run_dir_) / kTrainLogFileName).string(),
                              ProgressRecordJson(p));
        LOG_IF(WARNING, !s.ok()) << s;
      }
      window_time = 0;
    }
    if (train.eval_every_steps() > 0 && eval_reader_ && step_ % train.eval_every_steps() == 0) {
      LOOM_RETURN_IF_ERROR(evaluate());
    }
    const int64_t every = train.checkpoint().every_steps();
    if (every > 0 && step_ % every == 0) LOOM_RETURN_IF_ERROR(save());
  }
  if (eval_reader_ && last_eval_step_ != step_) LOOM_RETURN_IF_ERROR(evaluate());
  if (train.checkpoint().save_at_end() && last_checkpoint_step != step_) {
    LOOM_RETURN_IF_ERROR(save());
  }
  summary.step = step_;
  summary.epoch = epoch_;
  summary.samples_seen = samples_seen_;
  summary.stopped_early = stopped_early_;
  summary.final_metrics = last_metrics;
  summary.train_seconds = run_time;
  summary.samples_per_sec = run_time > 0 ? run_samples / run_time : 0;
  return summary;
}

}  // namespace loom::train
