#include "csrc/data/shard_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "csrc/data/crc32c.h"
#include "csrc/data/schema.h"

namespace loom::data {

ShardFile::~ShardFile() {
  if (fd_ >= 0) ::close(fd_);
}

Status ShardFile::ReadAt(uint64_t offset, size_t n, void* dst) const {
  auto* p = static_cast<char*>(dst);
  size_t done = 0;
  while (done < n) {
    const ssize_t r = ::pread(fd_, p + done, n - done, static_cast<off_t>(offset + done));
    if (r < 0) {
      if (errno == EINTR) continue;
      return DataLossError(path_ + ": read of " + std::to_string(n) + " bytes at offset " +
                           std::to_string(offset) + " failed: " + std::strerror(errno));
    }
    if (r == 0) {
      return DataLossError(path_ + ": unexpected end of file at offset " +
                           std::to_string(offset + done));
    }
    done += static_cast<size_t>(r);
  }
  return Status::Ok();
}

std::string ShardFile::BlockWhere(int64_t i) const {
  const auto& b = footer_.block(static_cast<int>(i));
  return path_ + ": block " + std::to_string(i) + " (offset " + std::to_string(b.offset()) + ", " +
         std::to_string(b.rows()) + " rows)";
}

Status ShardFile::Scan(uint64_t start, uint64_t end) {
  footer_.clear_block();
  footer_.set_rows(0);
  uint64_t at = start;
  uint8_t hdr[kBlockHeaderBytes];
  std::string payload;
  int64_t index = 0;
  while (at < end) {
    const std::string where =
        path_ + ": block " + std::to_string(index) + " (offset " + std::to_string(at) + ")";
    if (end - at < kBlockHeaderBytes) {
      lost_rows_ = 1;
      return DataLossError(where + ": truncated: " + std::to_string(end - at) +
                           " bytes remain, less than a block header");
    }
    LOOM_RETURN_IF_ERROR(ReadAt(at, kBlockHeaderBytes, hdr));
    BlockHeader h;
    Status s = DecodeBlockHeader(hdr, &h);
    if (!s.ok()) {
      lost_rows_ = 1;
      return s.WithContext(where);
    }
    const uint64_t need = kBlockHeaderBytes + h.payload_bytes;
    if (end - at < need) {
      lost_rows_ = h.rows;
      return DataLossError(where + ": truncated: the block needs " + std::to_string(need) +
                           " bytes, " + std::to_string(end - at) + " remain (" +
                           std::to_string(h.rows) + " rows lost)");
    }
    payload.resize(h.payload_bytes);
    LOOM_RETURN_IF_ERROR(ReadAt(at + kBlockHeaderBytes, h.payload_bytes, payload.data()));
    const uint32_t crc = Crc32c(payload.data(), payload.size());
    if (crc != h.payload_crc) {
      lost_rows_ = h.rows;
      char buf[128];
      std::snprintf(buf, sizeof(buf),
                    ": payload checksum mismatch (stored %08x, computed %08x): truncated or "
                    "corrupted (%u rows lost)",
                    h.payload_crc, crc, h.rows);
      return DataLossError(where + buf);
    }
    auto* b = footer_.add_block();
    b->set_offset(at);
    b->set_bytes(need);
    b->set_rows(h.rows);
    footer_.set_rows(footer_.rows() + h.rows);
    at += need;
    ++index;
  }
  return Status::Ok();
}

StatusOr<std::unique_ptr<ShardFile>> ShardFile::Open(const std::string& path,
                                                     const OpenOptions& options) {
  std::unique_ptr<ShardFile> f(new ShardFile());
  f->path_ = path;
  f->fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (f->fd_ < 0) return NotFoundError(path + ": cannot open: " + std::strerror(errno));
  struct stat st;
  if (::fstat(f->fd_, &st) != 0) {
    return NotFoundError(path + ": cannot stat: " + std::strerror(errno));
  }
  f->file_bytes_ = static_cast<uint64_t>(st.st_size);

  // File header: read a prefix, then exactly what it says it needs.
  std::string buf(std::min<uint64_t>(f->file_bytes_, 4096), '\0');
  if (!buf.empty()) LOOM_RETURN_IF_ERROR(f->ReadAt(0, buf.size(), buf.data()));
  uint64_t header_bytes = 0;
  Status s = DecodeFileHeader(reinterpret_cast<const uint8_t*>(buf.data()), buf.size(), &f->header_,
                              &header_bytes);
  if (s.code() == StatusCode::kOutOfRange) {
    if (header_bytes > f->file_bytes_) {
      return DataLossError(path + ": truncated inside the file header (" +
                           std::to_string(f->file_bytes_) + " bytes)");
    }
    buf.resize(header_bytes);
    LOOM_RETURN_IF_ERROR(f->ReadAt(0, buf.size(), buf.data()));
    s = DecodeFileHeader(reinterpret_cast<const uint8_t*>(buf.data()), buf.size(), &f->header_,
                         &header_bytes);
  }
  if (!s.ok()) return s.WithContext(path);
  {
    Status v = ValidateSchema(f->header_.schema());
    if (!v.ok()) return DataLossError(path + ": header schema is invalid: " + v.message());
  }
  f->data_start_ = header_bytes;

  // Trailer and footer.
  Status footer_status;
  if (f->file_bytes_ < header_bytes + kTrailerBytes) {
    footer_status = DataLossError("no footer (the file is truncated or was not closed)");
  } else {
    uint8_t tb[kTrailerBytes];
    LOOM_RETURN_IF_ERROR(f->ReadAt(f->file_bytes_ - kTrailerBytes, kTrailerBytes, tb));
    Trailer t;
    footer_status = DecodeTrailer(tb, &t);
    if (footer_status.ok()) {
      const uint64_t footer_end = f->file_bytes_ - kTrailerBytes;
      if (t.footer_offset < header_bytes || t.footer_offset + t.footer_len != footer_end) {
        footer_status = DataLossError("footer location is inconsistent with the file size");
      } else {
        std::string fb(t.footer_len, '\0');
        LOOM_RETURN_IF_ERROR(f->ReadAt(t.footer_offset, fb.size(), fb.data()));
        if (Crc32c(fb.data(), fb.size()) != t.footer_crc) {
          footer_status = DataLossError("footer checksum mismatch");
        } else if (!f->footer_.ParseFromString(fb)) {
          footer_status = DataLossError("footer does not parse");
        } else {
          // The block index must tile [data_start, footer_offset) exactly.
          uint64_t at = header_bytes;
          int64_t rows = 0;
          for (int i = 0; i < f->footer_.block_size() && footer_status.ok(); ++i) {
            const auto& b = f->footer_.block(i);
            if (b.offset() != at || b.rows() <= 0 || b.bytes() < kBlockHeaderBytes) {
              footer_status = DataLossError("footer block index entry " + std::to_string(i) +
                                            " is inconsistent");
            }
            at += b.bytes();
            rows += b.rows();
          }
          if (footer_status.ok() && (at != t.footer_offset || rows != f->footer_.rows())) {
            footer_status = DataLossError("footer block index does not cover the file");
          }
        }
      }
    }
  }
  if (footer_status.ok()) return f;

  // No valid footer: find out where the file breaks by walking the blocks.
  f->footer_.Clear();
  Status scan = f->Scan(header_bytes, f->file_bytes_);
  std::string report;
  if (scan.ok()) {
    f->lost_rows_ = 0;
    report = path + ": " + footer_status.message() + "; all " +
             std::to_string(f->footer_.block_size()) +
             " blocks before the end are intact (truncated after block " +
             std::to_string(f->footer_.block_size() - 1) + ", or never closed)";
  } else {
    report = scan.message() + " [" + footer_status.message() + "]";
  }
  if (!options.salvage) return DataLossError(report);
  f->salvaged_ = true;
  f->salvage_report_ = report;
  if (scan.ok()) f->lost_rows_ = 0;
  return f;
}

Status ShardFile::ReadBlock(int64_t i, std::string* scratch, DecodedBlock* out) const {
  if (i < 0 || i >= num_blocks()) {
    return OutOfRangeError(path_ + ": block " + std::to_string(i) + " out of range [0, " +
                           std::to_string(num_blocks()) + ")");
  }
  const auto& b = footer_.block(static_cast<int>(i));
  if (b.offset() + b.bytes() > file_bytes_) {
    return DataLossError(BlockWhere(i) + ": truncated: the block ends at " +
                         std::to_string(b.offset() + b.bytes()) + ", the file at " +
                         std::to_string(file_bytes_));
  }
  scratch->resize(b.bytes());
  LOOM_RETURN_IF_ERROR(ReadAt(b.offset(), b.bytes(), scratch->data()));
  const auto* p = reinterpret_cast<const uint8_t*>(scratch->data());
  BlockHeader h;
  Status s = DecodeBlockHeader(p, &h);
  if (!s.ok()) return s.WithContext(BlockWhere(i));
  if (h.rows != static_cast<uint64_t>(b.rows()) ||
      kBlockHeaderBytes + h.payload_bytes != b.bytes()) {
    return DataLossError(BlockWhere(i) + ": block header disagrees with the footer index");
  }
  const uint32_t crc = Crc32c(p + kBlockHeaderBytes, h.payload_bytes);
  if (crc != h.payload_crc) {
    char buf[96];
    std::snprintf(buf, sizeof(buf), ": payload checksum mismatch (stored %08x, computed %08x)",
                  h.payload_crc, crc);
    return DataLossError(BlockWhere(i) + buf);
  }
  s = DecodeBlock(schema(), p + kBlockHeaderBytes, h.payload_bytes, h.rows, out);
  if (!s.ok()) return s.WithContext(BlockWhere(i));
  return Status::Ok();
}

Status ShardFile::Verify() const {
  std::string scratch;
  DecodedBlock block;
  for (int64_t i = 0; i < num_blocks(); ++i) {
    LOOM_RETURN_IF_ERROR(ReadBlock(i, &scratch, &block));
  }
  return Status::Ok();
}

}  // namespace loom::data
