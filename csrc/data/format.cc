#include "csrc/data/format.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>

#include "csrc/data/crc32c.h"
#include "csrc/data/schema.h"

namespace loom::data {
namespace {

template <typename T>
void ResizeWithHeadroom(std::vector<T>* v, size_t n) {
  // Blocks differ a little in size: grow with 1/8 headroom (not vector's doubling) so that
  // recycled blocks settle at a stable capacity and memory stays bounded.
  if (v->capacity() < n) v->reserve(n + n / 8);
  v->resize(n);
}

void PutU32(std::string* out, uint32_t v) { out->append(reinterpret_cast<const char*>(&v), 4); }
void PutU64(std::string* out, uint64_t v) { out->append(reinterpret_cast<const char*>(&v), 8); }
void Pad8(std::string* out) { out->append((8 - out->size() % 8) % 8, '\0'); }
uint32_t GetU32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
uint64_t GetU64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

// Appends one column section; `data` holds count * width bytes.
void PutColumn(std::string* out, ColumnKind kind, uint32_t width, uint64_t count,
               const void* data) {
  PutU32(out, kind);
  PutU32(out, width);
  PutU64(out, count);
  out->append(static_cast<const char*>(data), count * width);
  Pad8(out);
}

void PutIds(std::string* out, const std::vector<int64_t>& ids) {
  int64_t max_id = 0;
  for (int64_t id : ids) max_id = std::max(max_id, id);
  if (max_id <= static_cast<int64_t>(std::numeric_limits<uint32_t>::max())) {
    PutU32(out, kColumnIds);
    PutU32(out, 4);
    PutU64(out, ids.size());
    const size_t at = out->size();
    out->resize(at + ids.size() * 4);
    auto* dst = reinterpret_cast<uint8_t*>(&(*out)[at]);
    for (size_t i = 0; i < ids.size(); ++i) {
      const uint32_t v = static_cast<uint32_t>(ids[i]);
      std::memcpy(dst + 4 * i, &v, 4);
    }
    Pad8(out);
  } else {
    PutColumn(out, kColumnIds, 8, ids.size(), ids.data());
  }
}

const char* KindName(uint32_t kind) {
  switch (kind) {
    case kColumnLabel:
      return "label";
    case kColumnGroup:
      return "group";
    case kColumnDense:
      return "dense";
    case kColumnIds:
      return "ids";
    case kColumnLengths:
      return "lengths";
    case kColumnWeights:
      return "weights";
    default:
      return "unknown";
  }
}

// Walks the columns of a payload with bounds checks.
class PayloadCursor {
 public:
  PayloadCursor(const uint8_t* data, size_t bytes) : data_(data), bytes_(bytes) {}

  // Reads the next section, which must have kind `kind`, a width in `widths` (bitmask of 4/8)
  // and, when expected_count >= 0, exactly that many values.
  Status Next(const std::string& column, ColumnKind kind, bool allow4, bool allow8,
              int64_t expected_count, const uint8_t** values, uint32_t* width, uint64_t* count) {
    if (pos_ > bytes_ || bytes_ - pos_ < 16) {
      return DataLossError("column '" + column + "': payload ends before its " + KindName(kind) +
                           " section");
    }
    const uint32_t k = GetU32(data_ + pos_);
    const uint32_t w = GetU32(data_ + pos_ + 4);
    const uint64_t n = GetU64(data_ + pos_ + 8);
    if (k != kind) {
      return DataLossError("column '" + column + "': expected a " + KindName(kind) +
                           " section, found kind " + std::to_string(k));
    }
    if (!((w == 4 && allow4) || (w == 8 && allow8))) {
      return DataLossError("column '" + column + "': invalid " + KindName(kind) + " width " +
                           std::to_string(w));
    }
    if (expected_count >= 0 && n != static_cast<uint64_t>(expected_count)) {
      return DataLossError("column '" + column + "': " + KindName(kind) + " section holds " +
                           std::to_string(n) + " values, expected " +
                           std::to_string(expected_count));
    }
    const uint64_t avail = bytes_ - pos_ - 16;
    if (n > avail / w) {
      return DataLossError("column '" + column + "': " + KindName(kind) + " section of " +
                           std::to_string(n) + " values overruns the payload");
    }
    const uint64_t len = n * w;
    *values = data_ + pos_ + 16;
    *width = w;
    *count = n;
    pos_ += 16 + len;
    pos_ += (8 - pos_ % 8) % 8;
    if (pos_ > bytes_) pos_ = bytes_;
    return Status::Ok();
  }
  bool AtEnd() const { return pos_ >= bytes_; }

