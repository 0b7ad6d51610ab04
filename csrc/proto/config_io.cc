#include "csrc/proto/config_io.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <system_error>
#include <utility>

#include <google/protobuf/descriptor.h>
#include <google/protobuf/io/tokenizer.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <google/protobuf/text_format.h>

namespace loom::config {
namespace {

namespace pb = ::google::protobuf;

// protobuf's tokenizer advances a tab to the next multiple of 8 columns; editors and the
// "file:line:col" convention count a tab as one column. Maps a tokenizer column on `line` to a
// 0-based byte offset.
int TokenizerColumnToByte(std::string_view line, int tokenizer_column) {
  constexpr int kTabWidth = 8;  // io::Tokenizer's kTabWidth
  int column = 0;
  int byte = 0;
  while (byte < static_cast<int>(line.size()) && column < tokenizer_column) {
    if (line[byte] == '\t') {
      column += kTabWidth - column % kTabWidth;
    } else {
      ++column;
    }
    if (column > tokenizer_column) break;  // the position is inside this tab
    ++byte;
  }
  // Past the end of the line (e.g. "expected }" at end of input): keep counting one per column.
  if (column < tokenizer_column) byte += tokenizer_column - column;
  return byte;
}

// Line `line` (0-based) of `text`, without its newline; empty past the end.
std::string_view LineOf(std::string_view text, int line) {
  size_t begin = 0;
  for (int i = 0; i < line; ++i) {
    const size_t newline = text.find('\n', begin);
    if (newline == std::string_view::npos) return {};
    begin = newline + 1;
  }
  const size_t end = text.find('\n', begin);
  return text.substr(begin, end == std::string_view::npos ? std::string_view::npos : end - begin);
}

bool IsIdentifierChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

// protobuf reports "no field named "x"", "Unknown enumeration value of "X"" and "Non-repeated
// field "x" is specified multiple times" at the token AFTER the name. Moves the 0-based byte
// column back to the start of that name when it is on the same line; otherwise keeps it.
int ColumnOfNamedToken(std::string_view line, int column, const std::string& message) {
  static constexpr const char* kPrefixes[] = {
      "has no field named \"", "Unknown enumeration value of \"", "Non-repeated field \""};
  for (const char* prefix : kPrefixes) {
    const size_t at = message.find(prefix);
    if (at == std::string::npos) continue;
    const size_t begin = at + std::strlen(prefix);
    const size_t end = message.find('"', begin);
    if (end == std::string::npos || end == begin) return column;
    const std::string name = message.substr(begin, end - begin);
    size_t search_from = std::min(static_cast<size_t>(column), line.size());
    while (true) {
      const size_t found = line.rfind(name, search_from);
      if (found == std::string_view::npos) return column;
      const size_t after = found + name.size();
      const bool whole = (found == 0 || !IsIdentifierChar(line[found - 1])) &&
                         (after >= line.size() || !IsIdentifierChar(line[after]));
      if (whole && after <= static_cast<size_t>(column)) return static_cast<int>(found);
      if (found == 0) return column;
      search_from = found - 1;
    }
  }
  return column;
}

// Keeps the first error the parser reports (it stops at the first one in practice; later
// ones are consequences) and counts the rest.
class FirstErrorCollector : public pb::io::ErrorCollector {
 public:
  void AddError(int line, pb::io::ColumnNumber column, const std::string& message) override {
    if (count_++ == 0) {
      line_ = line;
      column_ = column;
      message_ = message;
    }
  }
  void AddWarning(int line, pb::io::ColumnNumber column, const std::string& message) override {
    warnings_.push_back(std::to_string(line + 1) + ":" + std::to_string(column + 1) + ": " +
                        message);
  }

  int count() const { return count_; }
  int line() const { return line_; }
  int column() const { return column_; }
  const std::string& message() const { return message_; }
  const std::vector<std::string>& warnings() const { return warnings_; }

