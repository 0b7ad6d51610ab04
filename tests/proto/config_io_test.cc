#include "csrc/proto/config_io.h"

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include <google/protobuf/util/message_differencer.h>
#include <gtest/gtest.h>

#include "csrc/proto/model.pb.h"

namespace loom::config {
namespace {

using ::google::protobuf::util::MessageDifferencer;

// Each test gets a fresh directory under the system temp dir, removed afterwards.
class ConfigIoTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern =
        (std::filesystem::temp_directory_path() / "loom_config_io_test.XXXXXX").string();
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
  }
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  // Writes `text` to <dir>/<name> and returns the path.
  std::string Write(const std::string& name, const std::string& text) {
    std::string path = (dir_ / name).string();
    std::ofstream out(path, std::ios::binary);
    out << text;
    EXPECT_TRUE(out.good()) << path;
    return path;
  }

  std::filesystem::path dir_;
};

std::string Message(const Status& status) { return status.message(); }

// EXPECT_TRUE(Contains(text, part)): prints both on failure.
::testing::AssertionResult Contains(const std::string& text, const std::string& part) {
  if (text.find(part) != std::string::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << "\"" << text << "\"\n  does not contain\n\"" << part << "\"";
}

// ---------------------------------------------------------------------------------------------
// Syntax errors and unknown fields: "<file>:<line>:<col>: ..." with 1-based positions.

TEST_F(ConfigIoTest, MalformedFileReportsFileLineAndColumn) {
  // Line 3 lacks the ':' after a scalar field name; the parser stops at the value token,
  // which starts at byte 19 of "  local_batch_size 32" (0-based) = column 20.
  const std::string path = Write("bad.pbtxt",
                                 "train {\n"
                                 "  seed: 1\n"
                                 "  local_batch_size 32\n"
                                 "}\n");
  StatusOr<proto::LoomConfig> config = LoadConfig(path);
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.status().code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(Contains(Message(config.status()), path + ":3:20: "));
  EXPECT_TRUE(Contains(Message(config.status()), "Expected \":\""));
}

TEST_F(ConfigIoTest, ColumnCountsATabAsOneColumn) {
  // protobuf's tokenizer would say column 15 (tab = 8); the report must count bytes: "abc"
  // starts at byte 7 of "\tseed: abc" = column 8.
  const std::string path = Write("tab.pbtxt", "train {\n\tseed: abc\n}\n");
  StatusOr<proto::LoomConfig> config = LoadConfig(path);
  ASSERT_FALSE(config.ok());
  EXPECT_TRUE(Contains(Message(config.status()), path + ":2:8: "));
}

TEST_F(ConfigIoTest, UnclosedBraceAtEndOfFileIsReported) {
  const std::string path = Write("unclosed.pbtxt", "train {\n  seed: 1\n");
  StatusOr<proto::LoomConfig> config = LoadConfig(path);
  ASSERT_FALSE(config.ok());
  // The error is at end of input: line 3 (after the last newline), column 1.
  EXPECT_TRUE(Contains(Message(config.status()), path + ":3:1: "));
}

TEST_F(ConfigIoTest, UnknownFieldIsAnErrorNamingFieldFileAndLine) {
  const std::string path = Write("unknown.pbtxt",
                                 "train {\n"
                                 "  seed: 1\n"
                                 "  bogus_field: 3\n"
                                 "}\n");
  StatusOr<proto::LoomConfig> config = LoadConfig(path);
  ASSERT_FALSE(config.ok());
  const std::string message = Message(config.status());
  EXPECT_TRUE(Contains(message, path + ":3:3: "));  // the start of the unknown name
  EXPECT_TRUE(Contains(message, "\"bogus_field\""));
  EXPECT_TRUE(Contains(message, "loom.proto.TrainConfig"));
}

TEST_F(ConfigIoTest, UnknownTopLevelSectionIsAnError) {
  const std::string path = Write("section.pbtxt", "trian { seed: 1 }\n");
  StatusOr<proto::LoomConfig> config = LoadConfig(path);
  ASSERT_FALSE(config.ok());
  EXPECT_TRUE(Contains(Message(config.status()), path + ":1:1: "));
  EXPECT_TRUE(Contains(Message(config.status()), "\"trian\""));
}

TEST_F(ConfigIoTest, UnknownEnumValueIsAnErrorNamingTheValue) {
  const std::string path = Write("enum.pbtxt", "train { device: DEVICE_TPU }\n");
  StatusOr<proto::LoomConfig> config = LoadConfig(path);
  ASSERT_FALSE(config.ok());
  EXPECT_TRUE(Contains(Message(config.status()), path + ":1:17: "));
  EXPECT_TRUE(Contains(Message(config.status()), "DEVICE_TPU"));
}

TEST_F(ConfigIoTest, SingularFieldWrittenTwiceIsAnError) {
  const std::string path = Write("twice.pbtxt", "train {\n  seed: 1\n  seed: 2\n}\n");
  StatusOr<proto::LoomConfig> config = LoadConfig(path);
  ASSERT_FALSE(config.ok());
  EXPECT_TRUE(Contains(Message(config.status()), path + ":3:3: "));
  EXPECT_TRUE(Contains(Message(config.status()), "\"seed\""));
}

TEST_F(ConfigIoTest, MissingFileIsNotFoundNamingThePath) {
  const std::string path = (dir_ / "absent.pbtxt").string();
  StatusOr<proto::LoomConfig> config = LoadConfig(path);
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.status().code(), StatusCode::kNotFound);
  EXPECT_TRUE(Contains(Message(config.status()), path + ": cannot open: "));
}