 private:
  const uint8_t* data_;
  size_t bytes_;
  size_t pos_ = 0;
};

Status ReadIds(PayloadCursor* cur, const std::string& column, int64_t expected,
               std::vector<int64_t>* ids) {
  const uint8_t* p;
  uint32_t w;
  uint64_t n;
  LOOM_RETURN_IF_ERROR(cur->Next(column, kColumnIds, true, true, expected, &p, &w, &n));
  ResizeWithHeadroom(ids, n);
  if (w == 4) {
    int64_t* dst = ids->data();
    for (uint64_t i = 0; i < n; ++i) {
      uint32_t v;
      std::memcpy(&v, p + 4 * i, 4);
      dst[i] = v;
    }
  } else {
    std::memcpy(ids->data(), p, n * 8);
    for (uint64_t i = 0; i < n; ++i) {
      if ((*ids)[i] < 0) {
        return DataLossError("column '" + column + "': negative id " + std::to_string((*ids)[i]));
      }
    }
  }
  return Status::Ok();
}

Status ReadLengths(PayloadCursor* cur, const std::string& column, int64_t rows, int64_t max_len,
                   std::vector<int64_t>* offsets) {
  const uint8_t* p;
  uint32_t w;
  uint64_t n;
  LOOM_RETURN_IF_ERROR(cur->Next(column, kColumnLengths, true, false, rows, &p, &w, &n));
  ResizeWithHeadroom(offsets, rows + 1);
  int64_t* o = offsets->data();
  o[0] = 0;
  for (int64_t r = 0; r < rows; ++r) {
    uint32_t len;
    std::memcpy(&len, p + 4 * r, 4);
    if (max_len > 0 && len > max_len) {
      return DataLossError("column '" + column + "': row " + std::to_string(r) + " has " +
                           std::to_string(len) + " ids, more than the limit " +
                           std::to_string(max_len));
    }
    o[r + 1] = o[r] + len;
  }
  return Status::Ok();
}

}  // namespace

void EncodeBlockHeader(const BlockHeader& header, uint8_t* out) {
  uint32_t magic = kBlockMagic, zero = 0;
  std::memcpy(out, &magic, 4);
  std::memcpy(out + 4, &header.rows, 4);
  std::memcpy(out + 8, &header.payload_bytes, 8);
  std::memcpy(out + 16, &header.payload_crc, 4);
  std::memcpy(out + 20, &zero, 4);
  std::memcpy(out + 24, &zero, 4);
  const uint32_t crc = Crc32c(out, 28);
  std::memcpy(out + 28, &crc, 4);
}

Status DecodeBlockHeader(const uint8_t* in, BlockHeader* header) {
  if (GetU32(in) != kBlockMagic) {
    return DataLossError("no block header here (bad magic 0x" + [&] {
      char buf[16];
      std::snprintf(buf, sizeof(buf), "%08x", GetU32(in));
      return std::string(buf);
    }() + ")");
  }
  const uint32_t stored = GetU32(in + 28);
  const uint32_t computed = Crc32c(in, 28);
  if (stored != computed) {
    char buf[96];
    std::snprintf(buf, sizeof(buf), "block header checksum mismatch (stored %08x, computed %08x)",
                  stored, computed);
    return DataLossError(buf);
  }
  header->rows = GetU32(in + 4);
  header->payload_bytes = GetU64(in + 8);
  header->payload_crc = GetU32(in + 16);
  if (header->rows == 0 || header->rows > kMaxBlockRows) {
    return DataLossError("block header has an invalid row count " + std::to_string(header->rows));
  }
  if (header->payload_bytes > kMaxBlockPayloadBytes || header->payload_bytes % 8 != 0) {
    return DataLossError("block header has an invalid payload size " +
                         std::to_string(header->payload_bytes));
  }
  return Status::Ok();
}

BlockBuilder::BlockBuilder(const proto::DataSchema& schema)
    : schema_(schema),
      sparse_(schema.sparse_size()),
      sequences_(schema.sequence_size()),
      stats_(schema.sparse_size() + schema.sequence_size()) {}

Status BlockBuilder::Add(const Example& ex) {
  const int m = schema_.dense_size();
  if (!std::isfinite(ex.label) || ex.label < 0.f || ex.label > 1.f) {
    return InvalidArgumentError("label " + std::to_string(ex.label) + " is not in [0, 1]");
  }
  if (static_cast<int>(ex.dense.size()) != m) {
    return InvalidArgumentError("example has " + std::to_string(ex.dense.size()) +
                                " dense values, the schema " + std::to_string(m));
  }
  for (int j = 0; j < m; ++j) {
    if (!std::isfinite(ex.dense[j])) {
      return InvalidArgumentError("dense '" + schema_.dense(j).name() + "' is not finite");
    }
  }
  if (static_cast<int>(ex.sparse_ids.size()) != schema_.sparse_size() ||
      static_cast<int>(ex.sequences.size()) != schema_.sequence_size()) {
    return InvalidArgumentError("example does not match the schema's feature counts");
  }
  auto check_ids = [](const std::string& kind, const std::string& name, int64_t vocab,
                      const std::vector<int64_t>& ids) -> Status {
    for (int64_t id : ids) {
      if (id < 0) {
        return InvalidArgumentError(kind + " '" + name + "': negative id " + std::to_string(id));
      }
      if (vocab > 0 && id >= vocab) {
        return InvalidArgumentError(kind + " '" + name + "': id " + std::to_string(id) +
                                    " >= vocabulary_size " + std::to_string(vocab));
      }
    }
    return Status::Ok();
  };
  for (int f = 0; f < schema_.sparse_size(); ++f) {
    const auto& spec = schema_.sparse(f);
    const auto& ids = ex.sparse_ids[f];
    if (!spec.multi_hot() && ids.size() != 1) {
      return InvalidArgumentError("sparse '" + spec.name() + "' is single-hot but has " +
                                  std::to_string(ids.size()) + " ids");
    }
    if (spec.multi_hot() && spec.max_values() > 0 &&
        static_cast<int64_t>(ids.size()) > spec.max_values()) {
      return InvalidArgumentError("sparse '" + spec.name() + "' has " + std::to_string(ids.size()) +
                                  " ids, more than max_values " +
                                  std::to_string(spec.max_values()));
    }
    const size_t nw =
        f < static_cast<int>(ex.sparse_weights.size()) ? ex.sparse_weights[f].size() : 0;
    if (spec.weighted() ? nw != ids.size() : nw != 0) {
      return InvalidArgumentError("sparse '" + spec.name() + "' has " + std::to_string(nw) +
                                  " weights for " + std::to_string(ids.size()) + " ids");
    }
    if (spec.weighted()) {
      for (float w : ex.sparse_weights[f]) {
        if (!std::isfinite(w)) {
          return InvalidArgumentError("sparse '" + spec.name() + "': weight is not finite");
        }
      }
    }
    LOOM_RETURN_IF_ERROR(check_ids("sparse", spec.name(), spec.vocabulary_size(), ids));
  }
  for (int j = 0; j < schema_.sequence_size(); ++j) {
    const auto& spec = schema_.sequence(j);
    const auto& ids = ex.sequences[j];
    if (static_cast<int64_t>(ids.size()) > spec.max_length()) {
      return InvalidArgumentError("sequence '" + spec.name() + "' has " +
                                  std::to_string(ids.size()) +
                                  " ids, more than T = " + std::to_string(spec.max_length()));
    }
    LOOM_RETURN_IF_ERROR(check_ids("sequence", spec.name(), spec.vocabulary_size(), ids));
  }

  // Valid: append.
  labels_.push_back(ex.label);
  label_sum_ += ex.label;
  if (HasGroupIdColumn()) groups_.push_back(ex.group_id);
  dense_.insert(dense_.end(), ex.dense.begin(), ex.dense.end());
  auto append = [](Var* v, const std::vector<int64_t>& ids, IdStats* st) {
    v->lengths.push_back(static_cast<uint32_t>(ids.size()));
    v->ids.insert(v->ids.end(), ids.begin(), ids.end());
    for (int64_t id : ids) st->max_id = std::max(st->max_id, id);
    st->num_ids += static_cast<int64_t>(ids.size());
    st->max_length = std::max<int64_t>(st->max_length, static_cast<int64_t>(ids.size()));
  };
  for (int f = 0; f < schema_.sparse_size(); ++f) {
    append(&sparse_[f], ex.sparse_ids[f], &stats_[f]);
    if (schema_.sparse(f).weighted()) {
      sparse_[f].weights.insert(sparse_[f].weights.end(), ex.sparse_weights[f].begin(),
                                ex.sparse_weights[f].end());
    }
  }
  for (int j = 0; j < schema_.sequence_size(); ++j) {
    append(&sequences_[j], ex.sequences[j], &stats_[schema_.sparse_size() + j]);
  }
  ++rows_;
  return Status::Ok();
}

bool BlockBuilder::HasGroupIdColumn() const { return HasGroupId(schema_); }

void BlockBuilder::Finish(std::string* out) {
  std::string payload;
  const uint64_t rows = static_cast<uint64_t>(rows_);
  PutColumn(&payload, kColumnLabel, 4, rows, labels_.data());
  if (HasGroupIdColumn()) PutColumn(&payload, kColumnGroup, 8, rows, groups_.data());
  if (schema_.dense_size() > 0) {
    PutColumn(&payload, kColumnDense, 4, dense_.size(), dense_.data());
  }
  for (int f = 0; f < schema_.sparse_size(); ++f) {
    const auto& spec = schema_.sparse(f);
    Var& v = sparse_[f];
    if (spec.multi_hot()) {
      PutColumn(&payload, kColumnLengths, 4, rows, v.lengths.data());
      PutIds(&payload, v.ids);
      if (spec.weighted())
        PutColumn(&payload, kColumnWeights, 4, v.weights.size(), v.weights.data());
    } else {
      PutIds(&payload, v.ids);
    }
  }
  for (auto& v : sequences_) {
    PutColumn(&payload, kColumnLengths, 4, rows, v.lengths.data());
    PutIds(&payload, v.ids);
  }
  BlockHeader h;
  h.rows = static_cast<uint32_t>(rows_);
  h.payload_bytes = payload.size();
  h.payload_crc = Crc32c(payload.data(), payload.size());
  out->resize(kBlockHeaderBytes);
  EncodeBlockHeader(h, reinterpret_cast<uint8_t*>(&(*out)[0]));
  out->append(payload);

  rows_ = 0;
  labels_.clear();
  groups_.clear();
  dense_.clear();
  for (auto* vars : {&sparse_, &sequences_}) {
    for (auto& v : *vars) {
      v.lengths.clear();
      v.ids.clear();
      v.weights.clear();
    }
  }
}

size_t DecodedBlock::MemoryBytes() const {
  size_t n = labels.capacity() * 4 + group_ids.capacity() * 8 + dense.capacity() * 4;
  for (const auto* vars : {&sparse, &sequences}) {
    for (const auto& v : *vars) {
      n += v.offsets.capacity() * 8 + v.ids.capacity() * 8 + v.weights.capacity() * 4;
    }
  }
  return n;
}

void DecodedBlock::GetExample(int64_t r, Example* ex) const {
  const size_t m = rows > 0 ? dense.size() / rows : 0;
  ex->label = labels[r];
  ex->group_id = group_ids.empty() ? 0 : group_ids[r];
  ex->dense.assign(dense.begin() + r * m, dense.begin() + (r + 1) * m);
  ex->sparse_ids.resize(sparse.size());
  ex->sparse_weights.resize(sparse.size());
  for (size_t f = 0; f < sparse.size(); ++f) {
    const Var& v = sparse[f];
    if (v.single) {
      ex->sparse_ids[f].assign(1, v.ids[r]);
      ex->sparse_weights[f].clear();
    } else {
      ex->sparse_ids[f].assign(v.ids.begin() + v.offsets[r], v.ids.begin() + v.offsets[r + 1]);
      if (v.weights.empty()) {
        ex->sparse_weights[f].clear();
      } else {
        ex->sparse_weights[f].assign(v.weights.begin() + v.offsets[r],
                                     v.weights.begin() + v.offsets[r + 1]);
      }
    }
  }
  ex->sequences.resize(sequences.size());
  for (size_t j = 0; j < sequences.size(); ++j) {
    const Var& v = sequences[j];
    ex->sequences[j].assign(v.ids.begin() + v.offsets[r], v.ids.begin() + v.offsets[r + 1]);
  }
}

Status DecodeBlock(const proto::DataSchema& schema, const uint8_t* payload, size_t bytes,
                   int64_t rows, DecodedBlock* out) {
  PayloadCursor cur(payload, bytes);
  const uint8_t* p;
  uint32_t w;
  uint64_t n;
  out->rows = rows;
  LOOM_RETURN_IF_ERROR(cur.Next(schema.label(), kColumnLabel, true, false, rows, &p, &w, &n));
  ResizeWithHeadroom(&out->labels, rows);
  std::memcpy(out->labels.data(), p, rows * 4);
  if (HasGroupId(schema)) {
    LOOM_RETURN_IF_ERROR(cur.Next(schema.group_id(), kColumnGroup, false, true, rows, &p, &w, &n));
    ResizeWithHeadroom(&out->group_ids, rows);
    std::memcpy(out->group_ids.data(), p, rows * 8);
  } else {
    out->group_ids.clear();
  }
  const int m = schema.dense_size();
  if (m > 0) {
    LOOM_RETURN_IF_ERROR(cur.Next("dense", kColumnDense, true, false, rows * m, &p, &w, &n));
    ResizeWithHeadroom(&out->dense, rows * m);
    std::memcpy(out->dense.data(), p, rows * m * 4);
  } else {
    out->dense.clear();
  }
  out->sparse.resize(schema.sparse_size());
  for (int f = 0; f < schema.sparse_size(); ++f) {
    const auto& spec = schema.sparse(f);
    DecodedBlock::Var& v = out->sparse[f];
    v.single = !spec.multi_hot();
    if (v.single) {
      v.offsets.clear();
      v.weights.clear();
      LOOM_RETURN_IF_ERROR(ReadIds(&cur, spec.name(), rows, &v.ids));
      continue;
    }
    LOOM_RETURN_IF_ERROR(ReadLengths(&cur, spec.name(), rows, spec.max_values(), &v.offsets));
    LOOM_RETURN_IF_ERROR(ReadIds(&cur, spec.name(), v.offsets[rows], &v.ids));
    if (spec.weighted()) {
      LOOM_RETURN_IF_ERROR(
          cur.Next(spec.name(), kColumnWeights, true, false, v.offsets[rows], &p, &w, &n));
      ResizeWithHeadroom(&v.weights, n);
      std::memcpy(v.weights.data(), p, n * 4);
    } else {
      v.weights.clear();
    }
  }
  out->sequences.resize(schema.sequence_size());
  for (int j = 0; j < schema.sequence_size(); ++j) {
    const auto& spec = schema.sequence(j);
    DecodedBlock::Var& v = out->sequences[j];
    v.single = false;
    LOOM_RETURN_IF_ERROR(ReadLengths(&cur, spec.name(), rows, spec.max_length(), &v.offsets));
    LOOM_RETURN_IF_ERROR(ReadIds(&cur, spec.name(), v.offsets[rows], &v.ids));
  }
  if (!cur.AtEnd()) return DataLossError("payload has bytes after the last column");
  return Status::Ok();
}

std::string EncodeFileHeader(const proto::ShardHeader& header) {
  std::string body;
  header.SerializeToString(&body);
  std::string out(kFileMagic, 8);
  PutU32(&out, kFormatVersion);
  PutU32(&out, static_cast<uint32_t>(body.size()));
  out += body;
  PutU32(&out, Crc32c(body.data(), body.size()));
  Pad8(&out);
  return out;
}

Status DecodeFileHeader(const uint8_t* data, size_t n, proto::ShardHeader* header,
                        uint64_t* header_bytes) {
  if (n < 16) {
    *header_bytes = 16;
    return OutOfRangeError("file header needs 16 bytes, file has " + std::to_string(n));
  }
  if (std::memcmp(data, kFileMagic, 8) != 0) {
    return DataLossError("not a Loom data file (bad magic; expected \"LOOMDATA\")");
  }
  const uint32_t version = GetU32(data + 8);
  if (version != kFormatVersion) {
    return DataLossError("unsupported format version " + std::to_string(version) +
                         " (this build reads version " + std::to_string(kFormatVersion) + ")");
  }
  const uint64_t len = GetU32(data + 12);
  if (len > kMaxHeaderBytes) {
    return DataLossError("file header length " + std::to_string(len) + " is implausible");
  }
  uint64_t total = 16 + len + 4;
  total += (8 - total % 8) % 8;
  if (n < 16 + len + 4) {
    *header_bytes = total;
    return OutOfRangeError("file header needs " + std::to_string(total) + " bytes");
  }
  const uint32_t stored = GetU32(data + 16 + len);
  const uint32_t computed = Crc32c(data + 16, len);
  if (stored != computed) {
    char buf[96];
    std::snprintf(buf, sizeof(buf), "file header checksum mismatch (stored %08x, computed %08x)",
                  stored, computed);
    return DataLossError(buf);
  }
  if (!header->ParseFromArray(data + 16, static_cast<int>(len))) {
    return DataLossError("file header does not parse as ShardHeader");
  }
  *header_bytes = total;
  return Status::Ok();
}

std::string EncodeFooter(const proto::ShardFooter& footer, uint64_t footer_offset) {
  std::string body;
  footer.SerializeToString(&body);
  std::string out = body;
  PutU64(&out, footer_offset);
  PutU32(&out, static_cast<uint32_t>(body.size()));
  PutU32(&out, Crc32c(body.data(), body.size()));
  out.append(kTrailerMagic, 8);
  return out;
}

Status DecodeTrailer(const uint8_t* in, Trailer* trailer) {
  if (std::memcmp(in + 16, kTrailerMagic, 8) != 0) {
    return DataLossError("no footer (the file is truncated or was not closed by its writer)");
  }
  trailer->footer_offset = GetU64(in);
  trailer->footer_len = GetU32(in + 8);
  trailer->footer_crc = GetU32(in + 12);
  return Status::Ok();
}

}  // namespace loom::data
