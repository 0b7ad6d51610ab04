// ckpt_predict: the predictions of a checkpoint on the eval split, for the end-to-end checks
// of the checkpoint tools (tests/e2e/ckpt_reshard_e2e.sh). An MPI program like loom_train:
//
//   mpirun -np R train_ckpt_predict --config FILE [--set TEXT ...] --checkpoint DIR
//          --out FILE.safetensors [--model interformer|dlrm_baseline] [--data-slices S]
//          [--batch B]
//
// Restores the newest checkpoint of DIR with the trainer (as `loom train` would resume at R
// ranks: RESUME_REQUIRED), runs the eval files (data.eval_files) forward exactly as
// Trainer::Evaluate does (every rank its slice, data order), and rank 0 writes, in global row
// order (N rows):
//   logits            F32 (N)        the model's logits
//   label             F32 (N)
//   dense             F32 (N, m)     (m > 0)
//   ids.<feature>     I64 (N, P)     raw ids of every embedding feature, config order:
//                                    pooled features P = max ids per sample (1 for SINGLE),
//                                    the bag's ids then -1; SEQUENCE features P = T, the last T
//                                    ids pre-padded with -1 (what the embedding layer uses)
//   weights.<feature> F32 (N, P)     weighted pooled features only
// and metadata "step" and "world_size". tests/reference/load_exported.py reads this file as
// its batch. Exit status 0 on success, 1 on failure, 2 for bad flags.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "csrc/comm/bootstrap.h"
#include "csrc/core/logging.h"
#include "csrc/core/safetensors.h"
#include "csrc/data/reader.h"
#include "csrc/proto/config_io.h"
#include "csrc/train/input_adapter.h"
#include "csrc/train/trainer.h"

namespace loom::train {
namespace {

struct Flags {
  std::string config, checkpoint, out, model;  // model: empty = the config's
  std::vector<std::string> overrides;
  int data_slices = 0;
  int64_t batch = 0;  // rows per forward on each rank; 0 = the local training batch
};

int ParseFlags(int argc, char** argv, Flags* f) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto take = [&](std::string* v) {
      if (i + 1 >= argc) return false;
      *v = argv[++i];
      return true;
    };
    std::string v;
    if (a == "--config" && take(&f->config)) continue;
    if (a == "--checkpoint" && take(&f->checkpoint)) continue;
    if (a == "--out" && take(&f->out)) continue;
    if (a == "--model" && take(&f->model)) continue;
    if (a == "--set" && take(&v)) {
      f->overrides.push_back(v);
      continue;
    }
    if (a == "--batch" && take(&v)) {
      f->batch = std::atoll(v.c_str());
      continue;
    }
    if (a == "--data-slices" && take(&v)) {
      f->data_slices = std::atoi(v.c_str());
      continue;
    }
    std::fprintf(stderr, "ckpt_predict: bad flag '%s'\n", a.c_str());
    return 2;
  }
  if (f->config.empty() || f->checkpoint.empty() || f->out.empty()) {
    std::fprintf(stderr, "ckpt_predict: --config, --checkpoint and --out are required\n");
    return 2;
  }
  return 0;
}

// Gathers every rank's `local` (rank order) on every rank.
template <typename T>
std::vector<T> Gather(comm::Communicator* comm, const std::vector<T>& local, DType dtype) {
  const int world = comm->size();
  int64_t n = static_cast<int64_t>(local.size());
  std::vector<int64_t> counts(world);
  comm->AllGather(&n, counts.data(), 1, DType::kI64);
  std::vector<int64_t> displs(world, 0);
  for (int r = 1; r < world; ++r) displs[r] = displs[r - 1] + counts[r - 1];
  std::vector<T> all(static_cast<size_t>(displs[world - 1] + counts[world - 1]));
  comm->AllGatherV(local.data(), n, all.data(), counts, displs, dtype);
  return all;
}

