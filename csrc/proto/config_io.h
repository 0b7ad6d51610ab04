// Loading, validating and printing configs (proto2 text format, .pbtxt).
//
//   LOOM_ASSIGN_OR_RETURN(proto::LoomConfig cfg,
//                         config::LoadConfig("configs/quickstart.pbtxt", {"train { seed: 7 }"}));
//   LOOM_LOG_RANK0(INFO) << "effective config:\n" << config::ToText(config::EffectiveConfig(cfg));
//   if (rank == 0) LOOM_RETURN_IF_ERROR(config::WriteEffectiveConfig(cfg, cfg.train().run_dir()));
//
// Error messages (the Status message; its code is InvalidArgument unless stated):
//   syntax error, unknown field or enum value:
//       "<file>:<line>:<col>: <protobuf's message>"   (1-based; col counts bytes, tab = 1)
//   error in an override (i is 1-based, in command-line order):
//       "--set #<i>:<line>:<col>: <message> [override: <text>]"
//   missing or unreadable file:
//       NotFound "<file>: cannot open: <reason>"
//   invalid value (all errors of one Validate() call, joined by "; "; LoadConfig prefixes
//   "<file>: " or "<file> (after --set overrides): "):
//       "<field.path>: <what>, got <value>"
//
// Unknown fields are errors, never ignored: a typo must not silently fall back to a default.
// A non-repeated field written twice in one file (or one override) is an error too.
//
// Override merge rule (MergeOverride): fields written in the override replace those of the
// config; sub-messages merge field by field; a repeated field written in the override
// replaces the whole list (it does not append); setting a member of a oneof clears the other
// members. So `--set 'model { head_hidden_dims: [64] }'` leaves [64], not [1024, ..., 64].
//
// Thread-safety: all functions are reentrant; ValidationErrors is not shared across threads.
#ifndef LOOM_PROTO_CONFIG_IO_H_
#define LOOM_PROTO_CONFIG_IO_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include <google/protobuf/generated_enum_reflection.h>
#include <google/protobuf/message.h>

#include "csrc/core/status.h"
#include "csrc/proto/config.pb.h"
#include "csrc/proto/train.pb.h"

