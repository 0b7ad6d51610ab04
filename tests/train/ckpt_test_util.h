// Helpers of the checkpoint-tool tests: N ranks as N threads of one process (ThreadComm), so
// the trainer's own Checkpointer::Save and Restore write and read real N-rank checkpoints
// without MPI; a small embedding config with every optimizer; tables and dense tensors filled
// with closed-form values (Expected*), the oracle every converted checkpoint is checked
// against bit for bit.
#ifndef LOOM_TESTS_TRAIN_CKPT_TEST_UTIL_H_
#define LOOM_TESTS_TRAIN_CKPT_TEST_UTIL_H_

#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <google/protobuf/text_format.h>
#include <gtest/gtest.h>

#include "csrc/comm/communicator.h"
#include "csrc/embedding/embedding_collection.h"
#include "csrc/model/parameter.h"
#include "csrc/optim/dense_optimizer.h"
#include "csrc/proto/config_io.h"
#include "csrc/train/checkpoint.h"

namespace loom::train::testing {

// ---------------------------------------------------------------------------------------------
// N ranks as threads.

class ThreadHub {
 public:
  explicit ThreadHub(int n) : n_(n), sends_(n), counts_(n), displs_(n) {}
  int size() const { return n_; }
  void Sync() {
    std::unique_lock<std::mutex> lock(mu_);
    const int64_t gen = generation_;
    if (++arrived_ == n_) {
      arrived_ = 0;
      ++generation_;
      cv_.notify_all();
    } else {
      cv_.wait(lock, [&] { return generation_ != gen; });
    }
  }
  const void*& send(int r) { return sends_[r]; }
  std::vector<int64_t>& counts(int r) { return counts_[r]; }
  std::vector<int64_t>& displs(int r) { return displs_[r]; }

 private:
  int n_;
  std::mutex mu_;
  std::condition_variable cv_;
  int arrived_ = 0;
  int64_t generation_ = 0;
  std::vector<const void*> sends_;
  std::vector<std::vector<int64_t>> counts_, displs_;
};

class ThreadComm final : public comm::Communicator {
 public:
  ThreadComm(ThreadHub* hub, int rank) : hub_(hub), rank_(rank) {}
  int rank() const override { return rank_; }
  int size() const override { return hub_->size(); }
  Device device() const override { return Device::Cpu(); }
  std::string backend() const override { return "threads"; }

  void AllReduce(const void* send, void* recv, int64_t count, DType dtype,
                 comm::ReduceOp op) override {
    hub_->send(rank_) = send;
    hub_->Sync();
    std::vector<char> out(static_cast<size_t>(count * DTypeSize(dtype)));
    for (int r = 0; r < size(); ++r) Reduce(hub_->send(r), 0, count, dtype, op, r == 0, &out);
    hub_->Sync();
    std::memcpy(recv, out.data(), out.size());
  }
  void AllToAllV(const void* send, const std::vector<int64_t>& sc, const std::vector<int64_t>& sd,
                 void* recv, const std::vector<int64_t>& rc, const std::vector<int64_t>& rd,
                 DType dtype) override {
    const int64_t es = DTypeSize(dtype);
    hub_->send(rank_) = send;
    hub_->counts(rank_) = sc;
    hub_->displs(rank_) = sd;
    hub_->Sync();
    for (int p = 0; p < size(); ++p) {
      CHECK_EQ(hub_->counts(p)[rank_], rc[p]);
      std::memcpy(static_cast<char*>(recv) + rd[p] * es,
                  static_cast<const char*>(hub_->send(p)) + hub_->displs(p)[rank_] * es,
                  static_cast<size_t>(rc[p] * es));
    }
    hub_->Sync();
  }
  void AllGather(const void* send, void* recv, int64_t count, DType dtype) override {
    const int64_t es = DTypeSize(dtype);
    hub_->send(rank_) = send;
    hub_->Sync();
    std::vector<char> out(static_cast<size_t>(size() * count * es));
    for (int p = 0; p < size(); ++p) {
      std::memcpy(out.data() + p * count * es, hub_->send(p), static_cast<size_t>(count * es));
    }
    hub_->Sync();
    std::memcpy(recv, out.data(), out.size());
  }
  void AllGatherV(const void* send, int64_t, void* recv, const std::vector<int64_t>& rc,
                  const std::vector<int64_t>& rd, DType dtype) override {
    const int64_t es = DTypeSize(dtype);
    hub_->send(rank_) = send;
    hub_->Sync();
    for (int p = 0; p < size(); ++p) {
      std::memcpy(static_cast<char*>(recv) + rd[p] * es, hub_->send(p),
                  static_cast<size_t>(rc[p] * es));
    }
    hub_->Sync();
  }
  void ReduceScatter(const void* send, void* recv, int64_t count, DType dtype,
                     comm::ReduceOp op) override {
    hub_->send(rank_) = send;
    hub_->Sync();
    std::vector<char> out(static_cast<size_t>(count * DTypeSize(dtype)));
    for (int r = 0; r < size(); ++r)
      Reduce(hub_->send(r), rank_ * count, count, dtype, op, r == 0, &out);
    hub_->Sync();
    std::memcpy(recv, out.data(), out.size());
  }
  void Broadcast(void* buffer, int64_t count, DType dtype, int root) override {
    if (rank_ == root) hub_->send(rank_) = buffer;
    hub_->Sync();
    if (rank_ != root) {
      std::memcpy(buffer, hub_->send(root), static_cast<size_t>(count * DTypeSize(dtype)));
    }
    hub_->Sync();
  }
  void Barrier() override { hub_->Sync(); }

