// The streaming reader: one rank's slice of a set of shard files, as batches.
//
//   LOOM_ASSIGN_OR_RETURN(auto files, ExpandFilePatterns(config.train_files()));
//   LOOM_ASSIGN_OR_RETURN(auto reader, Reader::Open(files, &schema, rank, world, options));
//   Batch batch;
//   while (reader->Next(&batch, B)) { ... }   // one epoch; the next call starts the next one
//   LOOM_CHECK_OK(reader->status());          // false also means "stopped on an error"
//
// Slicing. The files' rows, concatenated in list order, are numbered 0..N-1. Rank r of R reads
// rows [floor(r N / R), floor((r+1) N / R)) (with even_slices: [r n, (r+1) n), n = floor(N/R)),
// so every row is read by exactly one rank and slices differ by at most one row. With many
// equal files this gives each rank whole files; with one big file, ranges of blocks (a block on
// a slice boundary is decoded by both neighbours, each keeping its own rows). A "chunk" is one
// block's rows inside this rank's slice.
//
// Order. Without shuffle (shuffle_buffer_rows = 0): data order. With shuffle: at each epoch
// the chunks are visited in a random order (Philox permutation keyed by seed and epoch); the
// visit is cut into windows of consecutive chunks holding >= shuffle_buffer_rows rows, and
// each window's rows are returned in a random permutation (keyed by seed, epoch and the
// window's first chunk). Deterministic: the same files, slice, seed and options give the same
// batches on every run, whatever the thread timing.
//
// Prefetch and memory. A background thread reads, checks (CRC) and decodes the chunks' blocks
// in visit order, up to prefetch_blocks ahead; decoded blocks are recycled. Resident memory is
// bounded by (prefetch_blocks + blocks per window + 2) decoded blocks + the window's row index
// + the caller's Batch, independent of the files' size (pread, no mmap).
//
// Positions. Position() is exact: Seek(Position()) on a reader opened on the same files with
// the same rank, world size and options continues with bit-identical batches (also across a
// process restart). Positions are per rank.
//
// Bad blocks. A block that fails its checksum or structure checks is reported with file and
// block; its rows in this slice count as bad records under the configured policy: skipped, or
// the reader stops (Next returns false, status() holds the error, naming file and block).
// Damaged files (no valid footer) are refused at Open unless the policy may skip their lost
// rows, in which case their intact blocks are read.
#ifndef LOOM_DATA_READER_H_
#define LOOM_DATA_READER_H_

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "csrc/core/status.h"
#include "csrc/data/bad_records.h"
#include "csrc/data/batch.h"
#include "csrc/data/format.h"
#include "csrc/data/shard_file.h"
#include "csrc/proto/data.pb.h"

namespace loom::data {

struct ReaderOptions {
  int prefetch_blocks = 8;          // >= 1
  int64_t shuffle_buffer_rows = 0;  // 0: no shuffle
  uint64_t seed = 1;
  proto::BadRecordPolicy bad_record_policy = proto::BAD_RECORDS_FAIL_PAST_THRESHOLD;
  int64_t max_bad_records = 10;
  bool drop_remainder = false;
  bool even_slices = false;

  // From the config message (its defaults apply to unset fields).
  static ReaderOptions FromConfig(const proto::ReaderConfig& config);
  // The same settings for evaluation: no shuffle, no dropped rows.
  ReaderOptions ForEval() const;
};

// Expands paths and glob patterns (each pattern's matches sorted; the patterns' order kept).
// A pattern that matches nothing, or a missing plain path, is NotFound naming it.
StatusOr<std::vector<std::string>> ExpandFilePatterns(const std::vector<std::string>& patterns);

class Reader {
 public:
  // Opens every file (header, footer; see ShardFile::Open) and plans this rank's slice.
  // `expected_schema` (may be null) must have the same layout as every file's header schema
  // (CheckSameLayout); when null, the first file's schema is the reference. Errors name the
  // file (and field) at fault.
  static StatusOr<std::unique_ptr<Reader>> Open(const std::vector<std::string>& files,
                                                const proto::DataSchema* expected_schema, int rank,
                                                int world_size, const ReaderOptions& options);
  ~Reader();
  Reader(const Reader&) = delete;
  Reader& operator=(const Reader&) = delete;

  // Fills `batch` with up to `batch_size` rows (>= 1) and returns true; the last batch of an
  // epoch may be shorter (unless drop_remainder). Returns false at the end of the epoch (the
  // reader then moves to the next epoch: the next call returns its first batch) or when an
  // error stopped the reader (status() is then not OK and every later call returns false).
  bool Next(Batch* batch, int64_t batch_size);
  const Status& status() const { return status_; }