namespace loom::config {

// ---------------------------------------------------------------------------------------------
// Parsing any text-format schema.

// Parses `text` into `*message` (cleared first). `source` names the text in errors ("a.pbtxt",
// "--set #2"). Unknown fields, unknown enum values and repeated singular fields are errors.
Status ParseTextProto(std::string_view text, const std::string& source,
                      google::protobuf::Message* message);

// Reads and parses the file at `path` into `*message` (cleared first); errors name the file.
Status ParseTextProtoFileInto(const std::string& path, google::protobuf::Message* message);

// The same as a value: `auto plan = ParseTextProtoFile<proto::ShardingPlan>(path);`.
template <typename Msg>
StatusOr<Msg> ParseTextProtoFile(const std::string& path) {
  Msg message;
  LOOM_RETURN_IF_ERROR(ParseTextProtoFileInto(path, &message));
  return message;
}

// Merges `override_message` into `*target` by the override merge rule above. Both must be of
// the same message type (a CHECK: a mismatch is a bug).
void MergeOverride(const google::protobuf::Message& override_message,
                   google::protobuf::Message* target);

// Parses each override (text format of the same message type as `*message`) and merges it
// onto `*message` in order, so later overrides win. Errors name "--set #<i>" (1-based).
Status ApplyOverrides(const std::vector<std::string>& overrides,
                      google::protobuf::Message* message);

// ---------------------------------------------------------------------------------------------
// LoomConfig.

// Loads `path`, applies `overrides` in order (ApplyOverrides) and validates the result
// (Validate, built-in sections only). The one call a program makes to get its config.
StatusOr<proto::LoomConfig> LoadConfig(const std::string& path,
                                       const std::vector<std::string>& overrides = {});

class ValidationErrors;

// A validator for a section owned by another module; it reports through `errors`, which is
// rooted at the LoomConfig (use errors.Path("model") for paths like "model.num_heads").
using SectionValidator =
    std::function<void(const proto::LoomConfig& config, ValidationErrors errors)>;

// Checks every range and cross-field rule that can be checked without the world size or the
// data: the train section (ValidateTrain), then each of `more` in order. Reports every error
// found, not only the first. OK or InvalidArgument.
Status Validate(const proto::LoomConfig& config, const std::vector<SectionValidator>& more = {});

// The train section's rules; `errors` is the collector for the "train" path:
// ValidateTrain(config.train(), errors.Path("train")).
void ValidateTrain(const proto::TrainConfig& train, ValidationErrors errors);

// B for world size R (`world_size` >= 1): local_batch_size, or global_batch_size / R, which
// must divide exactly ("train.global_batch_size: must be divisible by the world size 3, got
// 1000"). InvalidArgument otherwise.
StatusOr<int64_t> ResolveLocalBatchSize(const proto::TrainConfig& train, int world_size);

// The checkpoint directory: checkpoint.dir, or "<run_dir>/checkpoints" when that is empty.
std::string CheckpointDir(const proto::TrainConfig& train);

// ---------------------------------------------------------------------------------------------
// Printing.

// Text format of `message`: the fields that are set. Parseable by ParseTextProto (round trip:
// parse(ToText(m)) == m).
std::string ToText(const google::protobuf::Message& message);

// Sets every unset optional scalar, enum and string field to its declared default, in
// `message` and in every sub-message that is present (repeated ones included), so the text
// states those values. Never creates an absent sub-message and never sets a oneof member:
// their presence can carry meaning (e.g. a schedule's parameter block that "must be unset for
// other types"). Leaves repeated scalar fields as they are (an empty list keeps its meaning).
void FillDefaults(google::protobuf::Message* message);

// The config as it is run, every value spelled out: the five sections and train.checkpoint /
// train.early_stopping are created (their absence means "all defaults", config.proto), then
// FillDefaults. It parses back to a config that behaves identically, and keeps doing so when a
// default changes in the code. What rank 0 logs and WriteEffectiveConfig writes.
proto::LoomConfig EffectiveConfig(const proto::LoomConfig& config);

// Name of the file WriteEffectiveConfig writes inside the run directory.
inline constexpr char kEffectiveConfigFileName[] = "effective_config.pbtxt";

// Writes a header comment and ToText(EffectiveConfig(config)) to
// "<run_dir>/effective_config.pbtxt", creating run_dir and replacing the file atomically (a
// temporary + rename). Call it on rank 0 only. Errors name the path.
Status WriteEffectiveConfig(const proto::LoomConfig& config, const std::string& run_dir);

// ---------------------------------------------------------------------------------------------
// Validation helper, for this file's sections and for other modules' own sections:
//
//   void ValidateOptimizer(const proto::OptimizerConfig& o, ValidationErrors errors) {
//     errors.RequireGt("lr", o.lr(), 0);        // "optimizer.lr: must be > 0, got -1"
//     errors.RequireInRange("beta1", o.beta1(), 0, 1, /*hi_open=*/true);
//     errors.Require(o.momentum() == 0 || o.type() == proto::OptimizerConfig::OPTIMIZER_TYPE_SGD,
//                    "momentum", "is only used by OPTIMIZER_TYPE_SGD", o.momentum());
//   }
//   ValidationErrors errors;
//   ValidateOptimizer(config.optimizer(), errors.Path("optimizer"));
//   LOOM_RETURN_IF_ERROR(errors.ToStatus());
//
// A ValidationErrors is a cheap handle: copies (and the collectors Path() returns) share one
// error list, so pass it by value.
class ValidationErrors {
  // Makes a template parameter non-deduced, so a bound converts to the value's type.
  template <typename T>
  struct Identity {
    using type = T;
  };
  template <typename T>
  using Same = typename Identity<T>::type;