 private:
  template <typename T>
  static void ReduceT(const T* in, int64_t count, comm::ReduceOp op, bool first, T* out) {
    for (int64_t i = 0; i < count; ++i) {
      if (first) {
        out[i] = in[i];
      } else if (op == comm::ReduceOp::kSum) {
        out[i] += in[i];
      } else {
        out[i] = std::max(out[i], in[i]);
      }
    }
  }
  static void Reduce(const void* in, int64_t offset, int64_t count, DType dtype, comm::ReduceOp op,
                     bool first, std::vector<char>* out) {
    switch (dtype) {
      case DType::kF32:
        ReduceT(static_cast<const float*>(in) + offset, count, op, first,
                reinterpret_cast<float*>(out->data()));
        break;
      case DType::kF64:
        ReduceT(static_cast<const double*>(in) + offset, count, op, first,
                reinterpret_cast<double*>(out->data()));
        break;
      case DType::kI32:
        ReduceT(static_cast<const int32_t*>(in) + offset, count, op, first,
                reinterpret_cast<int32_t*>(out->data()));
        break;
      case DType::kI64:
        ReduceT(static_cast<const int64_t*>(in) + offset, count, op, first,
                reinterpret_cast<int64_t*>(out->data()));
        break;
      default:
        LOG(FATAL) << "ThreadComm: reduce of " << DTypeName(dtype);
    }
  }
  ThreadHub* hub_;
  int rank_;
};

// Runs fn(comm) on n threads, one per rank.
inline void RunRanks(int n, const std::function<void(comm::Communicator*)>& fn) {
  ThreadHub hub(n);
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r) {
    threads.emplace_back([&hub, &fn, r] {
      ThreadComm comm(&hub, r);
      fn(&comm);
    });
  }
  for (auto& t : threads) t.join();
}

// ---------------------------------------------------------------------------------------------
// The model: four tables, one per sparse optimizer, and two dense parameters with Adam state.
//   users 1000 x 8   ADAGRAD           (weight, adagrad_sum)
//   items  501 x 16  ROWWISE_ADAGRAD   (weight, rowwise_adagrad_sum per row)
//   cats    40 x 8   ADAM              (weight, adam_m, adam_v, adam_step i32 per row)
//   tags    37 x 12  SGD               (weight)

inline proto::LoomConfig TestConfig(const std::string& overrides_text) {
  const std::string text = R"pb(
    embedding {
      tables {
        name: "users"
        num_rows: 1000
        dim: 8
        optimizer { type: ADAGRAD initial_accumulator_value: 0.25 }
      }
      tables {
        name: "items"
        num_rows: 501
        dim: 16
        optimizer { type: ROWWISE_ADAGRAD }
      }
      tables {
        name: "cats"
        num_rows: 40
        dim: 8
        optimizer { type: ADAM }
      }
      tables {
        name: "tags"
        num_rows: 37
        dim: 12
        optimizer { type: SGD }
      }
      features { name: "user_id" table: "users" }
      features { name: "item_id" table: "items" }
      features { name: "cat_id" table: "cats" }
      features { name: "tag_id" table: "tags" }
      data_parallel_max_bytes: 0
    }
    train { local_batch_size: 4 }
  )pb";
  proto::LoomConfig config;
  CHECK(google::protobuf::TextFormat::ParseFromString(text, &config));
  proto::EmbeddingConfig overrides;
  CHECK(google::protobuf::TextFormat::ParseFromString(overrides_text, &overrides))
      << overrides_text;
  *config.mutable_embedding()->mutable_sharding_overrides() = overrides.sharding_overrides();
  return config;
}

