#include "csrc/train/ckpt_cli.h"

#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "csrc/proto/config_io.h"
#include "csrc/train/ckpt_convert.h"
#include "csrc/train/ckpt_export.h"

namespace loom::train {
namespace {

constexpr char kSummary[] =
    R"(  loom ckpt reshard SRC --world-size M --out DIR [--plan FILE|auto] [flags]
  loom ckpt merge   SRC --out DIR [flags]
  loom ckpt export  SRC --format safetensors --out FILE [--dtype f32|bf16|f16]
                    [--quantize-embeddings int8-rowwise]
  loom ckpt import  WEIGHTS.safetensors --template SRC --out DIR [flags]
  loom ckpt diff    A B [--weights-only] [--atol X] [--only-different]
Offline, one process, streaming table by table; each subcommand takes --help.
)";

constexpr char kSrcText[] =
    "SRC is a checkpoint directory (step-<N>, holding manifest.pb), a directory of step-*\n"
    "checkpoints (the newest is taken) or a run directory (its checkpoints/).\n";

constexpr char kReshardHelp[] =
    R"(loom ckpt reshard: rewrite a checkpoint for another world size and sharding plan.

Usage: loom ckpt reshard SRC --world-size M --out DIR [--plan FILE|auto]
                         [--positions restart-epoch|next-epoch] [--block-mb N] [--force]
                         [--dry-run] [--quiet]

Reads the checkpoint SRC (saved by any number of ranks under any plan) and writes
DIR/step-<step>/ for M ranks: every embedding table and its optimizer state re-dealt to the
target plan's shards (row r of a row-wise table goes to rank ranks[r mod n], local row r / n),
dense parameters and optimizer state copied, every global tensor bit-identical, new CRC-32Cs,
a new manifest (world size, tables' plans, rank states). Written to DIR/.tmp-step-<step>/
and renamed into place when complete; a failure leaves nothing behind. Table by table, in
blocks of --block-mb (default 64) MiB: tables larger than memory work.

  --world-size M   target number of ranks (required)
  --out DIR        the checkpoint directory to write into (train.checkpoint.dir of the run
                   that resumes; may be SRC's own directory with --force)
  --plan FILE      the target plan: a text-format EmbeddingConfig fragment holding
                   sharding_overrides { table: "t" strategy: ROW_WISE ranks: [0, 1] } ...
                   (and optionally data_parallel_max_bytes, per_rank_memory_budget_bytes);
                   they replace the config's overrides and the new manifest's config_text
                   records them. "auto": drop the config's overrides (the planner decides).
                   Default: the config's overrides. The plan is then exactly what
                   `loom train` computes at M ranks, so resuming there finds every shard.
  --positions P    training-data reader positions when M differs from the saved world size
                   (they cannot carry over): restart-epoch (default; the new data slices
                   start the current epoch again) or next-epoch (they start the next one).
                   Step, samples seen, LR schedule and optimizer state are kept.
  --block-mb N     rows per block: N MiB of a table's rows (default 64)
  --force          replace an existing DIR/step-<step>
  --dry-run        print the target plan (tables, ranks, per-rank memory); write nothing
  --quiet          no progress lines

)";

constexpr char kMergeHelp[] = R"(loom ckpt merge: a single-rank checkpoint.

Usage: loom ckpt merge SRC --out DIR [--plan FILE] [--positions P] [--block-mb N] [--force]
                       [--dry-run] [--quiet]

`reshard --world-size 1 --plan auto`: every table whole on rank 0 (or replicated, as the
planner chooses at one rank), written to DIR/step-<step>/. Flags as for reshard.

)";

constexpr char kExportHelp[] = R"(loom ckpt export: weights to safetensors, for serving and PyTorch.

Usage: loom ckpt export SRC --format safetensors --out FILE [--dtype f32|bf16|f16]
                        [--quantize-embeddings int8-rowwise] [--no-dense] [--no-embeddings]
                        [--block-mb N] [--force] [--quiet]

Writes FILE (8-byte little-endian header length, JSON header, raw little-endian data):
  <parameter>                     every dense parameter by its model name (docs/model.md)
  embedding.<table>.weight        (rows, D) every table
  with --quantize-embeddings int8-rowwise, per table instead:
  embedding.<table>.weight_int8   (rows, D) I8
  embedding.<table>.weight_scale  (rows) F32
  embedding.<table>.weight_bias   (rows) F32      w[r, c] ~= scale[r] * q[r, c] + bias[r]
Metadata: model_config and embedding_config (JSON), loom_config (text), step, source, dtype,
quantization. Optimizer state is not exported. tests/reference/load_exported.py loads the
file into the PyTorch reference model.