 private:
  int count_ = 0;
  int line_ = -1;
  int column_ = 0;
  std::string message_;
  std::vector<std::string> warnings_;
};

Status ReadFile(const std::string& path, std::string* contents) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    return NotFoundError(path + ": cannot open: is a directory");
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return NotFoundError(path + ": cannot open: " + std::strerror(errno));
  std::ostringstream buffer;
  buffer << in.rdbuf();
  if (in.bad()) return DataLossError(path + ": read failed: " + std::strerror(errno));
  *contents = std::move(buffer).str();
  return Status::Ok();
}

void FillDefaultsImpl(pb::Message* message) {
  const pb::Descriptor* descriptor = message->GetDescriptor();
  const pb::Reflection* reflection = message->GetReflection();
  for (int i = 0; i < descriptor->field_count(); ++i) {
    const pb::FieldDescriptor* field = descriptor->field(i);
    if (field->cpp_type() == pb::FieldDescriptor::CPPTYPE_MESSAGE) {
      // Complete the sub-messages that are present; never create one.
      if (field->is_repeated()) {
        for (int j = 0; j < reflection->FieldSize(*message, field); ++j) {
          FillDefaultsImpl(reflection->MutableRepeatedMessage(message, field, j));
        }
      } else if (reflection->HasField(*message, field)) {
        FillDefaultsImpl(reflection->MutableMessage(message, field));
      }
      continue;
    }
    // Repeated scalars keep their list; which oneof member is set carries meaning.
    if (field->is_repeated() || field->real_containing_oneof() != nullptr) continue;
    if (reflection->HasField(*message, field)) continue;
    switch (field->cpp_type()) {
      case pb::FieldDescriptor::CPPTYPE_INT32:
        reflection->SetInt32(message, field, field->default_value_int32());
        break;
      case pb::FieldDescriptor::CPPTYPE_INT64:
        reflection->SetInt64(message, field, field->default_value_int64());
        break;
      case pb::FieldDescriptor::CPPTYPE_UINT32:
        reflection->SetUInt32(message, field, field->default_value_uint32());
        break;
      case pb::FieldDescriptor::CPPTYPE_UINT64:
        reflection->SetUInt64(message, field, field->default_value_uint64());
        break;
      case pb::FieldDescriptor::CPPTYPE_FLOAT:
        reflection->SetFloat(message, field, field->default_value_float());
        break;
      case pb::FieldDescriptor::CPPTYPE_DOUBLE:
        reflection->SetDouble(message, field, field->default_value_double());
        break;
      case pb::FieldDescriptor::CPPTYPE_BOOL:
        reflection->SetBool(message, field, field->default_value_bool());
        break;
      case pb::FieldDescriptor::CPPTYPE_ENUM:
        reflection->SetEnum(message, field, field->default_value_enum());
        break;
      case pb::FieldDescriptor::CPPTYPE_STRING:
        reflection->SetString(message, field, field->default_value_string());
        break;
      case pb::FieldDescriptor::CPPTYPE_MESSAGE:
        break;  // handled above
    }
  }
}

// `source` consumed: its fields are swapped out into `target`.
void MergeOverrideImpl(pb::Message* source, pb::Message* target) {
  const pb::Reflection* reflection = target->GetReflection();
  std::vector<const pb::FieldDescriptor*> fields;
  source->GetReflection()->ListFields(*source, &fields);
  for (const pb::FieldDescriptor* field : fields) {
    if (!field->is_repeated() && field->cpp_type() == pb::FieldDescriptor::CPPTYPE_MESSAGE) {
      // Sub-messages merge field by field. For a oneof member, MutableMessage clears the other
      // members first.
      MergeOverrideImpl(source->GetReflection()->MutableMessage(source, field),
                        reflection->MutableMessage(target, field));
    } else {
      // A scalar, or a whole repeated field, replaces the target's. For a oneof member the
      // whole oneof is swapped, so the override's member wins and the others are cleared.
      reflection->SwapFields(source, target, {field});
    }
  }
}

constexpr int64_t kMaxBatch = int64_t{1} << 24;
constexpr int64_t kMaxGlobalBatch = int64_t{1} << 40;
constexpr int64_t kMaxSteps = int64_t{1} << 62;
constexpr int kMaxCount = 1000000;

}  // namespace

