// The Loom log format: sharded files of columnar blocks (docs/data-format.md is the spec).
//
//   file    := file_header block* footer trailer
//   file_header := "LOOMDATA" u32 version(=1) u32 n  ShardHeader[n bytes]  u32 crc  pad8
//   block   := block_header(32 bytes) payload
//   block_header := u32 "LBLK" u32 rows u64 payload_bytes u32 payload_crc u32 flags(=0)
//                   u32 reserved(=0) u32 header_crc (CRC of the 28 bytes before it)
//   payload := column*   (fixed order: label, group id?, dense?, per sparse feature, per sequence)
//   column  := u32 kind u32 width u64 count  data[count * width]  pad8
//   footer  := ShardFooter (block index, rows, id statistics)
//   trailer := u64 footer_offset u32 footer_len u32 footer_crc "LOOMEND1"
// All integers little-endian; every CRC is CRC-32C (crc32c.h). Ids are stored 4 bytes wide
// when every id of the column in the block is < 2^32, else 8.
//
// This header holds the block codec (BlockBuilder encodes rows, DecodeBlock decodes) and the
// constants; writer.h writes files and shard_file.h reads them.
#ifndef LOOM_DATA_FORMAT_H_
#define LOOM_DATA_FORMAT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "csrc/core/status.h"
#include "csrc/data/batch.h"
#include "csrc/proto/data.pb.h"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the Loom log format is little-endian");

namespace loom::data {

inline constexpr char kFileMagic[8] = {'L', 'O', 'O', 'M', 'D', 'A', 'T', 'A'};
inline constexpr char kTrailerMagic[8] = {'L', 'O', 'O', 'M', 'E', 'N', 'D', '1'};
inline constexpr uint32_t kFormatVersion = 1;
inline constexpr uint32_t kBlockMagic = 0x4B4C424Cu;  // "LBLK"
inline constexpr size_t kBlockHeaderBytes = 32;
inline constexpr size_t kTrailerBytes = 24;
inline constexpr int64_t kMaxBlockRows = int64_t{1} << 24;
inline constexpr uint64_t kMaxHeaderBytes = uint64_t{64} << 20;
inline constexpr uint64_t kMaxBlockPayloadBytes = uint64_t{4} << 30;

enum ColumnKind : uint32_t {
  kColumnLabel = 1,    // f32[rows]
  kColumnGroup = 2,    // i64[rows]
  kColumnDense = 3,    // f32[rows * m], row-major
  kColumnIds = 4,      // u32 or i64 ids (width 4 or 8)
  kColumnLengths = 5,  // u32[rows]: ids per row of the next kColumnIds section
  kColumnWeights = 6,  // f32, one per id of the preceding kColumnIds section
};

struct BlockHeader {
  uint32_t rows = 0;
  uint64_t payload_bytes = 0;
  uint32_t payload_crc = 0;
};

// Serializes a block header (magic, fields, header CRC) into out[0..32).
void EncodeBlockHeader(const BlockHeader& header, uint8_t* out);
// Parses and checks a block header (magic, header CRC, sizes). Errors are DataLoss without
// file context; callers prefix "file: block k (offset x)".
Status DecodeBlockHeader(const uint8_t* in, BlockHeader* header);

// Per-feature id statistics kept while writing (become ShardFooter.id_stats).
struct IdStats {
  int64_t max_id = -1;
  int64_t num_ids = 0;
  int64_t max_length = 0;
};

// Accumulates rows of one block in columnar form and encodes them.
class BlockBuilder {
 public:
  explicit BlockBuilder(const proto::DataSchema& schema);

  // Validates `ex` against the schema (shapes, ids >= 0 and < vocabulary_size when declared,
  // label finite in [0, 1], bag and sequence lengths) and appends it. On error nothing is
  // appended and the message names the feature and value.
  Status Add(const Example& ex);
  int64_t rows() const { return rows_; }
  // Encodes the accumulated rows as block header + payload into *out and clears the builder.
  void Finish(std::string* out);
  // Id statistics over every row added since construction (sparse features, then sequences).
  const std::vector<IdStats>& id_stats() const { return stats_; }
  double label_sum() const { return label_sum_; }

 private:
  struct Var {
    std::vector<uint32_t> lengths;
    std::vector<int64_t> ids;
    std::vector<float> weights;
  };
  bool HasGroupIdColumn() const;

  const proto::DataSchema schema_;
  int64_t rows_ = 0;
  std::vector<float> labels_;
  std::vector<int64_t> groups_;
  std::vector<float> dense_;
  std::vector<Var> sparse_;  // single-hot features use ids only
  std::vector<Var> sequences_;
  std::vector<IdStats> stats_;
  double label_sum_ = 0;
};

// A decoded block: fixed-width host columns ready for batch assembly.
struct DecodedBlock {
  struct Var {
    bool single = false;           // single-hot: ids[r] is row r's only id; offsets unused
    std::vector<int64_t> offsets;  // rows + 1 (variable-length columns)
    std::vector<int64_t> ids;
    std::vector<float> weights;  // weighted multi-hot only
  };
  int64_t rows = 0;
  std::vector<float> labels;
  std::vector<int64_t> group_ids;
  std::vector<float> dense;  // rows * m
  std::vector<Var> sparse;
  std::vector<Var> sequences;

  // Bytes held (capacity), for memory accounting.
  size_t MemoryBytes() const;
  // Copies row r into *ex (tests, tools).
  void GetExample(int64_t r, Example* ex) const;
};

// Decodes a payload of `rows` rows. Checks every column's kind, width and count, that lengths
// sum to the ids count, that sequence lengths are <= T and ids are >= 0. Errors are DataLoss
// naming the column ("column 'item_history': lengths sum to 120 but 118 ids are stored").
Status DecodeBlock(const proto::DataSchema& schema, const uint8_t* payload, size_t bytes,
                   int64_t rows, DecodedBlock* out);

// File header: magic, version, ShardHeader, CRC, padding to 8 bytes.
std::string EncodeFileHeader(const proto::ShardHeader& header);
// Parses a file header from the first `n` bytes of a file. On success *header_bytes is the
// header's total size (where the first block starts). Returns OutOfRange when more bytes are
// needed (*header_bytes then says how many), DataLoss when the header is invalid.
Status DecodeFileHeader(const uint8_t* data, size_t n, proto::ShardHeader* header,
                        uint64_t* header_bytes);

// Footer + trailer.
std::string EncodeFooter(const proto::ShardFooter& footer, uint64_t footer_offset);
struct Trailer {
  uint64_t footer_offset = 0;
  uint32_t footer_len = 0;
  uint32_t footer_crc = 0;
};
// Parses the last kTrailerBytes of a file. DataLoss when the magic is missing.
Status DecodeTrailer(const uint8_t* in, Trailer* trailer);

}  // namespace loom::data

#endif  // LOOM_DATA_FORMAT_H_
