#include "csrc/data/writer.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "csrc/data/schema.h"

namespace loom::data {

StatusOr<std::unique_ptr<ShardWriter>> ShardWriter::Create(const std::string& path,
                                                           const proto::DataSchema& schema,
                                                           const WriterOptions& options,
                                                           int64_t shard_index) {
  LOOM_RETURN_IF_ERROR(ValidateSchema(schema));
  if (options.block_rows < 1 || options.block_rows > kMaxBlockRows) {
    return InvalidArgumentError("block_rows must be in [1, 2^24], got " +
                                std::to_string(options.block_rows));
  }
  std::unique_ptr<ShardWriter> w(new ShardWriter());
  w->path_ = path;
  w->tmp_path_ = path + ".tmp";
  w->schema_ = schema;
  w->options_ = options;
  w->builder_ = std::make_unique<BlockBuilder>(schema);
  w->file_ = std::fopen(w->tmp_path_.c_str(), "wb");
  if (w->file_ == nullptr) {
    return NotFoundError(w->tmp_path_ + ": cannot create: " + std::strerror(errno));
  }
  proto::ShardHeader header;
  *header.mutable_schema() = schema;
  header.set_producer(options.producer);
  header.set_shard_index(shard_index);
  LOOM_RETURN_IF_ERROR(w->WriteBytes(EncodeFileHeader(header)));
  return w;
}

ShardWriter::~ShardWriter() {
  if (file_ != nullptr) {
    std::fclose(file_);
    std::remove(tmp_path_.c_str());
  }
}

Status ShardWriter::WriteBytes(const std::string& bytes) {
  if (std::fwrite(bytes.data(), 1, bytes.size(), file_) != bytes.size()) {
    return DataLossError(tmp_path_ + ": write failed at offset " + std::to_string(offset_) + ": " +
                         std::strerror(errno));
  }
  offset_ += bytes.size();
  return Status::Ok();
}

Status ShardWriter::Add(const Example& example) {
  if (file_ == nullptr) return FailedPreconditionError(path_ + ": Add after Close");
  Status s = builder_->Add(example);
  if (!s.ok()) return s.WithContext(path_ + ": row " + std::to_string(rows_));
  ++rows_;
  if (builder_->rows() >= options_.block_rows) return FlushBlock();
  return Status::Ok();
}

Status ShardWriter::FlushBlock() {
  if (builder_->rows() == 0) return Status::Ok();
  const int64_t rows = builder_->rows();
  builder_->Finish(&scratch_);
  proto::ShardFooter::Block* b = footer_.add_block();
  b->set_offset(offset_);
  b->set_bytes(scratch_.size());
  b->set_rows(rows);
  return WriteBytes(scratch_);
}

Status ShardWriter::Close() {
  if (file_ == nullptr) return FailedPreconditionError(path_ + ": closed twice");
  LOOM_RETURN_IF_ERROR(FlushBlock());
  footer_.set_rows(rows_);
  footer_.set_label_sum(builder_->label_sum());
  const auto& stats = builder_->id_stats();
  for (size_t i = 0; i < stats.size(); ++i) {
    const int f = static_cast<int>(i);
    auto* st = footer_.add_id_stats();
    st->set_feature(f < schema_.sparse_size() ? schema_.sparse(f).name()
                                              : schema_.sequence(f - schema_.sparse_size()).name());
    st->set_max_id(stats[i].max_id);
    st->set_num_ids(stats[i].num_ids);
    st->set_max_length(stats[i].max_length);
  }
  LOOM_RETURN_IF_ERROR(WriteBytes(EncodeFooter(footer_, offset_)));
  FILE* f = file_;
  file_ = nullptr;
  if (std::fclose(f) != 0) {
    std::remove(tmp_path_.c_str());
    return DataLossError(tmp_path_ + ": close failed: " + std::strerror(errno));
  }
  if (std::rename(tmp_path_.c_str(), path_.c_str()) != 0) {
    return DataLossError(path_ + ": rename failed: " + std::strerror(errno));
  }
  return Status::Ok();
}

void MergeFooterStats(const proto::ShardFooter& from, proto::ShardFooter* into) {
  into->set_rows(into->rows() + from.rows());
  into->set_label_sum(into->label_sum() + from.label_sum());
  if (into->id_stats_size() == 0) {
    *into->mutable_id_stats() = from.id_stats();
    return;
  }
  for (int i = 0; i < from.id_stats_size() && i < into->id_stats_size(); ++i) {
    auto* d = into->mutable_id_stats(i);
    const auto& s = from.id_stats(i);
    d->set_max_id(std::max(d->max_id(), s.max_id()));
    d->set_num_ids(d->num_ids() + s.num_ids());
    d->set_max_length(std::max(d->max_length(), s.max_length()));
  }
}

StatusOr<std::unique_ptr<DatasetWriter>> DatasetWriter::Create(const std::string& dir,
                                                               const proto::DataSchema& schema,
                                                               const WriterOptions& options) {
  LOOM_RETURN_IF_ERROR(ValidateSchema(schema));
  if (options.shard_rows < 0) {
    return InvalidArgumentError("shard_rows must be >= 0, got " +
                                std::to_string(options.shard_rows));
  }
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return NotFoundError(dir + ": cannot create directory: " + ec.message());
  std::unique_ptr<DatasetWriter> w(new DatasetWriter());
  w->dir_ = dir;
  w->schema_ = schema;
  w->options_ = options;
  return w;
}

Status DatasetWriter::OpenNextShard() {
  char name[64];
  std::snprintf(name, sizeof(name), "-%05zu.loom", files_.size());
  const std::string path = dir_ + "/" + options_.file_prefix + name;
  LOOM_ASSIGN_OR_RETURN(
      current_, ShardWriter::Create(path, schema_, options_, static_cast<int64_t>(files_.size())));
  files_.push_back(path);
  return Status::Ok();
}

Status DatasetWriter::CloseShard() {
  if (!current_) return Status::Ok();
  LOOM_RETURN_IF_ERROR(current_->Close());
  MergeFooterStats(current_->footer(), &summary_);
  current_.reset();
  return Status::Ok();
}

Status DatasetWriter::Add(const Example& example) {
  if (current_ && options_.shard_rows > 0 && current_->rows() >= options_.shard_rows) {
    LOOM_RETURN_IF_ERROR(CloseShard());
  }
  if (!current_) LOOM_RETURN_IF_ERROR(OpenNextShard());
  LOOM_RETURN_IF_ERROR(current_->Add(example));
  ++rows_;
  return Status::Ok();
}

Status DatasetWriter::Close() {
  // An empty data set still gets one (empty) shard, so readers see its schema.
  if (!current_ && files_.empty()) LOOM_RETURN_IF_ERROR(OpenNextShard());
  return CloseShard();
}

}  // namespace loom::data