// -------------------------------------------------------------------------------------------
// Parsing.

Status ParseTextProto(std::string_view text, const std::string& source, pb::Message* message) {
  FirstErrorCollector errors;
  pb::TextFormat::Parser parser;
  parser.RecordErrorsTo(&errors);
  // Defaults, stated because they are the contract: unknown fields and extensions are errors,
  // field numbers are not accepted as names, a singular field may be written only once.
  parser.AllowUnknownField(false);
  parser.AllowUnknownExtension(false);
  parser.AllowFieldNumber(false);
  pb::io::ArrayInputStream input(text.data(), static_cast<int>(text.size()));
  const bool parsed = parser.Parse(&input, message);
  for (const std::string& warning : errors.warnings()) {
    LOG(WARNING) << source << ":" << warning;
  }
  if (parsed && errors.count() == 0) return Status::Ok();
  if (errors.count() == 0) return InvalidArgumentError(source + ": cannot parse text format");
  if (errors.line() < 0) return InvalidArgumentError(source + ": " + errors.message());
  const std::string_view line = LineOf(text, errors.line());
  const int column =
      ColumnOfNamedToken(line, TokenizerColumnToByte(line, errors.column()), errors.message());
  return InvalidArgumentError(source + ":" + std::to_string(errors.line() + 1) + ":" +
                              std::to_string(column + 1) + ": " + errors.message());
}

Status ParseTextProtoFileInto(const std::string& path, pb::Message* message) {
  std::string text;
  LOOM_RETURN_IF_ERROR(ReadFile(path, &text));
  return ParseTextProto(text, path, message);
}

void MergeOverride(const pb::Message& override_message, pb::Message* target) {
  CHECK(target != nullptr);
  CHECK(override_message.GetDescriptor() == target->GetDescriptor())
      << "MergeOverride of " << override_message.GetDescriptor()->full_name() << " into "
      << target->GetDescriptor()->full_name();
  std::unique_ptr<pb::Message> source(override_message.New());
  source->CopyFrom(override_message);
  MergeOverrideImpl(source.get(), target);
}

Status ApplyOverrides(const std::vector<std::string>& overrides, pb::Message* message) {
  std::unique_ptr<pb::Message> patch(message->New());
  for (size_t i = 0; i < overrides.size(); ++i) {
    const std::string source = "--set #" + std::to_string(i + 1);
    Status status = ParseTextProto(overrides[i], source, patch.get());
    if (!status.ok()) {
      return Status(status.code(), status.message() + " [override: " + overrides[i] + "]");
    }
    MergeOverride(*patch, message);
  }
  return Status::Ok();
}

// -------------------------------------------------------------------------------------------
// LoomConfig.

StatusOr<proto::LoomConfig> LoadConfig(const std::string& path,
                                       const std::vector<std::string>& overrides) {
  proto::LoomConfig config;
  LOOM_RETURN_IF_ERROR(ParseTextProtoFileInto(path, &config));
  LOOM_RETURN_IF_ERROR(ApplyOverrides(overrides, &config));
  Status valid = Validate(config);
  if (!valid.ok()) {
    // Name the file: the bad value may come from it or from an override.
    const std::string from = overrides.empty() ? path : path + " (after --set overrides)";
    return Status(valid.code(), from + ": " + valid.message());
  }
  return config;
}

Status Validate(const proto::LoomConfig& config, const std::vector<SectionValidator>& more) {
  ValidationErrors errors;
  ValidateTrain(config.train(), errors.Path("train"));
  for (const SectionValidator& validator : more) validator(config, errors);
  return errors.ToStatus();
}

