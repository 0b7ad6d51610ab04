// loom_ckpt: offline inspection of Loom checkpoints (csrc/train/checkpoint.h,
// docs/checkpoint-format.md). No MPI: one process reads every file.
#include <algorithm>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include <glog/logging.h>

#include "csrc/core/logging.h"
#include "csrc/proto/checkpoint.pb.h"
#include "csrc/train/checkpoint.h"
#include "csrc/train/ckpt_cli.h"

namespace loom::train {
namespace {
namespace fs = std::filesystem;

constexpr char kUsage[] = R"(loom ckpt: inspect, verify and convert Loom checkpoints.

Usage:
  loom ckpt inspect PATH [--verify] [--tensors]
  loom ckpt list DIR [--verify]

PATH is a checkpoint directory (step-<N>, holding manifest.pb), a checkpoint directory's
parent (the newest checkpoint in it is inspected) or a run directory (its checkpoints/).

inspect   prints the step, world size, model and config hashes, the RNG state, every rank's
          data reader position, the trainer's counters, the embedding tables (shape,
          optimizer, sharding, row-norm statistics), the dense parameters and the files.
  --verify   recompute the CRC-32C of every file and tensor (the default checks sizes only)
  --tensors  list every tensor (name, shape, dtype, file, offset, CRC)
list      lists the checkpoints of DIR (or DIR/checkpoints), newest first, with their state
          (OK or what is wrong); sizes only, or every checksum with --verify.

Exit status: 0 when the checkpoint is intact, 1 when it is damaged or cannot be read (the
message names the file and the fault), 2 for bad usage.
)";

std::string Hex16(uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof(buf), "%016" PRIx64, v);
  return buf;
}
std::string Hex8(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "%08x", v);
  return buf;
}
std::string Shape(const proto::TensorEntry& e) {
  std::string s = "(";
  for (int i = 0; i < e.shape_size(); ++i) s += (i ? ", " : "") + std::to_string(e.shape(i));
  return s + ")";
}
const char* StrategyName(proto::EmbeddingPiece::Strategy s) {
  switch (s) {
    case proto::EmbeddingPiece::TABLE_WISE:
      return "TW";
    case proto::EmbeddingPiece::ROW_WISE:
      return "RW";
    case proto::EmbeddingPiece::COLUMN_WISE:
      return "CW";
    case proto::EmbeddingPiece::DATA_PARALLEL:
      return "DP";
  }
  return "?";
}

// Resolves PATH to a checkpoint directory.
StatusOr<std::string> ResolveCheckpoint(const std::string& path) {
  if (fs::exists(fs::path(path) / kManifestFileName)) return path;
  for (const std::string& dir : {path, (fs::path(path) / "checkpoints").string()}) {
    LOOM_ASSIGN_OR_RETURN(auto list, ListCheckpoints(dir));
    if (!list.empty()) return list.front().path;
  }
  return NotFoundError(path + ": not a checkpoint (no " + kManifestFileName +
                       ") and no step-* checkpoint below it");
}

struct RowStats {
  int64_t rows = 0;
  double sum_norm = 0, min_norm = std::numeric_limits<double>::infinity(), max_norm = 0;
  double sum_sq = 0;
  int64_t zero_rows = 0;
};

// Row-norm statistics of a table from its weight pieces (column-wise pieces are combined).
StatusOr<RowStats> TableStats(const std::string& ckpt, const proto::CheckpointManifest& m,
                              const proto::EmbeddingTableInfo& table) {
  std::vector<double> row_sq(static_cast<size_t>(table.num_rows()), 0.0);
  for (const auto& e : m.tensors()) {
    if (e.kind() != proto::TensorEntry::EMBEDDING_WEIGHT || e.piece().table() != table.name()) {
      continue;
    }
    LOOM_ASSIGN_OR_RETURN(std::vector<char> bytes, ReadTensorBytes(ckpt, e));
    const auto& p = e.piece();
    const float* w = reinterpret_cast<const float*>(bytes.data());
    for (int64_t r = 0; r < p.num_rows(); ++r) {
      const int64_t g = r * p.row_stride() + p.row_offset();
      if (g < 0 || g >= table.num_rows()) {
        return DataLossError("tensor " + e.name() + ": row " + std::to_string(g) +
                             " outside the table");
      }
      double s = 0;
      for (int c = 0; c < p.width(); ++c) {
        const double x = w[r * p.width() + c];
        s += x * x;
      }
      row_sq[static_cast<size_t>(g)] += s;
    }
  }
  RowStats st;
  for (double s : row_sq) {
    const double n = std::sqrt(s);
    ++st.rows;
    st.sum_norm += n;
    st.sum_sq += s;
    st.min_norm = std::min(st.min_norm, n);
    st.max_norm = std::max(st.max_norm, n);
    if (s == 0) ++st.zero_rows;
  }
  return st;
}