// ---------------------------------------------------------------------------------------------
// Loading and validation.

TEST_F(ConfigIoTest, EmptyFileGivesAllDefaults) {
  const std::string path = Write("empty.pbtxt", "# nothing but a comment\n");
  StatusOr<proto::LoomConfig> config = LoadConfig(path);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->train().seed(), 1u);
  EXPECT_EQ(config->train().local_batch_size(), 256);
  EXPECT_EQ(config->train().epochs(), 1);
  EXPECT_EQ(config->train().run_dir(), "runs/loom");
  EXPECT_EQ(config->train().device(), proto::TrainConfig::DEVICE_CPU);
  EXPECT_EQ(config->model().embedding_dim(), 64);
}

TEST_F(ConfigIoTest, InvalidValueReportsTheFieldPath) {
  const std::string path = Write("zero.pbtxt", "train { local_batch_size: 0 }\n");
  StatusOr<proto::LoomConfig> config = LoadConfig(path);
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.status().code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(Contains(Message(config.status()), path + ": "));
  EXPECT_TRUE(Contains(Message(config.status()), "train.local_batch_size: must be > 0, got 0"));
}

TEST(ValidateTest, ReportsEveryErrorWithItsPath) {
  proto::LoomConfig config;
  proto::TrainConfig* train = config.mutable_train();
  train->set_global_batch_size(-8);
  train->set_log_every_steps(0);
  train->set_run_dir("");
  train->mutable_checkpoint()->set_keep_last(-1);
  train->mutable_early_stopping()->set_min_delta(-0.5);
  const Status status = Validate(config);
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.message(),
            "train.global_batch_size: must be > 0, got -8; "
            "train.log_every_steps: must be > 0, got 0; "
            "train.run_dir: must not be empty; "
            "train.checkpoint.keep_last: must be in [0, 1000000], got -1; "
            "train.early_stopping.min_delta: must be >= 0, got -0.5");
}

TEST(ValidateTest, NoStoppingCriterionIsAnError) {
  proto::LoomConfig config;
  config.mutable_train()->set_epochs(0);
  config.mutable_train()->set_max_steps(0);
  EXPECT_TRUE(
      Contains(Validate(config).message(), "train.max_steps: must be > 0 when epochs is 0"));
  config.mutable_train()->set_max_steps(10);
  EXPECT_TRUE(Validate(config).ok());
}