// Closed-form contents. Every (tensor, row, column) has its own value; per-row slots depend on
// the row only (so column slices agree, as the trainer guarantees).
inline float ValueOf(uint64_t tensor_key, int64_t row, int64_t col) {
  uint64_t x = tensor_key * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(row) * 0x100000001b3ull +
               static_cast<uint64_t>(col) * 0xBF58476D1CE4E5B9ull + 12345;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  x ^= x >> 31;
  return static_cast<float>(static_cast<int64_t>(x >> 40) - (int64_t{1} << 23)) / 4194304.0f;
}
inline uint64_t KeyOf(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (char c : s) h = (h ^ static_cast<unsigned char>(c)) * 1099511628211ull;
  return h;
}
// Global element (row, col) of "embedding/<table>/<slot>" or of a dense tensor (row-major
// flattened: row 0, col = element index).
inline float Expected(const std::string& global_name, int64_t row, int64_t col) {
  return ValueOf(KeyOf(global_name), row, col);
}
inline int32_t ExpectedStep(const std::string& table, int64_t row) {
  return static_cast<int32_t>((KeyOf(table) + static_cast<uint64_t>(row) * 7) % 1000);
}

inline proto::OptimizerConfig DenseAdam() {
  proto::OptimizerConfig c;
  c.set_type(proto::OptimizerConfig::OPTIMIZER_TYPE_ADAM);
  c.set_lr(0.01f);
  return c;
}

// A live job's state on one rank: the collection, dense parameters and optimizer.
struct RankState {
  std::unique_ptr<embedding::EmbeddingCollection> ec;
  std::unique_ptr<model::ParameterStore> params;
  std::unique_ptr<optim::DenseOptimizer> opt;
};

inline RankState MakeRankState(const proto::LoomConfig& config, comm::Communicator* comm) {
  RankState s;
  embedding::CollectionOptions co;
  co.batch_size = 4;
  co.num_threads = 1;
  co.log_plan = false;
  auto ec = embedding::EmbeddingCollection::Create(config.embedding(), comm, co);
  LOOM_CHECK_OK(ec.status());
  s.ec = std::move(*ec);
  s.params = std::make_unique<model::ParameterStore>(DType::kF32);
  s.params->Add("layers.0.norm.weight", Shape{6}, model::InitRule::Ones());
  s.params->Add("head.out.weight", Shape{1, 6}, model::InitRule::Uniform(0.1));
  s.params->Allocate(Device::Cpu());
  s.params->Initialize(1);
  std::vector<optim::DenseParam> dp;
  for (model::Parameter& p : s.params->parameters()) {
    dp.push_back(optim::DenseParam{p.name, p.value, p.grad, true});
  }
  auto opt = optim::DenseOptimizer::Create(DenseAdam(), dp);
  LOOM_CHECK_OK(opt.status());
  s.opt = std::move(*opt);
  return s;
}