  --format F     safetensors (the only format)
  --out FILE     the file to write (atomically: a temporary file, then rename)
  --dtype T      f32 (default), bf16 or f16 (round to nearest even) for dense parameters
                 and unquantized tables
  --quantize-embeddings int8-rowwise
                 row-wise int8 tables (|error| <= scale / 2 per element)
  --no-dense / --no-embeddings   leave those out
  --force        replace an existing FILE

)";

constexpr char kImportHelp[] = R"(loom ckpt import: weights from safetensors into a Loom checkpoint.

Usage: loom ckpt import WEIGHTS.safetensors --template SRC --out DIR [--allow-missing]
                        [--ignore-unknown] [--reset-training-state] [--block-mb N] [--force]
                        [--quiet]

Writes DIR/step-<step>/: the checkpoint SRC (its world size, plan, optimizer state, counters)
with the weights of WEIGHTS, named as export names them ("<parameter>",
"embedding.<table>.weight" or the int8 triple, dequantized); F32, F64, BF16 and F16 are
converted to f32. Shapes must match. To initialize a run from a PyTorch-trained model: save
a checkpoint of the target config (any step), import with --reset-training-state, resume.

  --template SRC         the checkpoint giving everything but the weights (required)
  --out DIR              where to write (required)
  --allow-missing        weights absent from WEIGHTS keep the template's values
  --ignore-unknown       tensors of WEIGHTS the checkpoint does not have are skipped
  --reset-training-state step 0, optimizer state zeroed (Adagrad accumulators at the
                         table's initial_accumulator_value), trainer counters reset, reader
                         positions at the start of epoch 0
  --force                replace an existing DIR/step-<step>

)";

constexpr char kDiffHelp[] = R"(loom ckpt diff: per-tensor comparison of two checkpoints.

Usage: loom ckpt diff A B [--weights-only] [--atol X] [--only-different] [--block-mb N]
                     [--quiet]

Compares every global tensor (dense parameters, dense optimizer state, each table's weights
and optimizer state, whole, whatever world size and plan wrote A and B), streaming both side
by side. One line per tensor: name, shape, elements whose bits differ, max |a - b|, cosine
similarity a.b / (|a| |b|).

  --weights-only     skip optimizer state
  --atol X           tensors with max |a - b| <= X count as equal for the exit status
  --only-different   print only tensors that differ (or cannot be compared)

Exit status: 0 every tensor identical (or within --atol), 1 some differ or exist in one only,
2 error (a damaged checkpoint: the message names the file) or bad usage.

)";

struct Args {
  std::vector<std::string> positional;
  std::map<std::string, std::string> values;
  std::set<std::string> flags;
};

// Parses ARGS: --name value / --name=value for `with_value`, bare --name for `bare`.
bool Parse(const std::string& sub, int argc, char** argv, const std::set<std::string>& with_value,
           const std::set<std::string>& bare, Args* out, bool* help) {
  *help = false;
  for (int i = 0; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      *help = true;
      return true;
    }
    if (a.rfind("--", 0) != 0) {
      out->positional.push_back(a);
      continue;
    }
    std::string value;
    bool has_value = false;
    const size_t eq = a.find('=');
    if (eq != std::string::npos) {
      value = a.substr(eq + 1);
      a = a.substr(0, eq);
      has_value = true;
    }
    if (with_value.count(a)) {
      if (!has_value) {
        if (i + 1 >= argc) {
          std::fprintf(stderr, "loom ckpt %s: %s needs a value (see --help)\n", sub.c_str(),
                       a.c_str());
          return false;
        }
        value = argv[++i];
      }
      out->values[a] = value;
    } else if (bare.count(a) && !has_value) {
      out->flags.insert(a);
    } else {
      std::fprintf(stderr, "loom ckpt %s: unknown flag '%s' (see --help)\n", sub.c_str(),
                   a.c_str());
      return false;
    }
  }
  return true;
}