int Inspect(const std::string& path, bool verify, bool list_tensors) {
  auto resolved = ResolveCheckpoint(path);
  if (!resolved.ok()) {
    std::fprintf(stderr, "loom ckpt: %s\n", resolved.status().message().c_str());
    return 1;
  }
  const std::string ckpt = *resolved;
  auto manifest = ReadManifest(ckpt);
  if (!manifest.ok()) {
    std::fprintf(stderr, "loom ckpt: %s: %s\n", ckpt.c_str(), manifest.status().message().c_str());
    return 1;
  }
  const proto::CheckpointManifest& m = *manifest;
  const proto::TrainerState& t = m.trainer();
  std::printf("checkpoint %s\n", ckpt.c_str());
  std::printf("  format %d, written %s by %s\n", m.format_version(), m.created_utc().c_str(),
              m.producer().c_str());
  std::printf("  step %" PRId64 ", epoch %" PRId64 ", samples seen %" PRId64 ", world size %d\n",
              m.step(), t.epoch(), t.samples_seen(), m.world_size());
  std::printf("  model %s, model_hash %s, config_hash %s (config: %zu bytes of text)\n",
              m.model_type().c_str(), Hex16(m.model_hash()).c_str(), Hex16(m.config_hash()).c_str(),
              m.config_text().size());
  std::printf("  rng %s: seed %" PRIu64 ", embedding seed %" PRIu64 ", reader seed %" PRIu64
              ", next step %" PRId64 "\n",
              m.rng().generator().c_str(), m.rng().seed(), m.rng().embedding_seed(),
              m.rng().reader_seed(), m.rng().next_step());
  std::printf("  trainer: %" PRId64 " evaluations (last at step %" PRId64
              "), best metric %.6g at step %" PRId64
              ", %d without improvement%s, %.1f s of "
              "training\n",
              t.evaluations(), t.last_eval_step(), t.best_metric(), t.best_step(),
              t.evals_without_improvement(), t.stopped_early() ? ", stopped early" : "",
              t.elapsed_train_seconds());
  const proto::DenseOptimizerState& o = m.dense_optimizer();
  std::printf(
      "  dense optimizer %s, %" PRId64 " updates applied%s\n",
      proto::OptimizerConfig::Type_Name(o.type()).c_str(), o.step(),
      o.has_plateau() ? (", plateau scale " + std::to_string(o.plateau().scale())).c_str() : "");
  std::printf("  data positions (training-data slices, per rank):\n");
  for (const auto& r : m.ranks()) {
    for (const auto& sl : r.data_slices()) {
      const proto::ReaderPosition& p = sl.position();
      std::printf("    rank %d (%s) slice %d/%d: epoch %" PRId64 ", %" PRId64
                  " rows into the epoch, chunk %" PRId64 " + %" PRId64
                  " rows; file %d block %" PRId64 " record %" PRId64 "\n",
                  r.rank(), r.host().c_str(), sl.slice(), sl.num_slices(), p.epoch(),
                  p.rows_in_epoch(), p.chunk_cursor(), p.window_offset(), p.file_index(), p.block(),
                  p.record());
    }
  }

  int exit_code = 0;
  std::printf("  embedding tables:\n");
  std::printf("    %-20s %12s %5s %-16s %-8s %10s %10s %10s %8s\n", "table", "rows", "D",
              "optimizer", "sharding", "mean|row|", "min|row|", "max|row|", "zero");
  for (const auto& tb : m.tables()) {
    std::string sharding = StrategyName(tb.strategy());
    if (!tb.ranks().empty()) {
      sharding += ":";
      for (int i = 0; i < tb.ranks_size(); ++i)
        sharding += (i ? "," : "") + std::to_string(tb.ranks(i));
    }
    auto st = TableStats(ckpt, m, tb);
    if (!st.ok()) {
      std::printf("    %-20s %12" PRId64 " %5d %-16s %-8s  (cannot read: %s)\n", tb.name().c_str(),
                  tb.num_rows(), tb.dim(), tb.optimizer().c_str(), sharding.c_str(),
                  st.status().message().c_str());
      exit_code = 1;
      continue;
    }
    std::printf("    %-20s %12" PRId64 " %5d %-16s %-8s %10.4g %10.4g %10.4g %8" PRId64 "\n",
                tb.name().c_str(), tb.num_rows(), tb.dim(), tb.optimizer().c_str(),
                sharding.c_str(), st->sum_norm / std::max<int64_t>(st->rows, 1), st->min_norm,
                st->max_norm, st->zero_rows);
  }
  int64_t dense_elems = 0, dense_tensors = 0;
  double dense_sq = 0;
  for (const auto& e : m.tensors()) {
    if (e.kind() != proto::TensorEntry::DENSE_PARAMETER) continue;
    ++dense_tensors;
    auto bytes = ReadTensorBytes(ckpt, e);
    if (!bytes.ok()) {
      std::printf("    dense %s: %s\n", e.name().c_str(), bytes.status().message().c_str());
      exit_code = 1;
      continue;
    }
    const float* w = reinterpret_cast<const float*>(bytes->data());
    const int64_t n = static_cast<int64_t>(bytes->size() / 4);
    for (int64_t i = 0; i < n; ++i) dense_sq += static_cast<double>(w[i]) * w[i];
    dense_elems += n;
  }
  std::printf("  dense parameters: %" PRId64 " tensors, %" PRId64 " elements, L2 norm %.6g\n",
              dense_tensors, dense_elems, std::sqrt(dense_sq));
  std::printf("  files:\n");
  uint64_t total = 0;
  for (const auto& f : m.files()) {
    std::printf("    %-24s rank %-4d %14" PRIu64 " bytes  crc32c %s\n", f.name().c_str(),
                f.writer_rank(), f.size_bytes(), Hex8(f.crc32c()).c_str());
    total += f.size_bytes();
  }
  std::printf("    %" PRIu64 " bytes in %d files, %d tensors\n", total, m.files_size(),
              m.tensors_size());
  if (list_tensors) {
    std::printf("  tensors:\n");
    for (const auto& e : m.tensors()) {
      std::printf("    %-56s %-5s %-16s %-22s @%-12" PRIu64 " crc32c %s\n", e.name().c_str(),
                  DTypeName(FromTensorDType(e.dtype())), Shape(e).c_str(), e.file().c_str(),
                  e.offset(), Hex8(e.crc32c()).c_str());
    }
  }
  Status v = VerifyCheckpoint(ckpt, m, verify);
  if (v.ok()) {
    std::printf("  %s: OK\n", verify ? "verify (sizes and CRC-32C of every file and tensor)"
                                     : "check (files present with their sizes; --verify "
                                       "recomputes checksums)");
  } else {
    std::printf("  %s: FAILED\n", verify ? "verify" : "check");
    std::fprintf(stderr, "loom ckpt: %s: %s\n", ckpt.c_str(), v.message().c_str());
    exit_code = 1;
  }
  return exit_code;
}