  // The exact position of the next row (see data.proto ReaderPosition).
  proto::ReaderPosition Position() const;
  // Moves to `position`, which must come from a reader on the same files, rank, world size,
  // seed and shuffle settings (checked: FailedPrecondition naming the field that differs).
  Status Seek(const proto::ReaderPosition& position);

  // The reference schema (expected_schema, or the first file's).
  const proto::DataSchema& schema() const { return schema_; }
  int64_t epoch() const { return epoch_; }
  // Rows of this rank's slice per epoch (bad blocks included), and of all files.
  int64_t rows_per_epoch() const { return slice_rows_; }
  int64_t total_rows() const { return total_rows_; }
  // Rows per epoch of rank r's slice under this reader's world size (no I/O).
  int64_t SliceRows(int r) const;
  int64_t bad_records() const { return bad_.count(); }
  const std::vector<std::string>& files() const { return paths_; }
  // Largest id of a sparse or sequence feature over all files' footers; -1 when the feature
  // has no ids or a file's footer lacks statistics (salvaged file), NotFound for a bad name.
  StatusOr<int64_t> MaxId(const std::string& feature) const;
  // Decoded blocks currently alive (in the queue, the window and the pool): the memory bound.
  int64_t blocks_alive() const;

 private:
  struct Chunk {
    int32_t file;
    int64_t block;
    int64_t row_begin, row_end;  // rows of the block in this slice
  };
  struct Item {
    int64_t epoch = 0;
    int64_t index = 0;  // position in the epoch's visit order
    std::unique_ptr<DecodedBlock> block;
    Status status;
  };
  struct WindowChunk {
    int64_t chunk;                        // index into chunks_
    std::unique_ptr<DecodedBlock> block;  // null for a bad block
  };
  struct RowRef {
    int32_t window_chunk;
    int32_t row;
  };

  Reader() = default;
  std::vector<int64_t> EpochOrder(int64_t epoch) const;
  int64_t WindowEnd(const std::vector<int64_t>& order, int64_t start) const;
  void StartProducer(int64_t epoch, int64_t index);
  void StopProducer();
  void ProducerLoop(int64_t epoch, int64_t index);
  std::unique_ptr<DecodedBlock> TakeFromPool();
  void ReturnToPool(std::unique_ptr<DecodedBlock> block);
  // Loads the window starting at cursor_ (blocks from the queue, row permutation).
  Status LoadWindow(bool count_bad);
  void ReleaseWindow();
  void AppendRows(int64_t from, int64_t n, Batch* batch);

  std::vector<std::string> paths_;
  std::vector<std::unique_ptr<ShardFile>> files_;
  proto::DataSchema schema_;
  ReaderOptions options_;
  int rank_ = 0, world_size_ = 1;
  uint64_t fingerprint_ = 0;
  int64_t total_rows_ = 0, slice_rows_ = 0;
  std::vector<Chunk> chunks_;

  // Consumer state.
  Status status_;
  BadRecordCounter bad_{proto::BAD_RECORDS_FAIL_PAST_THRESHOLD, 0};
  int64_t epoch_ = 0;
  std::vector<int64_t> order_;  // this epoch's chunk visit order
  int64_t cursor_ = 0;          // first order_ index of the current window
  int64_t window_end_ = 0;
  bool window_loaded_ = false;
  std::vector<WindowChunk> window_;
  std::vector<RowRef> rows_;
  // Raw column pointers of the window's blocks (index [feature * W + w], W = window_.size()),
  // so batch assembly does no pointer chasing. Null for bad chunks (which have no rows).
  std::vector<const float*> win_labels_, win_dense_;
  std::vector<const int64_t*> win_groups_;
  std::vector<const int64_t*> win_sparse_ids_, win_sparse_offsets_;
  std::vector<const float*> win_sparse_weights_;
  std::vector<const int64_t*> win_seq_ids_, win_seq_offsets_;
  int64_t window_pos_ = 0;
  int64_t rows_in_epoch_ = 0;

  // Producer.
  std::thread producer_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Item> queue_;
  std::vector<std::unique_ptr<DecodedBlock>> pool_;
  int64_t blocks_alive_ = 0;
  bool stop_ = false;
};

}  // namespace loom::data

#endif  // LOOM_DATA_READER_H_