// Fills every tensor this rank holds with the closed-form values.
inline void FillRankState(RankState* s) {
  const auto& plan = s->ec->plan();
  const auto& spec = s->ec->spec();
  for (int k = 0; k < static_cast<int>(plan.shards.size()); ++k) {
    const embedding::ShardView& v = s->ec->shard_view(k);
    if (v.weights == nullptr) continue;
    const embedding::Shard& sh = plan.shards[k];
    const embedding::TableSpec& ts = spec.tables[sh.table];
    const std::string base = "embedding/" + ts.name + "/";
    for (int64_t i = 0; i < sh.num_rows; ++i) {
      const int64_t g = i * sh.row_stride + sh.row_offset;
      for (int c = 0; c < sh.width; ++c) {
        const int64_t gc = sh.col_begin + c;
        v.weights[i * sh.width + c] = Expected(base + "weight", g, gc);
        switch (ts.optimizer.type) {
          case embedding::OptimizerType::kAdagrad:
            v.state0[i * sh.width + c] = Expected(base + "adagrad_sum", g, gc);
            break;
          case embedding::OptimizerType::kAdam:
            v.state0[i * sh.width + c] = Expected(base + "adam_m", g, gc);
            v.state1[i * sh.width + c] = Expected(base + "adam_v", g, gc);
            break;
          default:
            break;
        }
      }
      if (ts.optimizer.type == embedding::OptimizerType::kRowwiseAdagrad) {
        v.state0[i] = Expected(base + "rowwise_adagrad_sum", g, 0);
      }
      if (ts.optimizer.type == embedding::OptimizerType::kAdam) {
        v.steps[i] = ExpectedStep(ts.name, g);
      }
    }
  }
  for (model::Parameter& p : s->params->parameters()) {
    float* w = p.value.data<float>();
    for (int64_t i = 0; i < p.numel(); ++i) w[i] = Expected("dense/" + p.name, 0, i);
  }
  for (const auto& st : s->opt->StateTensors()) {
    float* w = st.tensor.data<float>();
    for (int64_t i = 0; i < st.tensor.numel(); ++i) w[i] = Expected("dense_opt/" + st.name, 0, i);
  }
}

inline const int64_t kTestStep = 120;
inline const uint64_t kTestModelHash = 0x1234abcdull;

// A position in the middle of epoch 2 for slice `slice` of `slices`.
inline proto::DataSlicePosition TestPosition(int slice, int slices, int64_t rows_in_epoch) {
  proto::DataSlicePosition p;
  p.set_slice(slice);
  p.set_num_slices(slices);
  proto::ReaderPosition* q = p.mutable_position();
  q->set_epoch(2);
  q->set_chunk_cursor(rows_in_epoch > 0 ? 1 : 0);
  q->set_window_offset(rows_in_epoch > 0 ? 3 : 0);
  q->set_seed(77);
  q->set_rank(slice);
  q->set_world_size(slices);
  q->set_data_fingerprint(0xfeedbeefull);
  q->set_shuffle_buffer_rows(16);
  q->set_rows_in_epoch(rows_in_epoch);
  return p;
}

// Saves a checkpoint of the test model with `world` ranks under `config` (its sharding
// overrides fix the plan) into dir/step-<kTestStep>; returns its path.
inline std::string SaveTestCheckpoint(const std::string& dir, int world,
                                      const proto::LoomConfig& config, int64_t rows_in_epoch = 5) {
  std::vector<std::string> paths(world);
  RunRanks(world, [&](comm::Communicator* comm) {
    RankState s = MakeRankState(config, comm);
    FillRankState(&s);
    TrainingState ts;
    ts.parameters = s.params.get();
    ts.optimizer = s.opt.get();
    ts.embeddings = s.ec.get();
    proto::CheckpointManifest& h = ts.header;
    h.set_step(kTestStep);
    h.set_model_type("interformer");
    h.set_config_text(config::ToText(config));
    h.set_config_hash(Fnv1a64(h.config_text()));
    h.set_model_hash(kTestModelHash);
    h.set_dense_parameter_count(s.params->total_elements());
    *h.mutable_dense_optimizer() = s.opt->SaveState();
    h.mutable_trainer()->set_step(kTestStep);
    h.mutable_trainer()->set_epoch(2);
    h.mutable_trainer()->set_samples_seen(kTestStep * 4 * world);
    h.mutable_rng()->set_seed(5);
    h.mutable_rng()->set_next_step(kTestStep);
    ts.data_positions.push_back(TestPosition(comm->rank(), world, rows_in_epoch));
    CheckpointerOptions co;
    co.dir = dir;
    co.keep_last = 0;
    co.producer = "ckpt_convert_test";
    Checkpointer ck(comm, co);
    auto path = ck.Save(ts);
    LOOM_CHECK_OK(path.status());
    paths[comm->rank()] = *path;
  });
  return paths[0];
}

