// Helpers of the trainer and checkpoint tests: a shared temporary directory, a tiny synthetic
// data set (tests/data/tiny_synthetic.pbtxt) and a small InterFormer config over it
// (tests/data/tiny_train.pbtxt, shared with the end-to-end scripts) that exercises every
// sharding strategy (TW, RW, DP) and every sparse optimizer with state (Adagrad, row-wise
// Adagrad, Adam). Needs LOOM_SOURCE_DIR defined (tests/train/CMakeLists.txt).
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

// tests/data/tiny_synthetic.pbtxt.
inline proto::SyntheticConfig TinySyntheticConfig() {
  auto c = config::ParseTextProtoFile<proto::SyntheticConfig>(std::string(LOOM_SOURCE_DIR) +
                                                              "/tests/data/tiny_synthetic.pbtxt");
  LOOM_CHECK_OK(c.status());
  return *c;
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

// tests/data/tiny_train.pbtxt (a small InterFormer exercising every sharding strategy and
// sparse optimizer) over the tiny data in data_dir, writing to run_dir.
inline proto::LoomConfig TinyConfig(const std::string& data_dir, const std::string& run_dir) {
  const std::string path = std::string(LOOM_SOURCE_DIR) + "/tests/data/tiny_train.pbtxt";
  std::ifstream in(path);
  CHECK(in) << path << ": cannot open";
  std::stringstream text;
  text << in.rdbuf();
  std::string s = text.str();
  for (size_t at = s.find("@DATA@"); at != std::string::npos; at = s.find("@DATA@", at)) {
    s.replace(at, 6, data_dir);
  }
  proto::LoomConfig c;
  LOOM_CHECK_OK(config::ParseTextProto(s, path, &c));
  // The unit tests log more often and save only where a test asks for it.
  c.mutable_train()->set_log_every_steps(5);
  c.mutable_train()->mutable_checkpoint()->set_save_at_end(false);
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