std::string HumanBytes(double b) {
  char buf[32];
  if (b >= 1024.0 * 1024 * 1024) {
    std::snprintf(buf, sizeof(buf), "%.2f GiB", b / (1024.0 * 1024 * 1024));
  } else if (b >= 1024.0 * 1024) {
    std::snprintf(buf, sizeof(buf), "%.1f MiB", b / (1024.0 * 1024));
  } else if (b >= 1024.0) {
    std::snprintf(buf, sizeof(buf), "%.1f KiB", b / 1024.0);
  } else {
    std::snprintf(buf, sizeof(buf), "%.0f B", b);
  }
  return buf;
}

std::string HumanSeconds(double s) {
  char buf[32];
  if (!std::isfinite(s)) return "?";
  if (s >= 3600) {
    std::snprintf(buf, sizeof(buf), "%dh%02dm", static_cast<int>(s / 3600),
                  static_cast<int>(std::fmod(s, 3600) / 60));
  } else if (s >= 60) {
    std::snprintf(buf, sizeof(buf), "%dm%02ds", static_cast<int>(s / 60),
                  static_cast<int>(std::fmod(s, 60)));
  } else {
    std::snprintf(buf, sizeof(buf), "%.0fs", s);
  }
  return buf;
}

// Progress lines on stderr: at most one a second, plus one per finished table.
ProgressFn Printer(bool quiet) {
  if (quiet) return nullptr;
  auto last = std::make_shared<double>(-1.0);
  auto last_tables = std::make_shared<int>(0);
  return [last, last_tables](const ConvertProgress& p) {
    const bool table_done = p.tensor_finished && p.tables_done != *last_tables;
    const bool all_done = p.tensor_finished && p.tensors_done == p.tensors_total;
    if (!table_done && !all_done && p.seconds - *last < 1.0) return;
    *last = p.seconds;
    *last_tables = p.tables_done;
    const double rate = p.seconds > 0 ? p.bytes_done / p.seconds : 0;
    const double eta = rate > 0 ? (p.bytes_total - p.bytes_done) / rate : NAN;
    const double pct = p.bytes_total > 0 ? 100.0 * p.bytes_done / p.bytes_total : 100.0;
    std::fprintf(stderr, "%s: tables %d/%d, tensors %d/%d, %s / %s (%.0f%%), %s/s, ETA %s  [%s]\n",
                 p.stage.c_str(), p.tables_done, p.tables_total, p.tensors_done, p.tensors_total,
                 HumanBytes(static_cast<double>(p.bytes_done)).c_str(),
                 HumanBytes(static_cast<double>(p.bytes_total)).c_str(), pct,
                 HumanBytes(rate).c_str(), all_done ? "0s" : HumanSeconds(eta).c_str(),
                 p.tensor.c_str());
    std::fflush(stderr);
  };
}

bool ParseInt64(const std::string& s, int64_t* out) {
  char* end = nullptr;
  const long long v = std::strtoll(s.c_str(), &end, 10);
  if (end == s.c_str() || *end != '\0') return false;
  *out = v;
  return true;
}

int Fail(const std::string& sub, const Status& s) {
  std::fprintf(stderr, "loom ckpt %s: %s\n", sub.c_str(), s.message().c_str());
  return 1;
}

int Usage(const std::string& sub, const std::string& what) {
  std::fprintf(stderr, "loom ckpt %s: %s (see --help)\n", sub.c_str(), what.c_str());
  return 2;
}

