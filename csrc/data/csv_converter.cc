#include "csrc/data/csv_converter.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <memory>
#include <sstream>
#include <unordered_map>

#include <glog/logging.h>

#include "csrc/core/json.h"
#include "csrc/data/bad_records.h"
#include "csrc/data/batch.h"
#include "csrc/data/schema.h"
#include "csrc/data/text_input.h"
#include "csrc/data/writer.h"

namespace loom::data {
namespace {

// A vocabulary: value -> id, built by counting (first appearance order, min_count) or loaded.
struct Vocab {
  std::string name;
  int64_t min_count = 1;
  bool separate_oov = false;
  bool frozen = false;  // loaded from --vocab-from
  bool sealed = false;  // ids assigned
  std::unordered_map<std::string, int64_t> counts;
  std::vector<std::string> order;  // first appearance
  std::unordered_map<std::string, int64_t> ids;
  std::vector<std::pair<std::string, int64_t>> by_id;  // (value, count) for id 1..V
  int64_t size = 0;                                    // V

  void Count(std::string_view v) {
    auto [it, inserted] = counts.try_emplace(std::string(v), 0);
    if (inserted) order.push_back(it->first);
    ++it->second;
  }
  void Seal() {
    for (const std::string& v : order) {
      const int64_t c = counts[v];
      if (c >= min_count) {
        ids[v] = ++size;
        by_id.emplace_back(v, c);
      }
    }
    counts.clear();
    order.clear();
    sealed = true;
  }
  int64_t Lookup(std::string_view v) const {
    auto it = ids.find(std::string(v));
    if (it != ids.end()) return it->second;
    return separate_oov ? size + 1 : 0;
  }
  int64_t VocabularySize() const { return size + 1 + (separate_oov ? 1 : 0); }
};

enum class Target { kLabel, kGroup, kDense, kSparse, kSequence };

struct Column {
  const proto::ColumnSpec* spec = nullptr;
  std::string feature;
  std::string label;  // for messages: the column's name or "#index"
  Target target = Target::kLabel;
  int index = 0;             // dense j / sparse f / sequence j
  bool also_sparse = false;  // group id column that also fills sparse feature `index`
  Vocab* vocab = nullptr;
  int64_t declared_vocab = 0;  // IDENTITY bound (0 = none)
  int field = -1;              // resolved per input file
};

class Converter {
 public:
  Converter(const proto::DelimitedTextConfig& config, const ConvertOptions& options)
      : config_(config),
        options_(options),
        schema_(config.schema()),
        bad_(config.bad_record_policy(), config.max_bad_records()) {}

  StatusOr<ConvertResult> Run(const std::vector<std::string>& inputs);

 private:
  Status Plan();
  Status LoadFrozenVocabs();
  Status ResolveFields(LineReader* in, int* expected_fields, std::string_view* first_data,
                       bool* first_is_data);
  // Parses one line's fields. Pass 1 only validates and collects vocabulary values (into
  // pending_); pass 2 fills *ex.
  Status ParseFields(const std::vector<std::string_view>& fields, int pass, Example* ex);
  Status EncodeValue(const Column& c, std::string_view v, int pass, int64_t* id);
  Status RunPass(const std::vector<std::string>& inputs, int pass, DatasetWriter* writer);
  Status WriteOutputs(const ConvertResult& result, const std::vector<std::string>& inputs);

