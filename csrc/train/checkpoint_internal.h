// Small helpers shared by the checkpoint writer and reader (checkpoint.cc) and the offline
// checkpoint tools (ckpt_convert.cc, ckpt_export.cc). Not a public API: include only from
// those files.
#ifndef LOOM_TRAIN_CHECKPOINT_INTERNAL_H_
#define LOOM_TRAIN_CHECKPOINT_INTERNAL_H_

#include <cstdint>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <string>

#include "csrc/embedding/sharding_plan.h"
#include "csrc/proto/checkpoint.pb.h"

namespace loom::train::internal {

// "1a2b3c4d": a CRC-32C as the manifest and the messages print it.
inline std::string Hex8(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "%08x", v);
  return buf;
}

// The last two components of a path ("step-000000000100/dense.bin"), for messages.
inline std::string ShortPath(const std::string& path) {
  const std::filesystem::path p(path);
  return (p.parent_path().filename() / p.filename()).string();
}

// "(4, 8)": a shape for messages; `dims` is any sequence of integers (std::vector, a proto
// repeated field).
template <class Dims>
std::string ShapeText(const Dims& dims) {
  std::string s = "(";
  bool first = true;
  for (const auto d : dims) {
    s += (first ? "" : ", ") + std::to_string(d);
    first = false;
  }
  return s + ")";
}

// "2026-11-28T08:00:00Z": the manifest's creation time.
inline std::string UtcNow() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// The manifest's name for a sharding strategy.
inline proto::EmbeddingPiece::Strategy ToPieceStrategy(embedding::Strategy s) {
  switch (s) {
    case embedding::Strategy::kTableWise:
      return proto::EmbeddingPiece::TABLE_WISE;
    case embedding::Strategy::kRowWise:
      return proto::EmbeddingPiece::ROW_WISE;
    case embedding::Strategy::kColumnWise:
      return proto::EmbeddingPiece::COLUMN_WISE;
    case embedding::Strategy::kDataParallel:
      return proto::EmbeddingPiece::DATA_PARALLEL;
  }
  return proto::EmbeddingPiece::TABLE_WISE;
}

}  // namespace loom::train::internal

#endif  // LOOM_TRAIN_CHECKPOINT_INTERNAL_H_