// Restores `path` with the trainer's Checkpointer into a live `world`-rank job planned from
// `config`, and checks every table (GatherTable), dense parameter and optimizer state tensor
// against the closed-form values; data slice positions for `slices` slices are requested.
inline void RestoreAndCheck(const std::string& path, int world, const proto::LoomConfig& config,
                            int slices = 0) {
  std::vector<std::string> failures(world);
  RunRanks(world, [&](comm::Communicator* comm) {
    RankState s = MakeRankState(config, comm);
    TrainingState ts;
    ts.parameters = s.params.get();
    ts.optimizer = s.opt.get();
    ts.embeddings = s.ec.get();
    const int S = slices > 0 ? slices : world;
    for (int k = comm->rank() * (S / world); k < (comm->rank() + 1) * (S / world); ++k) {
      proto::DataSlicePosition p;
      p.set_slice(k);
      p.set_num_slices(S);
      ts.data_positions.push_back(p);
    }
    CheckpointerOptions co;
    co.dir = std::filesystem::path(path).parent_path().string();
    Checkpointer ck(comm, co);
    Status st = ck.Restore(path, &ts, kTestModelHash);
    std::string& fail = failures[comm->rank()];
    if (!st.ok()) {
      fail = "restore: " + st.ToString();
      return;
    }
    for (const auto& p : ts.data_positions) {
      if (p.position().world_size() != S || p.position().rank() != p.slice()) {
        fail = "restored position of slice " + std::to_string(p.slice()) + " is for rank " +
               std::to_string(p.position().rank()) + " of " +
               std::to_string(p.position().world_size());
      }
    }
    const auto& spec = s.ec->spec();
    for (int t = 0; t < static_cast<int>(spec.tables.size()); ++t) {
      embedding::TableContents c = s.ec->GatherTable(t);  // collective
      if (!fail.empty()) continue;
      const auto& ts2 = spec.tables[t];
      const std::string base = "embedding/" + ts2.name + "/";
      for (int64_t g = 0; g < ts2.num_rows && fail.empty(); ++g) {
        for (int c2 = 0; c2 < ts2.dim; ++c2) {
          const size_t i = static_cast<size_t>(g * ts2.dim + c2);
          if (c.weights[i] != Expected(base + "weight", g, c2)) {
            fail = ts2.name + " weight (" + std::to_string(g) + ", " + std::to_string(c2) + ")";
            break;
          }
          if (ts2.optimizer.type == embedding::OptimizerType::kAdagrad &&
              c.state0[i] != Expected(base + "adagrad_sum", g, c2)) {
            fail = ts2.name + " adagrad_sum (" + std::to_string(g) + ")";
            break;
          }
          if (ts2.optimizer.type == embedding::OptimizerType::kAdam &&
              (c.state0[i] != Expected(base + "adam_m", g, c2) ||
               c.state1[i] != Expected(base + "adam_v", g, c2))) {
            fail = ts2.name + " adam_m/v (" + std::to_string(g) + ")";
            break;
          }
        }
        if (ts2.optimizer.type == embedding::OptimizerType::kRowwiseAdagrad &&
            c.state0[static_cast<size_t>(g)] != Expected(base + "rowwise_adagrad_sum", g, 0)) {
          fail = ts2.name + " rowwise_adagrad_sum (" + std::to_string(g) + ")";
        }
        if (ts2.optimizer.type == embedding::OptimizerType::kAdam &&
            c.steps[static_cast<size_t>(g)] != ExpectedStep(ts2.name, g)) {
          fail = ts2.name + " adam_step (" + std::to_string(g) + ")";
        }
      }
    }
    for (model::Parameter& p : s.params->parameters()) {
      const float* w = p.value.data<float>();
      for (int64_t i = 0; i < p.numel(); ++i) {
        if (w[i] != Expected("dense/" + p.name, 0, i)) fail = "dense/" + p.name;
      }
    }
    for (const auto& st2 : s.opt->StateTensors()) {
      const float* w = st2.tensor.data<float>();
      for (int64_t i = 0; i < st2.tensor.numel(); ++i) {
        if (w[i] != Expected("dense_opt/" + st2.name, 0, i)) fail = "dense_opt/" + st2.name;
      }
    }
  });
  for (int r = 0; r < world; ++r) EXPECT_EQ(failures[r], "") << "rank " << r << " of " << world;
}

// A fresh temporary directory, removed at destruction.
class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/loom_ckpt_test_XXXXXX";
    CHECK(::mkdtemp(tmpl) != nullptr);
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

}  // namespace loom::train::testing

#endif  // LOOM_TESTS_TRAIN_CKPT_TEST_UTIL_H_