TEST(ValidateTest, NcclNeedsCudaAndNamesTheEnumValues) {
  proto::LoomConfig config;
  config.mutable_train()->set_comm_backend(proto::TrainConfig::COMM_BACKEND_NCCL);
  EXPECT_EQ(Validate(config).message(),
            "train.comm_backend: COMM_BACKEND_NCCL requires device: DEVICE_CUDA, got device: "
            "DEVICE_CPU");
  config.mutable_train()->set_device(proto::TrainConfig::DEVICE_CUDA);
  EXPECT_TRUE(Validate(config).ok());
}

TEST(ValidateTest, NanMinDeltaIsRejected) {
  proto::LoomConfig config;
  config.mutable_train()->mutable_early_stopping()->set_min_delta(
      std::numeric_limits<double>::quiet_NaN());
  EXPECT_EQ(Validate(config).message(), "train.early_stopping.min_delta: must be >= 0, got nan");
  config.mutable_train()->mutable_early_stopping()->set_min_delta(
      std::numeric_limits<double>::infinity());
  EXPECT_EQ(Validate(config).message(), "train.early_stopping.min_delta: must be finite, got inf");
}

TEST(ValidateTest, SectionValidatorsOfOtherModulesReportTheirPaths) {
  // What another owner writes for its section: a function over the collector.
  const SectionValidator model_rules = [](const proto::LoomConfig& c, ValidationErrors errors) {
    ValidationErrors model = errors.Path("model");
    model.RequireGe("num_layers", c.model().num_layers(), 1);
    model.Require(c.model().embedding_dim() % c.model().num_heads() == 0, "num_heads",
                  "must divide embedding_dim (" + std::to_string(c.model().embedding_dim()) + ")",
                  c.model().num_heads());
  };
  proto::LoomConfig config;
  config.mutable_model()->set_num_layers(0);
  config.mutable_model()->set_num_heads(3);
  config.mutable_train()->set_local_batch_size(-1);
  EXPECT_EQ(Validate(config, {model_rules}).message(),
            "train.local_batch_size: must be > 0, got -1; "
            "model.num_layers: must be >= 1, got 0; "
            "model.num_heads: must divide embedding_dim (64), got 3");
}

TEST(ValidationErrorsTest, PathsNestAndValuesPrintShortest) {
  ValidationErrors errors;
  EXPECT_TRUE(errors.ok());
  ValidationErrors optimizer = errors.Path("optimizer");
  EXPECT_FALSE(optimizer.RequireGt("lr", -1.0f, 0));
  EXPECT_TRUE(optimizer.RequireGt("lr", 0.1f, 0));
  EXPECT_FALSE(optimizer.Path("adam").RequireInRange("beta1", 1.0, 0.0, 1.0, /*hi_open=*/true));
  EXPECT_FALSE(errors.Path("tables[3]").RequireLt("dim", int64_t{4096}, 4096));
  EXPECT_FALSE(errors.Require(false, "name", "must be a known table", std::string("clicks")));
  EXPECT_FALSE(errors.ok());
  EXPECT_EQ(errors.errors(), (std::vector<std::string>{
                                 "optimizer.lr: must be > 0, got -1",
                                 "optimizer.adam.beta1: must be in [0, 1), got 1",
                                 "tables[3].dim: must be < 4096, got 4096",
                                 "name: must be a known table, got \"clicks\"",
                             }));
  EXPECT_EQ(ValidationErrors::FormatValue(0.1f), "0.1");
  EXPECT_EQ(ValidationErrors::FormatValue(0.1), "0.1");
  EXPECT_EQ(ValidationErrors::FormatValue(1e-5f), "1e-05");
  EXPECT_EQ(ValidationErrors::FormatValue(uint64_t{18446744073709551615u}), "18446744073709551615");
  EXPECT_EQ(ValidationErrors::FormatValue(true), "true");
  EXPECT_EQ(ValidationErrors::FormatValue(proto::TrainConfig::DEVICE_CUDA), "DEVICE_CUDA");
}

