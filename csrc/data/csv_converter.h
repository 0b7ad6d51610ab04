// `loom data convert-csv` / `convert-criteo`: delimited text (CSV/TSV, with or without a
// header) to the Loom log format, driven by a DelimitedTextConfig (data.proto).
//
// Each ColumnSpec maps one field to one target: the label, the group id, a dense feature, a
// sparse feature or a sequence feature of the config's schema; every target must be filled by
// exactly one spec. Field rules:
//   label     a number in [0, 1]
//   group id  the field's integer value, or a 63-bit hash of its text when it is no integer
//   dense     a finite number (empty: missing_dense), then the spec's transform
//   sparse    single-hot: one value (empty: id 0); multi-hot: values joined by
//             multi_hot_separator (weighted: "value:weight"); each value encoded (IDENTITY,
//             HASH or VOCAB, see ColumnSpec)
//   sequence  values joined by sequence_separator, oldest first (the BARS form "3^17^5"),
//             longer than T: the last T kept (truncate_sequences) or a bad record
// A line that breaks any rule (field count, number syntax, range) is a bad record, reported
// as "file:line: column 'name' (field k): why" and handled by the config's bad-record policy.
// Blank lines are ignored.
//
// VOCAB columns need the vocabulary before the first block is written (its size goes into
// the schema), so a conversion that builds vocabularies reads its inputs twice: a counting
// pass, then the conversion. With a frozen vocabulary (--vocab-from) it reads them once.
//
// Output in out_dir: part-NNNNN.loom shards, schema.pbtxt (the schema with vocabulary sizes),
// vocab/<vocabulary>.tsv (value \t id \t count, TSV-escaped), convert.json (counts).
#ifndef LOOM_DATA_CSV_CONVERTER_H_
#define LOOM_DATA_CSV_CONVERTER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "csrc/core/status.h"
#include "csrc/proto/data.pb.h"

namespace loom::data {

struct ConvertOptions {
  std::string out_dir;      // required
  std::string vocab_from;   // a previous conversion's out_dir: use its vocabularies, frozen
  std::string producer;     // recorded in the shard headers
  int64_t shard_rows = -1;  // -1: the config's
  int64_t block_rows = -1;  // -1: the config's
  double progress_interval_seconds = 5.0;
};

struct ConvertResult {
  int64_t rows = 0;          // rows written
  int64_t lines = 0;         // non-blank data lines read (header excluded)
  int64_t bad_records = 0;   // lines skipped as bad
  proto::DataSchema schema;  // as written (vocabulary sizes filled in)
  std::vector<std::string> files;
};

// Converts `inputs` (read in order, one data set) into options.out_dir.
StatusOr<ConvertResult> ConvertDelimitedText(const proto::DelimitedTextConfig& config,
                                             const std::vector<std::string>& inputs,
                                             const ConvertOptions& options);

// The Criteo display-ads TSV (Kaggle / Terabyte): label, I1..I13 integers (dense, LOG1P
// transform: log(1 + max(x, 0)), empty = 0), C1..C26 hexadecimal categories (sparse, HASH
// encoding into `hash_buckets` ids per feature, empty = 0). No header, tab-delimited.
proto::DelimitedTextConfig CriteoConfig(int64_t hash_buckets);

}  // namespace loom::data

#endif  // LOOM_DATA_CSV_CONVERTER_H_
