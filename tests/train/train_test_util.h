// Helpers of the trainer and checkpoint tests: a shared temporary directory, a tiny synthetic
// data set (csrc/data/synthetic.h) and a small InterFormer config over it that exercises every
// sharding strategy (TW, RW, DP) and every sparse optimizer with state (Adagrad, row-wise
// Adagrad, Adam).
#ifndef LOOM_TESTS_TRAIN_TRAIN_TEST_UTIL_H_
#define LOOM_TESTS_TRAIN_TRAIN_TEST_UTIL_H_

#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "csrc/comm/communicator.h"
#include "csrc/core/status.h"
#include "csrc/data/synthetic.h"
#include "csrc/proto/config.pb.h"
#include "csrc/proto/config_io.h"

namespace loom::train::testing {

// A fresh directory under $TMPDIR (or /tmp) created by rank 0, the same path on every rank.
inline std::string SharedTempDir(comm::Communicator& comm, const std::string& prefix) {
  std::string path;
  if (comm.rank() == 0) {
    const char* tmp = std::getenv("TMPDIR");
    std::string pattern = std::string(tmp ? tmp : "/tmp") + "/" + prefix + "-XXXXXX";
    std::vector<char> buf(pattern.begin(), pattern.end());
    buf.push_back('\0');
    CHECK(::mkdtemp(buf.data()) != nullptr) << "mkdtemp " << pattern;
    path = buf.data();
  }
  int64_t len = static_cast<int64_t>(path.size());
  comm.Broadcast(&len, 1, DType::kI64, 0);
  path.resize(static_cast<size_t>(len));
  comm.Broadcast(path.data(), len, DType::kU8, 0);
  return path;
}

inline void RemoveTree(comm::Communicator& comm, const std::string& path) {
  comm.Barrier();
  if (comm.rank() == 0) {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
}

inline proto::SyntheticConfig TinySyntheticConfig() {
  proto::SyntheticConfig c;
  LOOM_CHECK_OK(config::ParseTextProto(R"(
    name: "tiny" seed: 3 test_fraction: 0.25 block_rows: 128
    num_users: 40 num_items: 80 num_categories: 8
    context { name: "device" vocabulary_size: 4 zipf: 0.5 }
    context { name: "tags" vocabulary_size: 20 max_values: 3 }
    num_dense: 2
    history { name: "click" max_length: 6 min_length: 0 with_categories: true }
  )",
                                       "tiny synthetic", &c));
  return c;
}

// Rank 0 writes `rows` rows into dir/train and dir/test; every rank waits for it.
inline double GenerateTinyData(comm::Communicator& comm, const std::string& dir, int64_t rows) {
  double oracle = 0;
  if (comm.rank() == 0) {
    data::SyntheticOptions o;
    o.out_dir = dir;
    o.producer = "train tests";
    auto r = data::GenerateSynthetic(TinySyntheticConfig(), rows, o);
    LOOM_CHECK_OK(r.status());
    oracle = r->oracle_auc;
  }
  comm.Broadcast(&oracle, 1, DType::kF64, 0);
  return oracle;
}

// A small InterFormer on the tiny data: user table-wise (row-wise Adagrad), item row-wise over
// every rank (Adam), category replicated (Adagrad), device and tags by the planner.
inline proto::LoomConfig TinyConfig(const std::string& data_dir, const std::string& run_dir) {
  proto::LoomConfig c;
  LOOM_CHECK_OK(config::ParseTextProto(R"(
    model { embedding_dim: 8 num_dense_features: 2 num_sparse_features: 5 num_sequences: 2
            num_layers: 1 num_heads: 2 num_cls_tokens: 2 num_pma_tokens: 1
            num_recent_tokens: 1 head_hidden_dims: [16] }
    embedding {
      seed: 5
      tables { name: "user" num_rows: 41 dim: 8 id_mapping: ID_MAPPING_DIRECT
               optimizer { type: ROWWISE_ADAGRAD learning_rate: 0.05 } }
      tables { name: "item" num_rows: 81 dim: 8 id_mapping: ID_MAPPING_DIRECT
               optimizer { type: ADAM learning_rate: 0.01 } }
      tables { name: "category" num_rows: 9 dim: 8 id_mapping: ID_MAPPING_DIRECT
               optimizer { type: ADAGRAD learning_rate: 0.05 } }
      tables { name: "device" num_rows: 4 dim: 8 optimizer { type: SGD learning_rate: 0.1 } }
      tables { name: "tags" num_rows: 20 dim: 8 optimizer { type: ADAGRAD learning_rate: 0.05 } }
      features { name: "user_id" table: "user" }
      features { name: "item_id" table: "item" }
      features { name: "item_category" table: "category" }
      features { name: "device" table: "device" }
      features { name: "tags" kind: MULTI_HOT table: "tags" pooling: POOLING_MEAN
                 max_ids_per_sample: 3 }
      features { name: "click_items" kind: SEQUENCE table: "item" max_length: 6 }
      features { name: "click_categories" kind: SEQUENCE table: "category" max_length: 6 }
      sharding_overrides { table: "user" strategy: TABLE_WISE }
      sharding_overrides { table: "item" strategy: ROW_WISE }
      sharding_overrides { table: "category" strategy: DATA_PARALLEL }
      data_parallel_max_bytes: 0
    }
    optimizer { type: OPTIMIZER_TYPE_ADAM lr: 0.003 }
    data { reader { shuffle_buffer_rows: 256 seed: 9 } }
    train { seed: 13 global_batch_size: 32 epochs: 0 max_steps: 20 log_every_steps: 5
            eval_every_steps: 10 eval_local_batch_size: 64
            checkpoint { every_steps: 0 save_at_end: false keep_last: 3 } }
  )",
                                       "tiny config", &c));
  c.mutable_data()->add_train_files(data_dir + "/train/*.loom");
  c.mutable_data()->add_eval_files(data_dir + "/test/*.loom");
  c.mutable_train()->set_run_dir(run_dir);
  return c;
}

inline std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline std::vector<std::string> ReadLines(const std::string& path) {
  std::vector<std::string> lines;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

// The number after "\"key\": " in a JSON line (NaN when absent or null).
inline double JsonField(const std::string& line, const std::string& key) {
  const std::string k = "\"" + key + "\": ";
  const size_t p = line.find(k);
  if (p == std::string::npos) return std::nan("");
  return std::strtod(line.c_str() + p + k.size(), nullptr);
}

}  // namespace loom::train::testing

#endif  // LOOM_TESTS_TRAIN_TRAIN_TEST_UTIL_H_