int List(const std::string& dir, bool verify) {
  std::string d = dir;
  auto list = ListCheckpoints(d);
  if (list.ok() && list->empty() && fs::exists(fs::path(d) / "checkpoints")) {
    d = (fs::path(d) / "checkpoints").string();
    list = ListCheckpoints(d);
  }
  if (!list.ok()) {
    std::fprintf(stderr, "loom ckpt: %s\n", list.status().message().c_str());
    return 1;
  }
  if (list->empty()) {
    std::printf("%s: no checkpoints\n", d.c_str());
    return 0;
  }
  int code = 0;
  for (const auto& c : *list) {
    auto m = ReadManifest(c.path);
    Status s = m.ok() ? VerifyCheckpoint(c.path, *m, verify) : m.status();
    std::printf("%-60s step %-10" PRId64 " %s\n", c.path.c_str(), c.step,
                s.ok() ? "OK" : ("DAMAGED: " + s.message()).c_str());
    if (!s.ok()) code = 1;
  }
  return code;
}

int Main(int argc, char** argv) {
  InitLogging(argv[0]);
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h")) {
    std::FILE* out = argc < 2 ? stderr : stdout;
    std::fputs(kUsage, out);
    std::fprintf(out, "\n%s", CkptConvertUsage());
    return argc < 2 ? 2 : 0;
  }
  const std::string cmd = argv[1];
  // reshard, merge, export, import, diff: csrc/train/ckpt_cli.h parses its own flags.
  if (IsCkptConvertCommand(cmd)) return RunCkptCommand(cmd, argc - 2, argv + 2);
  std::vector<std::string> positional;
  bool verify = false, tensors = false;
  for (int i = 2; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--verify") {
      verify = true;
    } else if (a == "--tensors") {
      tensors = true;
    } else if (a == "--help" || a == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    } else if (a.rfind("--", 0) == 0) {
      std::fprintf(stderr, "loom ckpt: unknown flag '%s' (see --help)\n", a.c_str());
      return 2;
    } else {
      positional.push_back(a);
    }
  }
  if (cmd == "inspect") {
    if (positional.size() != 1) {
      std::fprintf(stderr, "loom ckpt inspect: expected one PATH (see --help)\n");
      return 2;
    }
    return Inspect(positional[0], verify, tensors);
  }
  if (cmd == "list") {
    if (positional.size() != 1 || tensors) {
      std::fprintf(stderr, "loom ckpt list: expected one DIR and at most --verify (see --help)\n");
      return 2;
    }
    return List(positional[0], verify);
  }
  std::fprintf(stderr, "loom ckpt: unknown command '%s' (see --help)\n", cmd.c_str());
  return 2;
}

}  // namespace
}  // namespace loom::train

int main(int argc, char** argv) { return loom::train::Main(argc, argv); }