int Main(int argc, char** argv) {
  InitLogging(argv[0]);
  Flags flags;
  if (int rc = ParseFlags(argc, argv, &flags); rc != 0) return rc;
  auto config = config::LoadConfig(flags.config, flags.overrides);
  if (!config.ok()) {
    std::fprintf(stderr, "ckpt_predict: %s\n", config.status().message().c_str());
    return 2;
  }
  if (!flags.model.empty()) {
    if (Status st = SetModelType(flags.model, config->mutable_model()); !st.ok()) {
      std::fprintf(stderr, "ckpt_predict: --model: %s\n", st.message().c_str());
      return 2;
    }
  }
  proto::TrainConfig* train = config->mutable_train();
  train->mutable_checkpoint()->set_dir(flags.checkpoint);
  train->mutable_checkpoint()->set_resume(proto::CheckpointConfig::RESUME_REQUIRED);
  train->set_run_dir((std::filesystem::path(flags.out).parent_path() / "predict_run").string());

  auto boot = comm::InitDistributed(&argc, &argv, comm::BootstrapOptions());
  if (!boot.ok()) {
    LOG(ERROR) << boot.status();
    return 1;
  }
  int rc = 0;
  {
    auto comm = comm::CreateCommunicator(comm::Backend::kMpi, *boot);
    if (!comm.ok()) {
      LOG(ERROR) << comm.status();
      AbortJob(1);
    }
    comm::Communicator* c = comm->get();
    TrainerOptions opts;
    opts.write_run_files = false;
    opts.data_slices = flags.data_slices;
    auto trainer = Trainer::Create(*config, c, opts);
    if (!trainer.ok()) {
      LOG(ERROR) << "ckpt_predict: " << trainer.status().message();
      rc = 1;
    } else {
      Trainer& t = **trainer;
      auto resumed = t.Resume();
      if (!resumed.ok()) {
        LOG(ERROR) << "ckpt_predict: " << resumed.status().message();
        AbortJob(1);
      }
      const proto::DataConfig& dc = config->data();
      auto files = data::ExpandFilePatterns({dc.eval_files().begin(), dc.eval_files().end()});
      LOOM_CHECK_OK(files.status());
      auto reader = data::Reader::Open(*files, nullptr, c->rank(), c->size(),
                                       data::ReaderOptions::FromConfig(dc.reader()).ForEval());
      LOOM_CHECK_OK(reader.status());
      const proto::DataSchema schema = (*reader)->schema();
      const int64_t batch_size = flags.batch > 0 ? flags.batch : t.local_batch_size();
      auto adapter = InputAdapter::Create(*config, schema, batch_size,
                                          ModelTypeName(config->model()) == kModelDlrmBaseline);
      LOOM_CHECK_OK(adapter.status());
      data::Batch batch, empty;
      InputAdapter::MakeEmptyBatch(schema, &empty);
      embedding::EmbeddingBatch eb;
      Tensor logits = Tensor::Zeros(Shape{batch_size}, DType::kF32);
      t.model().SetTraining(false, 0, 0);
      const ExecContext ctx = ExecContext::Cpu();

      // The feature columns, config order.
      const auto& features = config->embedding().features();
      struct Col {
        bool sequence;
        int index;
        int width;
        bool weighted;
      };
      std::vector<Col> cols;
      for (const auto& f : features) {
        Col col{f.kind() == proto::EmbeddingFeatureConfig::SEQUENCE, -1, 1, false};
        if (col.sequence) {
          for (int j = 0; j < schema.sequence_size(); ++j) {
            if (schema.sequence(j).name() == f.name()) col.index = j;
          }
          col.width = f.max_length();
        } else {
          for (int j = 0; j < schema.sparse_size(); ++j) {
            if (schema.sparse(j).name() == f.name()) {
              col.index = j;
              col.weighted = schema.sparse(j).weighted();
            }
          }
          col.width =
              f.kind() == proto::EmbeddingFeatureConfig::MULTI_HOT ? f.max_ids_per_sample() : 1;
        }
        CHECK_GE(col.index, 0) << "feature " << f.name() << " not in the data schema";
        cols.push_back(col);
      }
      std::vector<float> out_logits, labels, dense;
      std::vector<std::vector<int64_t>> ids(cols.size());
      std::vector<std::vector<float>> weights(cols.size());
      while (true) {
        const bool got = (*reader)->Next(&batch, batch_size);
        int64_t any = got ? 1 : 0;
        c->AllReduce(&any, &any, 1, DType::kI64, comm::ReduceOp::kSum);
        if (any == 0) break;
        const data::Batch& b = got ? batch : empty;
        adapter->EmbeddingBatch(b, &eb);
        const embedding::EmbeddingOutputs& out = t.embeddings().Forward(eb);
        const model::DenseInputs in = adapter->DenseInputs(b, out);
        t.model().Forward(ctx, in, logits.view().Slice0(0, b.size));
        if (!got) continue;
        for (int64_t i = 0; i < b.size; ++i) {
          out_logits.push_back(logits.data<float>()[i]);
          labels.push_back(b.labels[i]);
        }
        dense.insert(dense.end(), b.dense.begin(), b.dense.end());
        for (size_t k = 0; k < cols.size(); ++k) {
          const Col& col = cols[k];
          const data::CsrColumn& csr = col.sequence ? b.sequences[col.index] : b.sparse[col.index];
          for (int64_t i = 0; i < b.size; ++i) {
            const int64_t len = csr.length(i);
            const int64_t* p = csr.ids_of(i);
            std::vector<int64_t> row(static_cast<size_t>(col.width), -1);
            std::vector<float> wrow(static_cast<size_t>(col.width), 0.0f);
            if (col.sequence) {
              const int64_t keep = std::min<int64_t>(len, col.width);
              for (int64_t j = 0; j < keep; ++j) {
                row[static_cast<size_t>(col.width - keep + j)] = p[len - keep + j];
              }
            } else {
              CHECK_LE(len, col.width) << "a bag longer than max_ids_per_sample";
              for (int64_t j = 0; j < len; ++j) {
                row[static_cast<size_t>(j)] = p[j];
                if (col.weighted) wrow[static_cast<size_t>(j)] = csr.weights[csr.offsets[i] + j];
              }
            }
            ids[k].insert(ids[k].end(), row.begin(), row.end());
            if (col.weighted) weights[k].insert(weights[k].end(), wrow.begin(), wrow.end());
          }
        }
      }
      LOOM_CHECK_OK((*reader)->status());
      const auto all_logits = Gather(c, out_logits, DType::kF32);
      const auto all_labels = Gather(c, labels, DType::kF32);
      const auto all_dense = Gather(c, dense, DType::kF32);
      std::vector<std::vector<int64_t>> all_ids;
      std::vector<std::vector<float>> all_weights;
      for (size_t k = 0; k < cols.size(); ++k) {
        all_ids.push_back(Gather(c, ids[k], DType::kI64));
        all_weights.push_back(Gather(c, weights[k], DType::kF32));
      }
      if (c->rank() == 0) {
        const int64_t n = static_cast<int64_t>(all_logits.size());
        SafetensorsWriter w;
        w.Add("logits",
              ConstTensorView(all_logits.data(), TensorSpec{Shape{n}, DType::kF32}, Device::Cpu()));
        w.Add("label",
              ConstTensorView(all_labels.data(), TensorSpec{Shape{n}, DType::kF32}, Device::Cpu()));
        const int64_t m = schema.dense_size();
        if (m > 0) {
          w.Add("dense", ConstTensorView(all_dense.data(), TensorSpec{Shape{n, m}, DType::kF32},
                                         Device::Cpu()));
        }
        for (size_t k = 0; k < cols.size(); ++k) {
          const std::string& name = features[static_cast<int>(k)].name();
          w.Add("ids." + name,
                ConstTensorView(all_ids[k].data(), TensorSpec{Shape{n, cols[k].width}, DType::kI64},
                                Device::Cpu()));
          if (cols[k].weighted) {
            w.Add("weights." + name,
                  ConstTensorView(all_weights[k].data(),
                                  TensorSpec{Shape{n, cols[k].width}, DType::kF32}, Device::Cpu()));
          }
        }
        w.SetMetadata("step", std::to_string(t.step()));
        w.SetMetadata("world_size", std::to_string(c->size()));
        Status st = w.Write(flags.out);
        if (!st.ok()) {
          LOG(ERROR) << "ckpt_predict: " << st;
          rc = 1;
        } else {
          std::printf("ckpt_predict: %lld predictions of step %lld at %d ranks -> %s\n",
                      static_cast<long long>(n), static_cast<long long>(t.step()), c->size(),
                      flags.out.c_str());
        }
      }
    }
  }
  Status fin = comm::FinalizeDistributed(*boot);
  if (!fin.ok()) return 1;
  return rc;
}

}  // namespace
}  // namespace loom::train

int main(int argc, char** argv) { return loom::train::Main(argc, argv); }
