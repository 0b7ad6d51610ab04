// Reading one shard file of the Loom log format (format.h). Thread-safe after Open: blocks
// are read with pread into caller-provided buffers (no mmap, so file pages never count toward
// the process's resident memory).
#ifndef LOOM_DATA_SHARD_FILE_H_
#define LOOM_DATA_SHARD_FILE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "csrc/core/status.h"
#include "csrc/data/format.h"
#include "csrc/proto/data.pb.h"

namespace loom::data {

class ShardFile {
 public:
  struct OpenOptions {
    // When the footer is missing or invalid (a truncated or unfinished file), use the blocks
    // that a forward scan finds intact instead of failing. `salvage_report` then describes the
    // damage and `lost_rows` counts the rows of the damaged block (1 when unknown).
    bool salvage = false;
  };

  // Opens `path`: checks the file header, the trailer and the footer (CRCs, block index
  // consistent with the file size). Without salvage, a missing or invalid footer is DataLoss
  // with a diagnosis from a forward scan, e.g.
  //   "x.loom: block 3 (offset 81920): truncated: needs 40032 bytes, 1200 remain"
  static StatusOr<std::unique_ptr<ShardFile>> Open(const std::string& path,
                                                   const OpenOptions& options);
  static StatusOr<std::unique_ptr<ShardFile>> Open(const std::string& path) {
    return Open(path, OpenOptions());
  }
  ~ShardFile();

  const std::string& path() const { return path_; }
  const proto::ShardHeader& header() const { return header_; }
  const proto::DataSchema& schema() const { return header_.schema(); }
  const proto::ShardFooter& footer() const { return footer_; }
  int64_t num_blocks() const { return footer_.block_size(); }
  int64_t rows() const { return footer_.rows(); }
  int64_t block_rows(int64_t i) const { return footer_.block(static_cast<int>(i)).rows(); }
  uint64_t file_bytes() const { return file_bytes_; }
  bool salvaged() const { return salvaged_; }
  const std::string& salvage_report() const { return salvage_report_; }
  int64_t lost_rows() const { return lost_rows_; }

  // Reads block i into *out after checking its header and payload CRC. `scratch` receives the
  // raw bytes (reused between calls). Errors are DataLoss naming the file and block:
  //   "x.loom: block 7 (offset 123456, 8192 rows): payload checksum mismatch (...)"
  Status ReadBlock(int64_t i, std::string* scratch, DecodedBlock* out) const;
  // Reads and checks every block (what `loom data inspect` runs). Returns the first error.
  Status Verify() const;

 private:
  ShardFile() = default;
  Status ReadAt(uint64_t offset, size_t n, void* dst) const;
  // Walks blocks from the first; fills footer_ blocks with the intact ones and reports where
  // and why the walk stopped (OK status if it reached `end` cleanly).
  Status Scan(uint64_t start, uint64_t end);
  std::string BlockWhere(int64_t i) const;

  std::string path_;
  int fd_ = -1;
  uint64_t file_bytes_ = 0;
  uint64_t data_start_ = 0;
  proto::ShardHeader header_;
  proto::ShardFooter footer_;
  bool salvaged_ = false;
  std::string salvage_report_;
  int64_t lost_rows_ = 0;
};

}  // namespace loom::data

#endif  // LOOM_DATA_SHARD_FILE_H_