 public:
  ValidationErrors();

  // A collector for the sub-message `field`: its errors read "<this path>.<field>.<...>".
  // Indexed paths work too: errors.Path("tables[3]").
  ValidationErrors Path(std::string_view field) const;

  // "<path>.<field>" (or just `field` at the root).
  std::string FieldPath(std::string_view field) const;

  // Records "<path>.<field>: <message>".
  void Add(std::string_view field, std::string_view message);

  // Records "<path>.<field>: <what>, got <value>" unless `condition`; returns `condition`.
  template <typename T>
  bool Require(bool condition, std::string_view field, std::string_view what, const T& value) {
    if (!condition) Add(field, std::string(what) + ", got " + FormatValue(value));
    return condition;
  }

  // Comparisons against a bound: "must be > 0, got -1" and so on. The bound is converted to
  // the value's type (RequireGt("lr", lr, 0) compares floats).
  template <typename T>
  bool RequireGt(std::string_view field, T value, Same<T> bound) {
    return Require(value > bound, field, "must be > " + FormatValue(bound), value);
  }
  template <typename T>
  bool RequireGe(std::string_view field, T value, Same<T> bound) {
    return Require(value >= bound, field, "must be >= " + FormatValue(bound), value);
  }
  template <typename T>
  bool RequireLt(std::string_view field, T value, Same<T> bound) {
    return Require(value < bound, field, "must be < " + FormatValue(bound), value);
  }
  template <typename T>
  bool RequireLe(std::string_view field, T value, Same<T> bound) {
    return Require(value <= bound, field, "must be <= " + FormatValue(bound), value);
  }
  // lo <= value <= hi ("must be in [lo, hi]"); with hi_open, value < hi ("[lo, hi)").
  // A NaN is never in range.
  template <typename T>
  bool RequireInRange(std::string_view field, T value, Same<T> lo, Same<T> hi,
                      bool hi_open = false) {
    const bool in_range = value >= lo && (hi_open ? value < hi : value <= hi);
    return Require(
        in_range, field,
        "must be in [" + FormatValue(lo) + ", " + FormatValue(hi) + (hi_open ? ")" : "]"), value);
  }
  // A non-empty string.
  bool RequireNonEmpty(std::string_view field, const std::string& value);

  bool ok() const { return errors_->empty(); }
  const std::vector<std::string>& errors() const { return *errors_; }
  // OK, or InvalidArgument with every error joined by "; ".
  Status ToStatus() const;

  // Shortest text that reads back as the same value: 0.1 (not 0.100000001), -1, 1e+20, nan,
  // true; strings are quoted.
  static std::string FormatValue(double value);
  static std::string FormatValue(float value);
  static std::string FormatValue(bool value);
  static std::string FormatValue(const std::string& value);
  static std::string FormatValue(const char* value);
  // Integers as decimal; generated proto enums by value name ("DEVICE_CPU"), other enums
  // by number.
  template <typename T>
  static std::string FormatValue(T value) {
    static_assert(std::is_integral_v<T> || std::is_enum_v<T>, "unsupported value type");
    if constexpr (google::protobuf::is_proto_enum<T>::value) {
      const auto* value_descriptor =
          google::protobuf::GetEnumDescriptor<T>()->FindValueByNumber(static_cast<int>(value));
      if (value_descriptor != nullptr) return value_descriptor->name();
      return std::to_string(static_cast<int64_t>(value));
    } else if constexpr (std::is_enum_v<T>) {
      return std::to_string(static_cast<int64_t>(value));
    } else {
      return std::to_string(value);
    }
  }

 private:
  ValidationErrors(std::shared_ptr<std::vector<std::string>> errors, std::string path);

  std::shared_ptr<std::vector<std::string>> errors_;
  std::string path_;
};

}  // namespace loom::config

#endif  // LOOM_PROTO_CONFIG_IO_H_