void ValidateTrain(const proto::TrainConfig& train, ValidationErrors errors) {
  if (train.batch_size_case() == proto::TrainConfig::kGlobalBatchSize) {
    if (errors.RequireGt("global_batch_size", train.global_batch_size(), 0)) {
      errors.RequireLe("global_batch_size", train.global_batch_size(), kMaxGlobalBatch);
    }
  } else if (errors.RequireGt("local_batch_size", train.local_batch_size(), 0)) {
    errors.RequireLe("local_batch_size", train.local_batch_size(), static_cast<int32_t>(kMaxBatch));
  }

  errors.RequireInRange("max_steps", train.max_steps(), 0, kMaxSteps);
  errors.RequireInRange("epochs", train.epochs(), 0, kMaxCount);
  if (train.max_steps() == 0 && train.epochs() == 0) {
    errors.Add("max_steps", "must be > 0 when epochs is 0 (no limit would end training), got 0");
  }

  if (errors.RequireGt("log_every_steps", train.log_every_steps(), 0)) {
    errors.RequireLe("log_every_steps", train.log_every_steps(), kMaxSteps);
  }
  errors.RequireInRange("eval_every_steps", train.eval_every_steps(), 0, kMaxSteps);
  errors.RequireInRange("eval_max_batches", train.eval_max_batches(), 0, kMaxSteps);
  errors.RequireInRange("eval_local_batch_size", train.eval_local_batch_size(), 0,
                        static_cast<int32_t>(kMaxBatch));
  errors.RequireNonEmpty("run_dir", train.run_dir());

  ValidationErrors checkpoint = errors.Path("checkpoint");
  checkpoint.RequireInRange("every_steps", train.checkpoint().every_steps(), 0, kMaxSteps);
  checkpoint.RequireInRange("keep_last", train.checkpoint().keep_last(), 0, kMaxCount);

  ValidationErrors early_stopping = errors.Path("early_stopping");
  early_stopping.RequireInRange("patience", train.early_stopping().patience(), 0, kMaxCount);
  const double min_delta = train.early_stopping().min_delta();
  if (early_stopping.RequireGe("min_delta", min_delta, 0.0)) {
    early_stopping.Require(std::isfinite(min_delta), "min_delta", "must be finite", min_delta);
  }

  if (train.comm_backend() == proto::TrainConfig::COMM_BACKEND_NCCL &&
      train.device() != proto::TrainConfig::DEVICE_CUDA) {
    errors.Add("comm_backend", "COMM_BACKEND_NCCL requires device: DEVICE_CUDA, got device: " +
                                   ValidationErrors::FormatValue(train.device()));
  }
  errors.RequireInRange("cuda_device", train.cuda_device(), -1, 1023);
  errors.RequireInRange("num_threads", train.num_threads(), 0, 4096);
}

StatusOr<int64_t> ResolveLocalBatchSize(const proto::TrainConfig& train, int world_size) {
  if (world_size < 1) {
    return InvalidArgumentError("world size must be >= 1, got " + std::to_string(world_size));
  }
  if (train.batch_size_case() != proto::TrainConfig::kGlobalBatchSize) {
    return static_cast<int64_t>(train.local_batch_size());
  }
  const int64_t global = train.global_batch_size();
  ValidationErrors errors;
  ValidationErrors train_errors = errors.Path("train");
  if (train_errors.Require(global % world_size == 0, "global_batch_size",
                           "must be divisible by the world size " + std::to_string(world_size),
                           global)) {
    train_errors.Require(global / world_size <= kMaxBatch, "global_batch_size",
                         "must give a local batch size (global / world size " +
                             std::to_string(world_size) + ") <= " + std::to_string(kMaxBatch),
                         global);
  }
  LOOM_RETURN_IF_ERROR(errors.ToStatus());
  return global / world_size;
}

std::string CheckpointDir(const proto::TrainConfig& train) {
  if (!train.checkpoint().dir().empty()) return train.checkpoint().dir();
  return (std::filesystem::path(train.run_dir()) / "checkpoints").string();
}

// -------------------------------------------------------------------------------------------
// Printing.

void FillDefaults(pb::Message* message) { FillDefaultsImpl(message); }