TEST(ResolveLocalBatchSizeTest, LocalOrGlobalOverWorldSize) {
  proto::TrainConfig train;
  StatusOr<int64_t> b = ResolveLocalBatchSize(train, 4);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(*b, 256);  // default local batch, independent of R
  train.set_global_batch_size(1024);
  b = ResolveLocalBatchSize(train, 4);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(*b, 256);
  b = ResolveLocalBatchSize(train, 3);
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.status().message(),
            "train.global_batch_size: must be divisible by the world size 3, got 1024");
  EXPECT_FALSE(ResolveLocalBatchSize(train, 0).ok());
}

TEST(CheckpointDirTest, DefaultsUnderTheRunDirectory) {
  proto::TrainConfig train;
  train.set_run_dir("runs/a");
  EXPECT_EQ(CheckpointDir(train), "runs/a/checkpoints");
  train.mutable_checkpoint()->set_dir("/ckpt");
  EXPECT_EQ(CheckpointDir(train), "/ckpt");
}

// ---------------------------------------------------------------------------------------------
// Overrides.

TEST_F(ConfigIoTest, OverridesMergeInOrderAndLaterOnesWin) {
  const std::string path = Write("base.pbtxt",
                                 "train { seed: 1 local_batch_size: 32 log_every_steps: 10 }\n"
                                 "model { num_layers: 2 head_hidden_dims: [64, 32] }\n");
  StatusOr<proto::LoomConfig> config =
      LoadConfig(path, {"train { seed: 2 }", "train { seed: 3 log_every_steps: 5 }",
                        "model { head_hidden_dims: 16 }"});
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->train().seed(), 3u);              // last override wins
  EXPECT_EQ(config->train().log_every_steps(), 5);    // overridden once
  EXPECT_EQ(config->train().local_batch_size(), 32);  // untouched, from the file
  EXPECT_EQ(config->model().num_layers(), 2);         // sibling in a merged section kept
  // A repeated field in an override replaces the list, it does not append.
  EXPECT_EQ(std::vector<int>(config->model().head_hidden_dims().begin(),
                             config->model().head_hidden_dims().end()),
            std::vector<int>{16});
}

TEST_F(ConfigIoTest, OverrideOfTheOtherOneofMemberReplacesIt) {
  const std::string path = Write("batch.pbtxt", "train { local_batch_size: 32 }\n");
  StatusOr<proto::LoomConfig> config = LoadConfig(path, {"train { global_batch_size: 512 }"});
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->train().batch_size_case(), proto::TrainConfig::kGlobalBatchSize);
  EXPECT_EQ(config->train().global_batch_size(), 512);
  config = LoadConfig(path, {"train { global_batch_size: 512 }", "train { local_batch_size: 8 }"});
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->train().batch_size_case(), proto::TrainConfig::kLocalBatchSize);
  EXPECT_EQ(config->train().local_batch_size(), 8);
}

TEST_F(ConfigIoTest, BadOverrideIsNamedByItsIndex) {
  const std::string path = Write("ok.pbtxt", "train { seed: 1 }\n");
  StatusOr<proto::LoomConfig> config = LoadConfig(path, {"train { seed: 2 }", "train { sed: 3 }"});
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.status().code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(Contains(Message(config.status()), "--set #2:1:9: "));
  EXPECT_TRUE(Contains(Message(config.status()), "\"sed\""));
  EXPECT_TRUE(Contains(Message(config.status()), "[override: train { sed: 3 }]"));

  config = LoadConfig(path, {"train { seed: 2 "});  // unbalanced
  ASSERT_FALSE(config.ok());
  EXPECT_TRUE(Contains(Message(config.status()), "--set #1:1:"));
}