void PrintResult(const ConvertResult& r, bool plan) {
  if (plan) std::printf("%s", r.plan.c_str());
  for (const auto& n : r.notes) std::printf("note: %s\n", n.c_str());
}

// Shared by reshard and merge.
int ReshardCommand(const std::string& sub, int argc, char** argv, bool merge) {
  Args a;
  bool help = false;
  if (!Parse(sub, argc, argv, {"--world-size", "--out", "--plan", "--positions", "--block-mb"},
             {"--force", "--dry-run", "--quiet"}, &a, &help)) {
    return 2;
  }
  if (help) {
    std::printf("%s%s", merge ? kMergeHelp : kReshardHelp, kSrcText);
    return 0;
  }
  if (a.positional.size() != 1) return Usage(sub, "expected one SRC");
  ReshardOptions o;
  if (!merge) {
    int64_t m = 0;
    if (!a.values.count("--world-size")) return Usage(sub, "--world-size is required");
    if (!ParseInt64(a.values["--world-size"], &m) || m < 1 || m > (1 << 20)) {
      return Usage(
          sub, "--world-size: expected a positive integer, got '" + a.values["--world-size"] + "'");
    }
    o.world_size = static_cast<int>(m);
  }
  const bool dry = a.flags.count("--dry-run") > 0;
  if (!a.values.count("--out") && !dry) return Usage(sub, "--out is required");
  if (a.values.count("--plan")) {
    o.has_plan = true;
    const std::string& f = a.values["--plan"];
    if (f != "auto") {
      Status s = config::ParseTextProtoFileInto(f, &o.plan);
      if (!s.ok()) return Fail(sub, s);
      if (o.plan.tables_size() > 0 || o.plan.features_size() > 0 || o.plan.has_seed()) {
        return Fail(sub, InvalidArgumentError(
                             f + ": a plan file holds sharding_overrides (and optionally "
                                 "data_parallel_max_bytes, per_rank_memory_budget_bytes) only"));
      }
    }
  }
  if (a.values.count("--positions")) {
    const std::string& p = a.values["--positions"];
    if (p == "restart-epoch") {
      o.positions = PositionPolicy::kRestartEpoch;
    } else if (p == "next-epoch") {
      o.positions = PositionPolicy::kNextEpoch;
    } else {
      return Usage(sub, "--positions: restart-epoch or next-epoch, got '" + p + "'");
    }
  }
  if (a.values.count("--block-mb")) {
    int64_t mb = 0;
    if (!ParseInt64(a.values["--block-mb"], &mb) || mb < 1) {
      return Usage(sub, "--block-mb: expected a positive integer");
    }
    o.block_bytes = mb << 20;
  }
  o.overwrite = a.flags.count("--force") > 0;
  o.progress = Printer(a.flags.count("--quiet") > 0);
  if (merge) {
    o.world_size = 1;
    if (!o.has_plan) {
      o.has_plan = true;
      o.plan.clear_sharding_overrides();
    }
  }
  if (dry) {
    auto path = ResolveCheckpointPath(a.positional[0]);
    if (!path.ok()) return Fail(sub, path.status());
    auto src = CheckpointSource::Open(*path);
    if (!src.ok()) return Fail(sub, src.status());
    proto::LoomConfig cfg;
    auto plan = PlanReshard((*src)->manifest(), o, &cfg);
    if (!plan.ok()) return Fail(sub, plan.status());
    std::printf("%s: %d ranks -> %d ranks\n", path->c_str(), (*src)->manifest().world_size(),
                o.world_size);
    auto spec = embedding::BuildEmbeddingSpec(cfg.embedding(), o.world_size);
    if (spec.ok()) std::printf("%s", plan->ToString(*spec).c_str());
    return 0;
  }
  auto r = merge ? Merge(a.positional[0], a.values["--out"], o)
                 : Reshard(a.positional[0], a.values["--out"], o);
  if (!r.ok()) return Fail(sub, r.status());
  PrintResult(*r, true);
  std::printf("loom ckpt %s: wrote %s (%s of data) for %d rank%s\n", sub.c_str(), r->path.c_str(),
              HumanBytes(static_cast<double>(r->bytes_written)).c_str(), o.world_size,
              o.world_size == 1 ? "" : "s");
  return 0;
}

