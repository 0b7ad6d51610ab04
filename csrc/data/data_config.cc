#include "csrc/data/data_config.h"

#include "csrc/data/schema.h"

namespace loom::data {
namespace {

StatusOr<std::unique_ptr<Reader>> OpenFromConfig(
    const proto::DataConfig& config,
    const google::protobuf::RepeatedPtrField<std::string>& patterns, const char* field,
    const ReaderOptions& options, int rank, int world_size) {
  LOOM_RETURN_IF_ERROR(ValidateDataConfig(config));
  if (patterns.empty()) return InvalidArgumentError(std::string("data.") + field + ": empty");
  auto files = ExpandFilePatterns({patterns.begin(), patterns.end()});
  if (!files.ok()) return files.status().WithContext(std::string("data.") + field);
  proto::DataSchema schema;
  const proto::DataSchema* expected = nullptr;
  if (!config.schema_file().empty()) {
    LOOM_RETURN_IF_ERROR(
        ReadTextProto(config.schema_file(), &schema).WithContext("data.schema_file"));
    expected = &schema;
  }
  return Reader::Open(*files, expected, rank, world_size, options);
}

}  // namespace

Status ValidateDataConfig(const proto::DataConfig& config) {
  const proto::ReaderConfig& r = config.reader();
  if (r.prefetch_blocks() < 1) {
    return InvalidArgumentError("data.reader.prefetch_blocks: must be >= 1, got " +
                                std::to_string(r.prefetch_blocks()));
  }
  if (r.shuffle_buffer_rows() < 0 || r.shuffle_buffer_rows() >= (int64_t{1} << 31)) {
    return InvalidArgumentError("data.reader.shuffle_buffer_rows: must be in [0, 2^31), got " +
                                std::to_string(r.shuffle_buffer_rows()));
  }
  if (r.max_bad_records() < 0) {
    return InvalidArgumentError("data.reader.max_bad_records: must be >= 0, got " +
                                std::to_string(r.max_bad_records()));
  }
  for (int i = 0; i < config.train_files_size(); ++i) {
    if (config.train_files(i).empty()) {
      return InvalidArgumentError("data.train_files[" + std::to_string(i) + "]: empty path");
    }
  }
  for (int i = 0; i < config.eval_files_size(); ++i) {
    if (config.eval_files(i).empty()) {
      return InvalidArgumentError("data.eval_files[" + std::to_string(i) + "]: empty path");
    }
  }
  return Status::Ok();
}

StatusOr<std::unique_ptr<Reader>> OpenTrainReader(const proto::DataConfig& config, int rank,
                                                  int world_size) {
  return OpenFromConfig(config, config.train_files(), "train_files",
                        ReaderOptions::FromConfig(config.reader()), rank, world_size);
}

StatusOr<std::unique_ptr<Reader>> OpenEvalReader(const proto::DataConfig& config, int rank,
                                                 int world_size) {
  return OpenFromConfig(config, config.eval_files(), "eval_files",
                        ReaderOptions::FromConfig(config.reader()).ForEval(), rank, world_size);
}

}  // namespace loom::data
