// Writers of the Loom log format (format.h): one shard file, or a directory of shards.
//
//   LOOM_ASSIGN_OR_RETURN(auto w, DatasetWriter::Create(dir, schema, options));
//   for (...) { fill example; LOOM_RETURN_IF_ERROR(w->Add(example)); }
//   LOOM_RETURN_IF_ERROR(w->Close());
//
// A shard is written to "<path>.tmp" and renamed to <path> by Close(), so a file under its
// final name is always complete (header, blocks, footer). Memory: one block of rows.
// Output is deterministic: the same rows give byte-identical files.
#ifndef LOOM_DATA_WRITER_H_
#define LOOM_DATA_WRITER_H_

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "csrc/core/status.h"
#include "csrc/data/format.h"
#include "csrc/proto/data.pb.h"

namespace loom::data {

struct WriterOptions {
  int64_t block_rows = 8192;         // rows per block, [1, 2^24]
  int64_t shard_rows = 0;            // rows per shard file (DatasetWriter); 0 = a single file
  std::string producer;              // recorded in each ShardHeader (e.g. the command line)
  std::string file_prefix = "part";  // DatasetWriter: <dir>/<prefix>-00000.loom
};

class ShardWriter {
 public:
  // Creates `path` (via path.tmp). The schema must pass ValidateSchema.
  static StatusOr<std::unique_ptr<ShardWriter>> Create(const std::string& path,
                                                       const proto::DataSchema& schema,
                                                       const WriterOptions& options,
                                                       int64_t shard_index = 0);
  ~ShardWriter();  // an unclosed writer removes its .tmp file

  // Appends one row; errors (invalid example, I/O) name the file and the row number.
  Status Add(const Example& example);
  // Writes the last block and the footer, and renames the file into place.
  Status Close();

  int64_t rows() const { return rows_; }
  const std::string& path() const { return path_; }
  const proto::ShardFooter& footer() const { return footer_; }

 private:
  ShardWriter() = default;
  Status FlushBlock();
  Status WriteBytes(const std::string& bytes);

  std::string path_, tmp_path_;
  proto::DataSchema schema_;
  WriterOptions options_;
  std::unique_ptr<BlockBuilder> builder_;
  FILE* file_ = nullptr;
  uint64_t offset_ = 0;
  int64_t rows_ = 0;
  proto::ShardFooter footer_;
  std::string scratch_;
};

class DatasetWriter {
 public:
  // Creates `dir` (and parents) if needed; shards are <dir>/<prefix>-NNNNN.loom.
  static StatusOr<std::unique_ptr<DatasetWriter>> Create(const std::string& dir,
                                                         const proto::DataSchema& schema,
                                                         const WriterOptions& options);
  Status Add(const Example& example);
  Status Close();

  int64_t rows() const { return rows_; }
  const std::vector<std::string>& files() const { return files_; }
  // Id statistics and label sum merged over every shard written (after Close).
  const proto::ShardFooter& summary() const { return summary_; }

 private:
  DatasetWriter() = default;
  Status OpenNextShard();
  Status CloseShard();

  std::string dir_;
  proto::DataSchema schema_;
  WriterOptions options_;
  std::unique_ptr<ShardWriter> current_;
  std::vector<std::string> files_;
  int64_t rows_ = 0;
  proto::ShardFooter summary_;
};

// Merges the id statistics, rows and label sum of `from` into `into` (blocks are not copied).
void MergeFooterStats(const proto::ShardFooter& from, proto::ShardFooter* into);

}  // namespace loom::data

#endif  // LOOM_DATA_WRITER_H_