int ExportCommand(const std::string& sub, int argc, char** argv) {
  Args a;
  bool help = false;
  if (!Parse(sub, argc, argv,
             {"--format", "--out", "--dtype", "--quantize-embeddings", "--block-mb"},
             {"--no-dense", "--no-embeddings", "--force", "--quiet"}, &a, &help)) {
    return 2;
  }
  if (help) {
    std::printf("%s%s", kExportHelp, kSrcText);
    return 0;
  }
  if (a.positional.size() != 1) return Usage(sub, "expected one SRC");
  const std::string format = a.values.count("--format") ? a.values["--format"] : "safetensors";
  if (format != "safetensors")
    return Usage(sub, "--format: only safetensors, got '" + format + "'");
  if (!a.values.count("--out")) return Usage(sub, "--out is required");
  ExportOptions o;
  if (a.values.count("--dtype")) {
    const std::string& d = a.values["--dtype"];
    if (d == "f32") {
      o.dtype = DType::kF32;
    } else if (d == "bf16") {
      o.dtype = DType::kBF16;
    } else if (d == "f16") {
      o.dtype = DType::kF16;
    } else {
      return Usage(sub, "--dtype: f32, bf16 or f16, got '" + d + "'");
    }
  }
  if (a.values.count("--quantize-embeddings")) {
    if (a.values["--quantize-embeddings"] != "int8-rowwise") {
      return Usage(sub, "--quantize-embeddings: only int8-rowwise, got '" +
                            a.values["--quantize-embeddings"] + "'");
    }
    o.quantize_embeddings_int8 = true;
  }
  if (a.values.count("--block-mb")) {
    int64_t mb = 0;
    if (!ParseInt64(a.values["--block-mb"], &mb) || mb < 1) {
      return Usage(sub, "--block-mb: expected a positive integer");
    }
    o.block_bytes = mb << 20;
  }
  o.dense = !a.flags.count("--no-dense");
  o.embeddings = !a.flags.count("--no-embeddings");
  o.overwrite = a.flags.count("--force") > 0;
  o.progress = Printer(a.flags.count("--quiet") > 0);
  auto r = ExportSafetensors(a.positional[0], a.values["--out"], o);
  if (!r.ok()) return Fail(sub, r.status());
  std::printf("loom ckpt export: wrote %s (%" PRId64 " tensors, %s)\n", r->path.c_str(), r->tensors,
              HumanBytes(static_cast<double>(r->bytes)).c_str());
  return 0;
}

int ImportCommand(const std::string& sub, int argc, char** argv) {
  Args a;
  bool help = false;
  if (!Parse(
          sub, argc, argv, {"--template", "--out", "--block-mb"},
          {"--allow-missing", "--ignore-unknown", "--reset-training-state", "--force", "--quiet"},
          &a, &help)) {
    return 2;
  }
  if (help) {
    std::printf("%s%s", kImportHelp, kSrcText);
    return 0;
  }
  if (a.positional.size() != 1) return Usage(sub, "expected one WEIGHTS.safetensors");
  if (!a.values.count("--template")) return Usage(sub, "--template is required");
  if (!a.values.count("--out")) return Usage(sub, "--out is required");
  ImportOptions o;
  o.allow_missing = a.flags.count("--allow-missing") > 0;
  o.ignore_unknown = a.flags.count("--ignore-unknown") > 0;
  o.reset_training_state = a.flags.count("--reset-training-state") > 0;
  o.overwrite = a.flags.count("--force") > 0;
  if (a.values.count("--block-mb")) {
    int64_t mb = 0;
    if (!ParseInt64(a.values["--block-mb"], &mb) || mb < 1) {
      return Usage(sub, "--block-mb: expected a positive integer");
    }
    o.block_bytes = mb << 20;
  }
  o.progress = Printer(a.flags.count("--quiet") > 0);
  auto r = ImportSafetensors(a.positional[0], a.values["--template"], a.values["--out"], o);
  if (!r.ok()) return Fail(sub, r.status());
  PrintResult(*r, false);
  std::printf("loom ckpt import: wrote %s (%s of data)\n", r->path.c_str(),
              HumanBytes(static_cast<double>(r->bytes_written)).c_str());
  return 0;
}