  const proto::DelimitedTextConfig& config_;
  ConvertOptions options_;
  proto::DataSchema schema_;
  BadRecordCounter bad_;
  std::vector<Column> columns_;
  std::map<std::string, std::unique_ptr<Vocab>> vocabs_;
  char delim_ = ',', seq_sep_ = '^', multi_sep_ = '^', weight_sep_ = ':';
  std::vector<std::pair<Vocab*, std::string>> pending_;
  std::vector<std::string_view> list_;
  int64_t lines_ = 0, rows_ = 0;
  int64_t total_bytes_ = 0, done_bytes_ = 0;
};

Status SingleChar(const std::string& s, const char* field, char* out) {
  if (s.size() != 1) {
    return InvalidArgumentError(std::string("config ") + field + ": must be one character, got '" +
                                s + "'");
  }
  *out = s[0];
  return Status::Ok();
}

Status Converter::Plan() {
  LOOM_RETURN_IF_ERROR(ValidateSchema(schema_));
  LOOM_RETURN_IF_ERROR(SingleChar(config_.delimiter(), "delimiter", &delim_));
  LOOM_RETURN_IF_ERROR(SingleChar(config_.sequence_separator(), "sequence_separator", &seq_sep_));
  LOOM_RETURN_IF_ERROR(
      SingleChar(config_.multi_hot_separator(), "multi_hot_separator", &multi_sep_));
  LOOM_RETURN_IF_ERROR(SingleChar(config_.weight_separator(), "weight_separator", &weight_sep_));
  if (config_.column_size() == 0) return InvalidArgumentError("config: no column specs");

  std::vector<int> filled_dense(schema_.dense_size()), filled_sparse(schema_.sparse_size()),
      filled_seq(schema_.sequence_size());
  int filled_label = 0, filled_group = 0;
  for (int i = 0; i < config_.column_size(); ++i) {
    const proto::ColumnSpec& spec = config_.column(i);
    const std::string where = "config column[" + std::to_string(i) + "]";
    if (spec.column().empty() && spec.index() < 0) {
      return InvalidArgumentError(where + ": needs `column` (a header name) or `index`");
    }
    if (spec.index() < 0 && !config_.has_header()) {
      return InvalidArgumentError(where + " '" + spec.column() +
                                  "': the input has no header, so `index` is required");
    }
    Column c;
    c.spec = &spec;
    c.feature = spec.feature().empty() ? spec.column() : spec.feature();
    c.label = spec.column().empty() ? "#" + std::to_string(spec.index()) : spec.column();
    const int dense = FindDense(schema_, c.feature), sparse = FindSparse(schema_, c.feature),
              seq = FindSequence(schema_, c.feature);
    bool categorical = false;
    if (c.feature == schema_.label()) {
      c.target = Target::kLabel;
      ++filled_label;
    } else if (HasGroupId(schema_) && c.feature == schema_.group_id()) {
      c.target = Target::kGroup;
      ++filled_group;
      if (sparse >= 0) {
        c.also_sparse = true;
        c.index = sparse;
        ++filled_sparse[sparse];
        c.declared_vocab = schema_.sparse(sparse).vocabulary_size();
        categorical = true;
      }
    } else if (dense >= 0) {
      c.target = Target::kDense;
      c.index = dense;
      ++filled_dense[dense];
    } else if (sparse >= 0) {
      c.target = Target::kSparse;
      c.index = sparse;
      ++filled_sparse[sparse];
      c.declared_vocab = schema_.sparse(sparse).vocabulary_size();
      categorical = true;
    } else if (seq >= 0) {
      c.target = Target::kSequence;
      c.index = seq;
      ++filled_seq[seq];
      c.declared_vocab = schema_.sequence(seq).vocabulary_size();
      categorical = true;
    } else {
      return InvalidArgumentError(where + ": feature '" + c.feature +
                                  "' is not the label, the group id or a schema feature");
    }
    if (!categorical && spec.encoding() != proto::ColumnSpec::ENCODING_IDENTITY) {
      return InvalidArgumentError(where + " '" + c.feature +
                                  "': encoding applies to sparse and sequence features only");
    }
    if (spec.transform() != proto::ColumnSpec::TRANSFORM_NONE && c.target != Target::kDense) {
      return InvalidArgumentError(where + " '" + c.feature + "': transform applies to dense only");
    }
    if (categorical && spec.encoding() == proto::ColumnSpec::ENCODING_HASH &&
        spec.hash_buckets() < 2) {
      return InvalidArgumentError(where + " '" + c.feature + "': HASH needs hash_buckets >= 2");
    }
    if (categorical && spec.encoding() == proto::ColumnSpec::ENCODING_VOCAB) {
      const std::string name = spec.vocabulary().empty() ? c.feature : spec.vocabulary();
      auto& v = vocabs_[name];
      if (!v) {
        v = std::make_unique<Vocab>();
        v->name = name;
        v->min_count = spec.min_count();
        v->separate_oov = spec.separate_oov_id();
      } else if (v->min_count != spec.min_count() || v->separate_oov != spec.separate_oov_id()) {
        return InvalidArgumentError(where + " '" + c.feature + "': vocabulary '" + name +
                                    "' is shared with different min_count or separate_oov_id");
      }
      if (spec.min_count() < 1) {
        return InvalidArgumentError(where + " '" + c.feature + "': min_count must be >= 1");
      }
      c.vocab = v.get();
    }
    columns_.push_back(c);
  }
  std::string missing, twice;
  auto check = [&](int n, const std::string& name) {
    if (n == 0) missing += " '" + name + "'";
    if (n > 1) twice += " '" + name + "'";
  };
  check(filled_label, schema_.label());
  if (HasGroupId(schema_)) check(filled_group, schema_.group_id());
  for (int j = 0; j < schema_.dense_size(); ++j) check(filled_dense[j], schema_.dense(j).name());
  for (int f = 0; f < schema_.sparse_size(); ++f) {
    check(filled_sparse[f], schema_.sparse(f).name());
  }
  for (int j = 0; j < schema_.sequence_size(); ++j) {
    check(filled_seq[j], schema_.sequence(j).name());
  }
  if (!missing.empty()) return InvalidArgumentError("config: no column fills" + missing);
  if (!twice.empty()) return InvalidArgumentError("config: more than one column fills" + twice);
  return Status::Ok();
}

Status Converter::LoadFrozenVocabs() {
  for (auto& [name, v] : vocabs_) {
    const std::string path = options_.vocab_from + "/vocab/" + name + ".tsv";
    LOOM_ASSIGN_OR_RETURN(auto in, LineReader::Open(path));
    std::string_view line;
    std::vector<std::string_view> parts;
    while (in->Next(&line)) {
      SplitList(line, '\t', &parts);
      int64_t id = 0, count = 0;
      if (parts.size() != 3 || !ParseInt64(parts[1], 10, &id).ok() ||
          !ParseInt64(parts[2], 10, &count).ok() || id != v->size + 1) {
        return InvalidArgumentError(in->Where() +
                                    ": expected 'value<TAB>id<TAB>count' with ids "
                                    "1, 2, ... in order");
      }
      const std::string value = UnescapeTsv(parts[0]);
      v->ids[value] = id;
      v->by_id.emplace_back(value, count);
      v->size = id;
    }
    LOOM_RETURN_IF_ERROR(in->status());
    v->frozen = true;
    v->sealed = true;
  }
  return Status::Ok();
}

Status Converter::EncodeValue(const Column& c, std::string_view v, int pass, int64_t* id) {
  const proto::ColumnSpec& spec = *c.spec;
  switch (spec.encoding()) {
    case proto::ColumnSpec::ENCODING_IDENTITY: {
      LOOM_RETURN_IF_ERROR(ParseInt64(v, spec.hex() ? 16 : 10, id));
      if (*id < 0) return InvalidArgumentError("id " + std::to_string(*id) + " is negative");
      if (c.declared_vocab > 0 && *id >= c.declared_vocab) {
        return InvalidArgumentError("id " + std::to_string(*id) + " >= vocabulary_size " +
                                    std::to_string(c.declared_vocab));
      }
      return Status::Ok();
    }
    case proto::ColumnSpec::ENCODING_HASH: {
      const std::string_view t = Trim(v);
      *id = 1 + static_cast<int64_t>(Hash64(t.data(), t.size()) %
                                     static_cast<uint64_t>(spec.hash_buckets() - 1));
      return Status::Ok();
    }
    case proto::ColumnSpec::ENCODING_VOCAB: {
      // Values are trimmed of spaces on both passes, as for IDENTITY and HASH.
      if (pass == 1) {
        pending_.emplace_back(c.vocab, std::string(Trim(v)));
        *id = 0;
      } else {
        *id = c.vocab->Lookup(Trim(v));
      }
      return Status::Ok();
    }
  }
  return InternalError("unknown encoding");
}

Status Converter::ParseFields(const std::vector<std::string_view>& fields, int pass, Example* ex) {
  pending_.clear();
  if (pass == 2) ex->Reset(schema_);
  for (const Column& c : columns_) {
    const std::string_view field = fields[c.field];
    auto fail = [&](const Status& s) {
      return InvalidArgumentError("column '" + c.label + "' (field " + std::to_string(c.field + 1) +
                                  "): " + s.message());
    };
    switch (c.target) {
      case Target::kLabel: {
        double y;
        Status s = ParseDouble(field, &y);
        if (!s.ok()) return fail(s);
        if (y < 0 || y > 1)
          return fail(InvalidArgumentError("label " + std::string(field) + " is not in [0, 1]"));
        if (pass == 2) ex->label = static_cast<float>(y);
        break;
      }
      case Target::kGroup: {
        int64_t g;
        const std::string_view t = Trim(field);
        if (t.empty()) return fail(InvalidArgumentError("empty group id"));
        if (!ParseInt64(t, 10, &g).ok()) {
          g = static_cast<int64_t>(Hash64(t.data(), t.size()) >> 1);
        }
        if (pass == 2) ex->group_id = g;
        if (c.also_sparse) {
          int64_t id;
          Status s = EncodeValue(c, t, pass, &id);
          if (!s.ok()) return fail(s);
          if (pass == 2) ex->sparse_ids[c.index] = {id};
        }
        break;
      }
      case Target::kDense: {
        double x = c.spec->missing_dense();
        if (!Trim(field).empty()) {
          Status s = ParseDouble(field, &x);
          if (!s.ok()) return fail(s);
          if (c.spec->transform() == proto::ColumnSpec::TRANSFORM_LOG1P) {
            x = std::log1p(std::max(x, 0.0));
          }
        }
        const float xf = static_cast<float>(x);
        if (!std::isfinite(xf)) return fail(InvalidArgumentError("value overflows f32"));
        if (pass == 2) ex->dense[c.index] = xf;
        break;
      }
      case Target::kSparse: {
        const auto& spec = schema_.sparse(c.index);
        if (!spec.multi_hot()) {
          int64_t id = 0;
          if (!Trim(field).empty()) {
            Status s = EncodeValue(c, field, pass, &id);
            if (!s.ok()) return fail(s);
          }
          if (pass == 2) ex->sparse_ids[c.index] = {id};
          break;
        }
        SplitList(Trim(field), multi_sep_, &list_);
        if (spec.max_values() > 0 && static_cast<int64_t>(list_.size()) > spec.max_values()) {
          return fail(InvalidArgumentError(std::to_string(list_.size()) +
                                           " values, more than max_values " +
                                           std::to_string(spec.max_values())));
        }
        for (std::string_view item : list_) {
          std::string_view value = item;
          double w = 1.0;
          if (spec.weighted()) {
            const size_t at = item.rfind(weight_sep_);
            if (at == std::string_view::npos) {
              return fail(InvalidArgumentError(
                  "'" + std::string(item) + "' lacks its weight (value" + weight_sep_ + "weight)"));
            }
            Status s = ParseDouble(item.substr(at + 1), &w);
            if (!s.ok()) return fail(s);
            value = item.substr(0, at);
          }
          if (Trim(value).empty()) return fail(InvalidArgumentError("empty value in the list"));
          int64_t id;
          Status s = EncodeValue(c, value, pass, &id);
          if (!s.ok()) return fail(s);
          if (pass == 2) {
            ex->sparse_ids[c.index].push_back(id);
            if (spec.weighted()) ex->sparse_weights[c.index].push_back(static_cast<float>(w));
          }
        }
        break;
      }
      case Target::kSequence: {
        const auto& spec = schema_.sequence(c.index);
        SplitList(Trim(field), seq_sep_, &list_);
        size_t first = 0;
        if (static_cast<int64_t>(list_.size()) > spec.max_length()) {
          if (!config_.truncate_sequences()) {
            return fail(InvalidArgumentError(
                std::to_string(list_.size()) +
                " values, more than T = " + std::to_string(spec.max_length())));
          }
          first = list_.size() - spec.max_length();
        }
        // Every value is checked and, in the counting pass, counted (as FuxiCTR's tokenizer
        // counts whole sequences); only the last T are kept.
        for (size_t k = pass == 1 ? 0 : first; k < list_.size(); ++k) {
          if (Trim(list_[k]).empty()) {
            return fail(InvalidArgumentError("empty value in the sequence"));
          }
          int64_t id;
          Status s = EncodeValue(c, list_[k], pass, &id);
          if (!s.ok()) return fail(s);
          if (pass == 2) ex->sequences[c.index].push_back(id);
        }
        break;
      }
    }
  }
  if (pass == 1) {
    for (auto& [v, value] : pending_) {
      if (!v->frozen) v->Count(value);
    }
  }
  return Status::Ok();
}

Status Converter::ResolveFields(LineReader* in, int* expected_fields, std::string_view* first_data,
                                bool* first_is_data) {
  std::vector<std::string_view> fields;
  std::vector<std::string> scratch;
  std::string_view line;
  *first_is_data = false;
  while (in->Next(&line)) {
    if (Trim(line).empty()) continue;
    Status s = SplitFields(line, delim_, &fields, &scratch);
    if (!config_.has_header()) {
      // The first data line fixes the field count.
      if (!s.ok()) return s.WithContext(in->Where());
      *expected_fields = static_cast<int>(fields.size());
      for (Column& c : columns_) {
        c.field = c.spec->index();
        if (c.field >= *expected_fields) {
          return InvalidArgumentError(in->Where() + ": column '" + c.label + "' is field " +
                                      std::to_string(c.field + 1) + " but the line has " +
                                      std::to_string(fields.size()) + " fields");
        }
      }
      *first_data = line;
      *first_is_data = true;
      return Status::Ok();
    }
    if (!s.ok()) return s.WithContext(in->Where() + " (header)");
    *expected_fields = static_cast<int>(fields.size());
    std::unordered_map<std::string, int> by_name;
    for (size_t i = 0; i < fields.size(); ++i) by_name[std::string(Trim(fields[i]))] = i;
    for (Column& c : columns_) {
      if (c.spec->index() >= 0) {
        c.field = c.spec->index();
        if (c.field >= *expected_fields) {
          return InvalidArgumentError(in->Where() + ": column index " + std::to_string(c.field) +
                                      " beyond the header's " + std::to_string(fields.size()) +
                                      " fields");
        }
        continue;
      }
      auto it = by_name.find(c.spec->column());
      if (it == by_name.end()) {
        std::string names;
        for (auto f : fields) names += " " + std::string(f);
        return InvalidArgumentError(in->Where() + ": the header has no column '" +
                                    c.spec->column() + "' (columns:" + names + ")");
      }
      c.field = it->second;
    }
    return Status::Ok();
  }
  LOOM_RETURN_IF_ERROR(in->status());
  *expected_fields = -1;  // empty file
  return Status::Ok();
}

Status Converter::RunPass(const std::vector<std::string>& inputs, int pass, DatasetWriter* writer) {
  Progress progress(pass == 1 ? "counting vocabularies" : "converting", total_bytes_,
                    options_.progress_interval_seconds);
  std::vector<std::string_view> fields;
  std::vector<std::string> scratch;
  Example ex;
  int64_t pass_bytes = 0, tick = 0;
  for (const std::string& path : inputs) {
    LOOM_ASSIGN_OR_RETURN(auto in, LineReader::Open(path));
    int expected = 0;
    std::string_view line;
    bool have_line = false;
    LOOM_RETURN_IF_ERROR(ResolveFields(in.get(), &expected, &line, &have_line));
    if (expected < 0) continue;
    std::string first_copy(line);  // the view dies with the next read
    line = first_copy;
    while (have_line || in->Next(&line)) {
      have_line = false;
      if (Trim(line).empty()) continue;
      if (pass == 2) ++lines_;
      Status s = SplitFields(line, delim_, &fields, &scratch);
      if (s.ok() && static_cast<int>(fields.size()) != expected) {
        s = InvalidArgumentError(std::to_string(fields.size()) + " fields, expected " +
                                 std::to_string(expected) + " (delimiter '" +
                                 (delim_ == '\t' ? std::string("\\t") : std::string(1, delim_)) +
                                 "')");
      }
      if (s.ok()) s = ParseFields(fields, pass, &ex);
      if (s.ok() && pass == 2) {
        s = writer->Add(ex);
        if (!s.ok() && s.code() != StatusCode::kInvalidArgument) return s;  // I/O
      }
      if (!s.ok()) {
        if (pass == 1) continue;  // reported by pass 2
        LOOM_RETURN_IF_ERROR(bad_.Add(1, in->Where() + ": " + s.message()));
        continue;
      }
      if (pass == 2) ++rows_;
      if ((++tick & 0xfff) == 0) {
        progress.Update(pass == 2 ? rows_ : tick, pass_bytes + in->bytes_consumed());
      }
    }
    LOOM_RETURN_IF_ERROR(in->status());
    pass_bytes += in->bytes_consumed();
  }
  progress.Finish(pass == 2 ? rows_ : tick);
  return Status::Ok();
}

Status Converter::WriteOutputs(const ConvertResult& result,
                               const std::vector<std::string>& inputs) {
  LOOM_RETURN_IF_ERROR(WriteTextProto(options_.out_dir + "/schema.pbtxt", result.schema));
  if (!vocabs_.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(options_.out_dir + "/vocab", ec);
    if (ec) return NotFoundError(options_.out_dir + "/vocab: " + ec.message());
  }
  for (const auto& [name, v] : vocabs_) {
    std::string text;
    for (size_t i = 0; i < v->by_id.size(); ++i) {
      text += EscapeTsv(v->by_id[i].first) + "\t" + std::to_string(i + 1) + "\t" +
              std::to_string(v->by_id[i].second) + "\n";
    }
    LOOM_RETURN_IF_ERROR(WriteStringToFile(options_.out_dir + "/vocab/" + name + ".tsv", text));
  }
  std::ostringstream js;
  js << "{\n  \"rows\": " << result.rows << ",\n  \"lines\": " << result.lines
     << ",\n  \"bad_records\": " << result.bad_records << ",\n  \"inputs\": [";
  for (size_t i = 0; i < inputs.size(); ++i) {
    js << (i ? ", " : "") << "\"" << JsonEscape(inputs[i]) << "\"";
  }
  js << "],\n  \"files\": " << result.files.size() << "\n}\n";
  return WriteStringToFile(options_.out_dir + "/convert.json", js.str());
}

StatusOr<ConvertResult> Converter::Run(const std::vector<std::string>& inputs) {
  if (options_.out_dir.empty()) return InvalidArgumentError("convert: no output directory");
  if (inputs.empty()) return InvalidArgumentError("convert: no input files");
  LOOM_RETURN_IF_ERROR(Plan());
  for (const auto& p : inputs) {
    std::error_code ec;
    const auto n = std::filesystem::file_size(p, ec);
    if (ec) return NotFoundError(p + ": " + ec.message());
    total_bytes_ += static_cast<int64_t>(n);
  }
  if (!options_.vocab_from.empty()) {
    LOOM_RETURN_IF_ERROR(LoadFrozenVocabs());
  } else if (!vocabs_.empty()) {
    LOOM_RETURN_IF_ERROR(RunPass(inputs, 1, nullptr));
    for (auto& [name, v] : vocabs_) {
      v->Seal();
      LOG(INFO) << "vocabulary '" << name << "': " << v->size << " values (min_count "
                << v->min_count << ")";
    }
  }
  // Vocabulary sizes into the schema.
  for (const Column& c : columns_) {
    int64_t size = -1;
    if (c.spec->encoding() == proto::ColumnSpec::ENCODING_HASH) size = c.spec->hash_buckets();
    if (c.vocab != nullptr) size = c.vocab->VocabularySize();
    if (size < 0) continue;
    if (c.target == Target::kSequence) {
      schema_.mutable_sequence(c.index)->set_vocabulary_size(size);
    } else if (c.target == Target::kSparse || c.also_sparse) {
      schema_.mutable_sparse(c.index)->set_vocabulary_size(size);
    }
  }
  WriterOptions wo;
  wo.block_rows = options_.block_rows > 0 ? options_.block_rows : config_.block_rows();
  wo.shard_rows = options_.shard_rows >= 0 ? options_.shard_rows : config_.shard_rows();
  wo.producer = options_.producer;
  LOOM_ASSIGN_OR_RETURN(auto writer, DatasetWriter::Create(options_.out_dir, schema_, wo));
  LOOM_RETURN_IF_ERROR(RunPass(inputs, 2, writer.get()));
  LOOM_RETURN_IF_ERROR(writer->Close());
  ConvertResult result;
  result.rows = rows_;
  result.lines = lines_;
  result.bad_records = bad_.count();
  result.schema = schema_;
  result.files = writer->files();
  LOOM_RETURN_IF_ERROR(WriteOutputs(result, inputs));
  if (result.bad_records > 0) {
    LOG(WARNING) << result.bad_records << " bad records skipped (of " << result.lines << " lines)";
  }
  return result;
}

}  // namespace

StatusOr<ConvertResult> ConvertDelimitedText(const proto::DelimitedTextConfig& config,
                                             const std::vector<std::string>& inputs,
                                             const ConvertOptions& options) {
  Converter converter(config, options);
  return converter.Run(inputs);
}

proto::DelimitedTextConfig CriteoConfig(int64_t hash_buckets) {
  proto::DelimitedTextConfig c;
  c.set_delimiter("\t");
  c.set_has_header(false);
  auto* schema = c.mutable_schema();
  schema->set_name("criteo");
  schema->set_label("label");
  auto* label = c.add_column();
  label->set_index(0);
  label->set_feature("label");
  for (int i = 1; i <= 13; ++i) {
    const std::string name = "I" + std::to_string(i);
    schema->add_dense()->set_name(name);
    auto* col = c.add_column();
    col->set_index(i);
    col->set_feature(name);
    col->set_transform(proto::ColumnSpec::TRANSFORM_LOG1P);
  }
  for (int i = 1; i <= 26; ++i) {
    const std::string name = "C" + std::to_string(i);
    auto* sp = schema->add_sparse();
    sp->set_name(name);
    sp->set_vocabulary_size(hash_buckets);
    auto* col = c.add_column();
    col->set_index(13 + i);
    col->set_feature(name);
    col->set_encoding(proto::ColumnSpec::ENCODING_HASH);
    col->set_hash_buckets(hash_buckets);
  }
  return c;
}

}  // namespace loom::data
