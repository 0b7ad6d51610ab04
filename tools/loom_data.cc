// loom data: converters, the synthetic generator and the shard inspector (csrc/data).
// A thin main: flags in, one library call, a summary out. `loom data --help` lists commands.
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include <google/protobuf/text_format.h>

#include "csrc/core/logging.h"
#include "csrc/core/status.h"
#include "csrc/data/csv_converter.h"
#include "csrc/data/format.h"
#include "csrc/data/movielens.h"
#include "csrc/data/schema.h"
#include "csrc/data/shard_file.h"
#include "csrc/data/synthetic.h"
#include "csrc/data/text_input.h"

namespace loom::data {
namespace {

constexpr const char* kUsage =
    R"(loom data: convert logs to the Loom format, generate synthetic logs, inspect shards.

Usage: loom data <command> [flags]     (loom data <command> --help for details)

Commands:
  convert-csv        delimited text (CSV/TSV, BARS form) with a DelimitedTextConfig
  convert-criteo     the Criteo display-ads TSV (label, 13 integers, 26 hex categories)
  convert-movielens  MovieLens 100K / 1M under the MovieLens CTR protocol v1
  synthetic          industrial-like synthetic logs with a planted click model (oracle AUC)
  inspect            a shard's schema, blocks and row counts; verifies every checksum

Formats and protocols: docs/data-format.md, docs/datasets.md.
)";

struct Command {
  const char* name;
  const char* help;
  // flag -> true if it takes a value
  std::map<std::string, bool> flags;
};

const std::map<std::string, Command>& Commands() {
  static const auto* commands = new std::map<std::string, Command>{
      {"convert-csv",
       {"convert-csv",
        R"(loom data convert-csv --schema S.pbtxt --input A.csv [--input B.csv ...] --out DIR
       [--shard-rows N] [--block-rows N] [--vocab-from DIR]
       [--bad-records threshold|skip|fail] [--max-bad-records N]

  --schema       a DelimitedTextConfig (.pbtxt): the DataSchema to produce and how each column
                 fills it (csrc/proto/data.proto; examples in configs/data/bars_*.pbtxt)
  --input        input file(s), converted in order into one data set
  --out          output directory: part-NNNNN.loom, schema.pbtxt, vocab/*.tsv, convert.json
  --shard-rows   rows per shard file (0 = one file; default: the config's)
  --block-rows   rows per block (default: the config's, 8192)
  --vocab-from   a previous output directory whose vocabularies to use, frozen (test splits)
  --bad-records  policy for malformed lines (default: the config's; threshold = skip until
                 more than --max-bad-records, then fail)
)",
        {{"schema", true},
         {"input", true},
         {"out", true},
         {"shard-rows", true},
         {"block-rows", true},
         {"vocab-from", true},
         {"bad-records", true},
         {"max-bad-records", true}}}},
      {"convert-criteo",
       {"convert-criteo",
        R"(loom data convert-criteo --input day_0 [--input day_1 ...] --out DIR
       [--hash-buckets N] [--shard-rows N] [--block-rows N]
       [--bad-records threshold|skip|fail] [--max-bad-records N]

  Tab-separated, no header: label, I1..I13 (dense: log(1 + max(x, 0)), empty = 0),
  C1..C26 (hex categories: id = 1 + Hash64(text) mod (N - 1), empty = 0).
  --hash-buckets  ids per categorical feature, N (default 4194304)
)",
        {{"input", true},
         {"out", true},
         {"hash-buckets", true},
         {"shard-rows", true},
         {"block-rows", true},
         {"bad-records", true},
         {"max-bad-records", true}}}},
      {"convert-movielens",
       {"convert-movielens",
        R"(loom data convert-movielens --variant 100k|1m --input DIR --out DIR
       [--bad-records threshold|skip|fail] [--max-bad-records N]

  --input  the folder with u.data, u.user, u.item (100k) or ratings.dat, users.dat,
           movies.dat (1m)
  --out    writes train/, test/, schema.pbtxt and movielens.json
  The protocol (split, histories, features) is MovieLens CTR protocol v1, docs/datasets.md.
)",
        {{"variant", true},
         {"input", true},
         {"out", true},
         {"bad-records", true},
         {"max-bad-records", true}}}},
      {"synthetic",
       {"synthetic",
        R"(loom data synthetic --config S.pbtxt --rows N --out DIR [--seed N]

  --config  a SyntheticConfig (.pbtxt), e.g. configs/data/synthetic_quickstart.pbtxt
  --rows    rows to generate (train = the first 1 - test_fraction of them, test = the rest)
  --out     writes train/, test/, schema.pbtxt, synthetic_config.pbtxt and synthetic.json
  --seed    overrides the config's seed
  Prints the oracle (Bayes-optimal) AUC of the test split, also written to synthetic.json.
)",
        {{"config", true}, {"rows", true}, {"out", true}, {"seed", true}}}},
      {"inspect",
       {"inspect",
        R"(loom data inspect FILE [FILE ...] [--blocks N] [--rows N] [--no-verify]

  Prints each shard's producer, schema, block table (the first and last N/2 blocks; default
  10), row count and id statistics, then reads every block and checks its checksums (unless
  --no-verify). --rows N prints the first N rows. Exit status 1 if any file is damaged.
)",
        {{"blocks", true}, {"rows", true}, {"no-verify", false}}}},
  };
  return *commands;
}

struct Flags {
  std::map<std::string, std::vector<std::string>> values;
  std::vector<std::string> positional;
  bool help = false;

  bool Has(const std::string& f) const { return values.count(f) > 0; }
  std::string Get(const std::string& f, const std::string& def = "") const {
    auto it = values.find(f);
    return it == values.end() ? def : it->second.back();
  }
};

Status ParseFlags(const Command& cmd, int argc, char** argv, Flags* flags) {
  for (int i = 0; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "-h" || a == "--help") {
      flags->help = true;
      continue;
    }
    if (a.rfind("--", 0) != 0) {
      flags->positional.push_back(a);
      continue;
    }
    std::string name = a.substr(2), value;
    const size_t eq = name.find('=');
    const bool inline_value = eq != std::string::npos;
    if (inline_value) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
    }
    auto it = cmd.flags.find(name);
    if (it == cmd.flags.end()) {
      return InvalidArgumentError(std::string(cmd.name) + ": unknown flag --" + name +
                                  " (see loom data " + cmd.name + " --help)");
    }
    if (it->second && !inline_value) {
      if (i + 1 >= argc) {
        return InvalidArgumentError(std::string(cmd.name) + ": --" + name + " needs a value");
      }
      value = argv[++i];
    }
    flags->values[name].push_back(value);
  }
  return Status::Ok();
}

Status Require(const Flags& f, const Command& cmd, std::initializer_list<const char*> names) {
  for (const char* n : names) {
    if (!f.Has(n)) {
      return InvalidArgumentError(std::string(cmd.name) + ": --" + n + " is required");
    }
  }
  return Status::Ok();
}

Status IntFlag(const Flags& f, const std::string& name, int64_t def, int64_t* out) {
  *out = def;
  if (!f.Has(name)) return Status::Ok();
  Status s = ParseInt64(f.Get(name), 10, out);
  if (!s.ok()) return InvalidArgumentError("--" + name + ": " + s.message());
  return Status::Ok();
}

Status PolicyFlags(const Flags& f, proto::BadRecordPolicy* policy, int64_t* max_bad) {
  if (f.Has("bad-records")) {
    const std::string p = f.Get("bad-records");
    if (p == "threshold") {
      *policy = proto::BAD_RECORDS_FAIL_PAST_THRESHOLD;
    } else if (p == "skip") {
      *policy = proto::BAD_RECORDS_SKIP;
    } else if (p == "fail") {
      *policy = proto::BAD_RECORDS_FAIL;
    } else {
      return InvalidArgumentError("--bad-records: '" + p + "' is not threshold, skip or fail");
    }
  }
  return IntFlag(f, "max-bad-records", *max_bad, max_bad);
}

std::string CommandLine(int argc, char** argv) {
  std::string s = "loom data";
  for (int i = 0; i < argc; ++i) s += std::string(" ") + argv[i];
  return s;
}

void PrintConvertSummary(const ConvertResult& r, const std::string& out) {
  std::printf("wrote %lld rows in %zu file(s) to %s (%lld data lines, %lld bad records skipped)\n",
              static_cast<long long>(r.rows), r.files.size(), out.c_str(),
              static_cast<long long>(r.lines), static_cast<long long>(r.bad_records));
  for (const auto& f : r.schema.sparse()) {
    if (f.vocabulary_size() > 0) {
      std::printf("  %-28s vocabulary_size %lld\n", f.name().c_str(),
                  static_cast<long long>(f.vocabulary_size()));
    }
  }
}

// The delimited-text conversion of convert-csv and convert-criteo: the bad-record and shard
// flags applied to `config`, then --input converted into --out.
Status ConvertText(proto::DelimitedTextConfig config, const Flags& f, const std::string& vocab_from,
                   const std::string& producer) {
  proto::BadRecordPolicy policy = config.bad_record_policy();
  int64_t max_bad = config.max_bad_records();
  LOOM_RETURN_IF_ERROR(PolicyFlags(f, &policy, &max_bad));
  config.set_bad_record_policy(policy);
  config.set_max_bad_records(max_bad);
  ConvertOptions o;
  o.out_dir = f.Get("out");
  o.vocab_from = vocab_from;
  o.producer = producer;
  LOOM_RETURN_IF_ERROR(IntFlag(f, "shard-rows", -1, &o.shard_rows));
  LOOM_RETURN_IF_ERROR(IntFlag(f, "block-rows", -1, &o.block_rows));
  LOOM_ASSIGN_OR_RETURN(auto r, ConvertDelimitedText(config, f.values.at("input"), o));
  PrintConvertSummary(r, o.out_dir);
  return Status::Ok();
}

Status RunConvertCsv(const Flags& f, const Command& cmd, const std::string& producer) {
  LOOM_RETURN_IF_ERROR(Require(f, cmd, {"schema", "input", "out"}));
  proto::DelimitedTextConfig config;
  LOOM_RETURN_IF_ERROR(ReadTextProto(f.Get("schema"), &config));
  return ConvertText(std::move(config), f, f.Get("vocab-from"), producer);
}

Status RunConvertCriteo(const Flags& f, const Command& cmd, const std::string& producer) {
  LOOM_RETURN_IF_ERROR(Require(f, cmd, {"input", "out"}));
  int64_t buckets;
  LOOM_RETURN_IF_ERROR(IntFlag(f, "hash-buckets", int64_t{1} << 22, &buckets));
  if (buckets < 2) return InvalidArgumentError("--hash-buckets must be >= 2");
  return ConvertText(CriteoConfig(buckets), f, "", producer);
}

Status RunConvertMovieLens(const Flags& f, const Command& cmd, const std::string& producer) {
  LOOM_RETURN_IF_ERROR(Require(f, cmd, {"variant", "input", "out"}));
  MovieLensOptions o;
  LOOM_ASSIGN_OR_RETURN(o.variant, ParseMovieLensVariant(f.Get("variant")));
  o.input_dir = f.Get("input");
  o.out_dir = f.Get("out");
  o.producer = producer;
  LOOM_RETURN_IF_ERROR(PolicyFlags(f, &o.bad_record_policy, &o.max_bad_records));
  LOOM_ASSIGN_OR_RETURN(auto r, ConvertMovieLens(o));
  std::printf("MovieLens CTR protocol v1: %lld ratings -> %lld train + %lld test samples in %s\n",
              static_cast<long long>(r.ratings), static_cast<long long>(r.train_rows),
              static_cast<long long>(r.test_rows), o.out_dir.c_str());
  std::printf("  positive rate: train %.4f, test %.4f; bad records skipped: %lld\n",
              r.train_rows ? static_cast<double>(r.train_positives) / r.train_rows : 0.0,
              r.test_rows ? static_cast<double>(r.test_positives) / r.test_rows : 0.0,
              static_cast<long long>(r.bad_records));
  return Status::Ok();
}

Status RunSynthetic(const Flags& f, const Command& cmd, const std::string& producer) {
  LOOM_RETURN_IF_ERROR(Require(f, cmd, {"config", "rows", "out"}));
  proto::SyntheticConfig config;
  LOOM_RETURN_IF_ERROR(ReadTextProto(f.Get("config"), &config));
  int64_t rows, seed;
  LOOM_RETURN_IF_ERROR(IntFlag(f, "rows", 0, &rows));
  LOOM_RETURN_IF_ERROR(IntFlag(f, "seed", static_cast<int64_t>(config.seed()), &seed));
  config.set_seed(static_cast<uint64_t>(seed));
  SyntheticOptions o;
  o.out_dir = f.Get("out");
  o.producer = producer;
  LOOM_ASSIGN_OR_RETURN(auto r, GenerateSynthetic(config, rows, o));
  std::printf("wrote %lld train + %lld test rows to %s\n", static_cast<long long>(r.train_rows),
              static_cast<long long>(r.test_rows), o.out_dir.c_str());
  std::printf("oracle AUC (Bayes-optimal, test split): %.6f\n", r.oracle_auc);
  std::printf(
      "oracle AUC (train split): %.6f; oracle log loss (test): %.6f; test positive "
      "rate: %.4f%s\n",
      r.oracle_auc_train, r.oracle_logloss, r.positive_rate,
      r.auc_exact ? "" : " (AUC from a 2^22-bin histogram)");
  std::printf("details: %s/synthetic.json\n", o.out_dir.c_str());
  return Status::Ok();
}

Status InspectOne(const std::string& path, int64_t max_blocks, int64_t show_rows, bool verify) {
  ShardFile::OpenOptions open;
  open.salvage = true;  // show what is there, then report the damage
  LOOM_ASSIGN_OR_RETURN(auto file, ShardFile::Open(path, open));
  std::printf("== %s\n", path.c_str());
  std::printf("producer: %s\nshard_index: %lld\nfile bytes: %llu\n",
              file->header().producer().c_str(),
              static_cast<long long>(file->header().shard_index()),
              static_cast<unsigned long long>(file->file_bytes()));
  std::string schema;
  google::protobuf::TextFormat::PrintToString(file->schema(), &schema);
  std::printf("schema {\n%s}\n", schema.c_str());
  const int64_t nb = file->num_blocks();
  std::printf("blocks: %lld, rows: %lld\n", static_cast<long long>(nb),
              static_cast<long long>(file->rows()));
  std::printf("  %8s %14s %12s %8s\n", "block", "offset", "bytes", "rows");
  for (int64_t b = 0; b < nb; ++b) {
    if (nb > max_blocks && b == max_blocks / 2) {
      std::printf("  %8s\n", "...");
      b = nb - max_blocks / 2 - 1;
      continue;
    }
    const auto& info = file->footer().block(static_cast<int>(b));
    std::printf("  %8lld %14llu %12llu %8lld\n", static_cast<long long>(b),
                static_cast<unsigned long long>(info.offset()),
                static_cast<unsigned long long>(info.bytes()), static_cast<long long>(info.rows()));
  }
  if (file->rows() > 0 && !file->salvaged()) {
    std::printf("label mean: %.6f\n", file->footer().label_sum() / file->rows());
    std::printf("  %-28s %14s %14s %10s\n", "feature", "max id", "ids", "max len");
    for (const auto& st : file->footer().id_stats()) {
      std::printf("  %-28s %14lld %14lld %10lld\n", st.feature().c_str(),
                  static_cast<long long>(st.max_id()), static_cast<long long>(st.num_ids()),
                  static_cast<long long>(st.max_length()));
    }
  }
  if (show_rows > 0 && nb > 0) {
    std::string scratch;
    DecodedBlock block;
    Example ex;
    int64_t shown = 0;
    for (int64_t b = 0; b < nb && shown < show_rows; ++b) {
      LOOM_RETURN_IF_ERROR(file->ReadBlock(b, &scratch, &block));
      for (int64_t r = 0; r < block.rows && shown < show_rows; ++r, ++shown) {
        block.GetExample(r, &ex);
        std::string line = "row " + std::to_string(shown) + ": label " + std::to_string(ex.label) +
                           " group " + std::to_string(ex.group_id);
        for (size_t j = 0; j < ex.dense.size(); ++j) {
          line += " " + file->schema().dense(static_cast<int>(j)).name() + "=" +
                  std::to_string(ex.dense[j]);
        }
        auto ids = [](const std::vector<int64_t>& v) {
          std::string s = "[";
          for (size_t i = 0; i < v.size(); ++i) s += (i ? " " : "") + std::to_string(v[i]);
          return s + "]";
        };
        for (size_t k = 0; k < ex.sparse_ids.size(); ++k) {
          line +=
              " " + file->schema().sparse(static_cast<int>(k)).name() + "=" + ids(ex.sparse_ids[k]);
        }
        for (size_t k = 0; k < ex.sequences.size(); ++k) {
          line += " " + file->schema().sequence(static_cast<int>(k)).name() + "=" +
                  ids(ex.sequences[k]);
        }
        std::printf("%s\n", line.c_str());
      }
    }
  }
  if (file->salvaged()) return DataLossError(file->salvage_report());
  if (verify) {
    LOOM_RETURN_IF_ERROR(file->Verify());
    std::printf("checksums: OK (%lld blocks, header and footer)\n", static_cast<long long>(nb));
  }
  return Status::Ok();
}

Status RunInspect(const Flags& f, const Command& cmd) {
  if (f.positional.empty()) {
    return InvalidArgumentError(std::string(cmd.name) + ": name at least one FILE");
  }
  int64_t blocks, rows;
  LOOM_RETURN_IF_ERROR(IntFlag(f, "blocks", 10, &blocks));
  LOOM_RETURN_IF_ERROR(IntFlag(f, "rows", 0, &rows));
  Status first;
  for (const std::string& path : f.positional) {
    Status s = InspectOne(path, std::max<int64_t>(blocks, 2), rows, !f.Has("no-verify"));
    if (!s.ok()) {
      std::printf("DAMAGED: %s\n", s.ToString().c_str());
      if (first.ok()) first = s;
    }
  }
  return first;
}

int Main(int argc, char** argv) {
  InitLogging(argv[0]);
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h" ||
      std::string(argv[1]) == "help") {
    std::fputs(kUsage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  const std::string name = argv[1];
  auto it = Commands().find(name);
  if (it == Commands().end()) {
    std::fprintf(stderr, "loom data: unknown command '%s'\n\n%s", name.c_str(), kUsage);
    return 2;
  }
  const Command& cmd = it->second;
  Flags flags;
  Status s = ParseFlags(cmd, argc - 2, argv + 2, &flags);
  if (!s.ok()) {
    std::fprintf(stderr, "%s\n", s.message().c_str());
    return 2;
  }
  if (flags.help) {
    std::fputs(cmd.help, stdout);
    return 0;
  }
  if (name != "inspect" && !flags.positional.empty()) {
    std::fprintf(stderr, "loom data %s: unexpected argument '%s' (see --help)\n", name.c_str(),
                 flags.positional[0].c_str());
    return 2;
  }
  const std::string producer = CommandLine(argc - 1, argv + 1);
  if (name == "convert-csv") {
    s = RunConvertCsv(flags, cmd, producer);
  } else if (name == "convert-criteo") {
    s = RunConvertCriteo(flags, cmd, producer);
  } else if (name == "convert-movielens") {
    s = RunConvertMovieLens(flags, cmd, producer);
  } else if (name == "synthetic") {
    s = RunSynthetic(flags, cmd, producer);
  } else {
    s = RunInspect(flags, cmd);
  }
  if (!s.ok()) {
    std::fprintf(stderr, "loom data %s: %s\n", name.c_str(), s.ToString().c_str());
    return 1;
  }
  return 0;
}

}  // namespace
}  // namespace loom::data

int main(int argc, char** argv) { return loom::data::Main(argc, argv); }