proto::LoomConfig EffectiveConfig(const proto::LoomConfig& config) {
  proto::LoomConfig effective = config;
  effective.mutable_model();
  effective.mutable_embedding();
  effective.mutable_optimizer();
  effective.mutable_data();
  effective.mutable_train()->mutable_checkpoint();
  effective.mutable_train()->mutable_early_stopping();
  FillDefaults(&effective);
  return effective;
}

std::string ToText(const pb::Message& message) {
  pb::TextFormat::Printer printer;
  printer.SetUseUtf8StringEscaping(true);  // keep non-ASCII paths readable
  std::string text;
  CHECK(printer.PrintToString(message, &text));
  return text;
}

Status WriteEffectiveConfig(const proto::LoomConfig& config, const std::string& run_dir) {
  if (run_dir.empty()) return InvalidArgumentError("effective config: run_dir is empty");
  std::error_code ec;
  std::filesystem::create_directories(run_dir, ec);
  if (ec) return InvalidArgumentError(run_dir + ": cannot create directory: " + ec.message());
  const std::filesystem::path path = std::filesystem::path(run_dir) / kEffectiveConfigFileName;
  const std::filesystem::path temporary = path.string() + ".tmp." + std::to_string(::getpid());
  {
    std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
    if (!out) {
      return InvalidArgumentError(temporary.string() + ": cannot write: " + std::strerror(errno));
    }
    out << "# Effective config of this run: every field spelled out, defaults included.\n"
           "# Load it as a config to repeat the run (docs/configs.md).\n"
        << ToText(EffectiveConfig(config));
    out.close();
    if (!out) {
      const std::string reason = std::strerror(errno);
      std::filesystem::remove(temporary, ec);
      return DataLossError(temporary.string() + ": write failed: " + reason);
    }
  }
  std::filesystem::rename(temporary, path, ec);
  if (ec) {
    std::error_code ignored;
    std::filesystem::remove(temporary, ignored);
    return InvalidArgumentError(path.string() + ": cannot replace: " + ec.message());
  }
  return Status::Ok();
}

// -------------------------------------------------------------------------------------------
// ValidationErrors.

ValidationErrors::ValidationErrors() : errors_(std::make_shared<std::vector<std::string>>()) {}

ValidationErrors::ValidationErrors(std::shared_ptr<std::vector<std::string>> errors,
                                   std::string path)
    : errors_(std::move(errors)), path_(std::move(path)) {}

ValidationErrors ValidationErrors::Path(std::string_view field) const {
  return ValidationErrors(errors_, FieldPath(field));
}

std::string ValidationErrors::FieldPath(std::string_view field) const {
  if (path_.empty()) return std::string(field);
  if (field.empty()) return path_;
  return path_ + "." + std::string(field);
}

void ValidationErrors::Add(std::string_view field, std::string_view message) {
  errors_->push_back(FieldPath(field) + ": " + std::string(message));
}

bool ValidationErrors::RequireNonEmpty(std::string_view field, const std::string& value) {
  if (!value.empty()) return true;
  Add(field, "must not be empty");
  return false;
}

Status ValidationErrors::ToStatus() const {
  if (errors_->empty()) return Status::Ok();
  std::string message;
  for (const std::string& error : *errors_) {
    if (!message.empty()) message += "; ";
    message += error;
  }
  return InvalidArgumentError(std::move(message));
}

namespace {
template <typename F>
std::string ShortestFloat(F value) {
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
  char buffer[64];
  const std::to_chars_result result = std::to_chars(buffer, buffer + sizeof(buffer), value);
  return std::string(buffer, result.ptr);
}
}  // namespace

std::string ValidationErrors::FormatValue(double value) { return ShortestFloat(value); }
std::string ValidationErrors::FormatValue(float value) { return ShortestFloat(value); }
std::string ValidationErrors::FormatValue(bool value) { return value ? "true" : "false"; }
std::string ValidationErrors::FormatValue(const std::string& value) { return "\"" + value + "\""; }
std::string ValidationErrors::FormatValue(const char* value) {
  return FormatValue(std::string(value));
}

}  // namespace loom::config