TEST_F(ConfigIoTest, InvalidValueFromAnOverrideReportsTheFieldPath) {
  const std::string path = Write("ok.pbtxt", "train { seed: 1 }\n");
  StatusOr<proto::LoomConfig> config = LoadConfig(path, {"train { local_batch_size: -4 }"});
  ASSERT_FALSE(config.ok());
  EXPECT_TRUE(Contains(Message(config.status()), "(after --set overrides)"));
  EXPECT_TRUE(Contains(Message(config.status()), "train.local_batch_size: must be > 0, got -4"));
}

// ---------------------------------------------------------------------------------------------
// Printing and the effective config.

proto::LoomConfig SampleConfig() {
  proto::LoomConfig config;
  proto::TrainConfig* train = config.mutable_train();
  train->set_seed(18446744073709551615u);
  train->set_global_batch_size(4096);
  train->set_max_steps(1000);
  train->set_run_dir("runs/ünïcode dir");
  train->set_device(proto::TrainConfig::DEVICE_CUDA);
  train->mutable_checkpoint()->set_every_steps(100);
  train->mutable_early_stopping()->set_metric(proto::EarlyStoppingConfig::METRIC_NE);
  train->mutable_early_stopping()->set_min_delta(1e-4);
  config.mutable_model()->set_layer_norm_eps(1e-6f);
  config.mutable_model()->set_rope_base(12345.678f);
  config.mutable_model()->add_head_hidden_dims(128);
  config.mutable_model()->add_head_hidden_dims(64);
  return config;
}

TEST(ToTextTest, RoundTripsThroughTheParser) {
  const proto::LoomConfig config = SampleConfig();
  const std::string text = ToText(config);
  proto::LoomConfig parsed;
  ASSERT_TRUE(ParseTextProto(text, "printed", &parsed).ok()) << text;
  EXPECT_TRUE(MessageDifferencer::Equals(config, parsed)) << text;
  EXPECT_TRUE(Contains(text, "runs/ünïcode dir"));  // not octal-escaped
}

TEST(EffectiveConfigTest, SpellsOutEveryFieldAndRoundTrips) {
  proto::LoomConfig config;
  config.mutable_train()->set_seed(5);
  const proto::LoomConfig effective = EffectiveConfig(config);
  const std::string text = ToText(effective);
  EXPECT_TRUE(Contains(text, "seed: 5"));
  EXPECT_TRUE(Contains(text, "log_every_steps: 100"));
  EXPECT_TRUE(Contains(text, "run_dir: \"runs/loom\""));
  EXPECT_TRUE(Contains(text, "keep_last: 3"));        // train.checkpoint created
  EXPECT_TRUE(Contains(text, "metric: METRIC_AUC"));  // train.early_stopping created
  EXPECT_TRUE(Contains(text, "embedding_dim: 64"));   // the model section created
  EXPECT_TRUE(effective.has_embedding() && effective.has_optimizer() && effective.has_data());
  // The batch-size oneof is left as it is (no member set = the documented default).
  EXPECT_EQ(text.find("\n  local_batch_size:"), std::string::npos) << text;
  EXPECT_EQ(text.find("\n  global_batch_size:"), std::string::npos) << text;

  proto::LoomConfig parsed;
  ASSERT_TRUE(ParseTextProto(text, "printed", &parsed).ok()) << text;
  EXPECT_TRUE(MessageDifferencer::Equals(effective, parsed));
  // Every optional scalar of the train section is now explicitly present...
  const auto* descriptor = proto::TrainConfig::descriptor();
  for (int i = 0; i < descriptor->field_count(); ++i) {
    const auto* field = descriptor->field(i);
    if (field->real_containing_oneof() != nullptr) continue;
    EXPECT_TRUE(parsed.train().GetReflection()->HasField(parsed.train(), field)) << field->name();
  }
  // ...and every value is unchanged: filling defaults changes presence, never meaning.
  EXPECT_TRUE(MessageDifferencer::Equivalent(config, parsed));
}