int DiffCommand(const std::string& sub, int argc, char** argv) {
  Args a;
  bool help = false;
  if (!Parse(sub, argc, argv, {"--atol", "--block-mb"},
             {"--weights-only", "--only-different", "--quiet"}, &a, &help)) {
    return 2;
  }
  if (help) {
    std::printf("%s%s", kDiffHelp, kSrcText);
    return 0;
  }
  if (a.positional.size() != 2) return Usage(sub, "expected two checkpoints A and B");
  DiffOptions o;
  o.optimizer_state = !a.flags.count("--weights-only");
  double atol = 0;
  if (a.values.count("--atol")) {
    char* end = nullptr;
    atol = std::strtod(a.values["--atol"].c_str(), &end);
    if (end == a.values["--atol"].c_str() || *end != '\0' || !(atol >= 0)) {
      return Usage(sub, "--atol: expected a number >= 0");
    }
  }
  if (a.values.count("--block-mb")) {
    int64_t mb = 0;
    if (!ParseInt64(a.values["--block-mb"], &mb) || mb < 1) {
      return Usage(sub, "--block-mb: expected a positive integer");
    }
    o.block_bytes = mb << 20;
  }
  o.progress = Printer(a.flags.count("--quiet") > 0);
  auto r = DiffCheckpoints(a.positional[0], a.positional[1], o);
  if (!r.ok()) {
    std::fprintf(stderr, "loom ckpt diff: %s\n", r.status().message().c_str());
    return 2;
  }
  const bool only = a.flags.count("--only-different") > 0;
  std::printf("%-56s %-18s %14s %14s %12s\n", "tensor", "shape", "different", "max|a-b|", "cosine");
  int differing = 0, identical = 0;
  for (const TensorDiff& d : *r) {
    std::string shape = "(";
    for (size_t i = 0; i < d.shape.size(); ++i) {
      shape += (i ? ", " : "") + std::to_string(d.shape[i]);
    }
    shape += ")";
    const bool equal = d.comparable && (d.num_different == 0 || d.max_abs_diff <= atol);
    if (equal) {
      ++identical;
    } else {
      ++differing;
    }
    if (only && equal) continue;
    if (!d.comparable) {
      std::printf("%-56s %-18s %s\n", d.name.c_str(), shape.c_str(), d.note.c_str());
    } else {
      std::printf("%-56s %-18s %14" PRId64 " %14.6g %12.9f\n", d.name.c_str(), shape.c_str(),
                  d.num_different, d.max_abs_diff, d.cosine);
    }
  }
  std::printf("loom ckpt diff: %d tensors equal%s, %d differ\n", identical,
              atol > 0 ? " (within --atol)" : "", differing);
  return differing == 0 ? 0 : 1;
}

}  // namespace

bool IsCkptConvertCommand(const std::string& sub) {
  return sub == "reshard" || sub == "merge" || sub == "export" || sub == "import" || sub == "diff";
}

const char* CkptConvertUsage() { return kSummary; }

int RunCkptCommand(const std::string& sub, int argc, char** argv) {
  if (sub == "reshard") return ReshardCommand(sub, argc, argv, false);
  if (sub == "merge") return ReshardCommand(sub, argc, argv, true);
  if (sub == "export") return ExportCommand(sub, argc, argv);
  if (sub == "import") return ImportCommand(sub, argc, argv);
  if (sub == "diff") return DiffCommand(sub, argc, argv);
  std::fprintf(stderr, "loom ckpt: unknown command '%s'\n%s", sub.c_str(), kSummary);
  return 2;
}

}  // namespace loom::train