TEST(FillDefaultsTest, CompletesPresentMessagesButNeverCreatesOne) {
  proto::LoomConfig config;
  config.mutable_train()->set_seed(5);
  FillDefaults(&config);
  EXPECT_TRUE(config.train().has_log_every_steps());
  EXPECT_EQ(config.train().log_every_steps(), 100);
  // Absent sub-messages stay absent: their presence may carry meaning in other schemas.
  EXPECT_FALSE(config.has_model());
  EXPECT_FALSE(config.train().has_checkpoint());
  // Oneof members are never set.
  EXPECT_EQ(config.train().batch_size_case(), proto::TrainConfig::BATCH_SIZE_NOT_SET);
  // Repeated scalars keep their (empty) list.
  config.mutable_model();
  FillDefaults(&config);
  EXPECT_EQ(config.model().head_hidden_dims_size(), 0);
  EXPECT_TRUE(config.model().has_num_layers());
}

TEST_F(ConfigIoTest, EffectiveConfigIsWrittenAndLoadsBack) {
  const std::string path = Write("run.pbtxt", "train { seed: 9 max_steps: 20 }\n");
  StatusOr<proto::LoomConfig> config = LoadConfig(path, {"train { log_every_steps: 2 }"});
  ASSERT_TRUE(config.ok()) << config.status();
  const std::filesystem::path run_dir = dir_ / "run" / "nested";
  ASSERT_TRUE(WriteEffectiveConfig(*config, run_dir.string()).ok());
  const std::string written = (run_dir / kEffectiveConfigFileName).string();
  StatusOr<proto::LoomConfig> reloaded = LoadConfig(written);
  ASSERT_TRUE(reloaded.ok()) << reloaded.status();
  EXPECT_TRUE(MessageDifferencer::Equivalent(*config, *reloaded));
  EXPECT_EQ(reloaded->train().seed(), 9u);
  EXPECT_EQ(reloaded->train().log_every_steps(), 2);
  EXPECT_TRUE(reloaded->train().has_eval_every_steps());  // defaults spelled out
  EXPECT_TRUE(reloaded->train().checkpoint().has_keep_last());
  EXPECT_TRUE(reloaded->model().has_embedding_dim());
  // Written again (a resumed run): replaced, and no temporary file is left behind.
  ASSERT_TRUE(WriteEffectiveConfig(*reloaded, run_dir.string()).ok());
  int files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(run_dir)) {
    (void)entry;
    ++files;
  }
  EXPECT_EQ(files, 1);
}

TEST_F(ConfigIoTest, EffectiveConfigErrorNamesThePath) {
  // A regular file where the run directory should be.
  const std::string blocker = Write("blocker", "x");
  const Status status = WriteEffectiveConfig(proto::LoomConfig(), blocker + "/sub");
  ASSERT_FALSE(status.ok());
  EXPECT_TRUE(Contains(status.message(), blocker + "/sub"));
}

// ---------------------------------------------------------------------------------------------
// The generic parser, for other schemas.

TEST_F(ConfigIoTest, ParseTextProtoFileWorksForAnySchema) {
  const std::string good = Write("model.pbtxt", "num_layers: 5\nuse_rope: false\n");
  StatusOr<proto::ModelConfig> model = ParseTextProtoFile<proto::ModelConfig>(good);
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ(model->num_layers(), 5);
  EXPECT_FALSE(model->use_rope());

  const std::string bad = Write("bad_model.pbtxt", "num_layers: 5\nnum_layer: 6\n");
  model = ParseTextProtoFile<proto::ModelConfig>(bad);
  ASSERT_FALSE(model.ok());
  EXPECT_TRUE(Contains(model.status().message(), bad + ":2:1: "));
  EXPECT_TRUE(Contains(model.status().message(), "loom.proto.ModelConfig"));

  // The column points at the unknown name itself, not at a longer known name containing it.
  const std::string one_line = Write("one_line.pbtxt", "num_layers: 5 num_layer: 6\n");
  model = ParseTextProtoFile<proto::ModelConfig>(one_line);
  ASSERT_FALSE(model.ok());
  EXPECT_TRUE(Contains(model.status().message(), one_line + ":1:15: "));
}

}  // namespace
}  // namespace loom::config
