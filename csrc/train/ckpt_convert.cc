#include "csrc/train/ckpt_convert.h"

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <limits>
#include <list>
#include <map>
#include <set>
#include <utility>

#include "csrc/core/file_io.h"
#include "csrc/data/crc32c.h"
#include "csrc/embedding/embedding_spec.h"
#include "csrc/proto/config_io.h"
#include "csrc/train/checkpoint.h"
#include "csrc/train/checkpoint_internal.h"
#include "csrc/train/ckpt_export.h"

namespace loom::train {
namespace fs = std::filesystem;

using proto::CheckpointManifest;
using proto::EmbeddingPiece;
using proto::TensorEntry;

// ---------------------------------------------------------------------------------------------
// Small helpers shared by this file.

namespace {

using Clock = std::chrono::steady_clock;
using internal::Hex8;
using internal::ShapeText;
using internal::ShortPath;
using internal::ToPieceStrategy;
using internal::UtcNow;

// ceil(a / b) for b > 0 and any sign of a.
int64_t CeilDiv(int64_t a, int64_t b) { return a >= 0 ? (a + b - 1) / b : -((-a) / b); }

int64_t Align(int64_t v) {
  return (v + kTensorAlignment - 1) / kTensorAlignment * kTensorAlignment;
}

// Open file descriptors, at most `cap` at a time (the least recently used is closed first), so
// checkpoints of thousands of ranks stay under the process's open-file limit.
class FdCache {
 public:
  explicit FdCache(int flags) : flags_(flags) {
    struct rlimit rl;
    size_t limit = 1024;
    if (::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
      limit = static_cast<size_t>(rl.rlim_cur);
    }
    cap_ = std::clamp<size_t>(limit / 4, 8, 512);
    // LOOM_CKPT_MAX_OPEN_FILES lowers the cap (constrained systems; tests of the eviction).
    if (const char* env = std::getenv("LOOM_CKPT_MAX_OPEN_FILES")) {
      const long v = std::strtol(env, nullptr, 10);
      if (v >= 1) cap_ = std::min(cap_, static_cast<size_t>(v));
    }
  }
  ~FdCache() {
    for (auto& kv : open_) ::close(kv.second.first);
  }
  FdCache(const FdCache&) = delete;
  FdCache& operator=(const FdCache&) = delete;

  // The descriptor of `path`, opened on a miss. `what` names the file in errors.
  StatusOr<int> Get(const std::string& path, const std::string& what) {
    auto it = open_.find(path);
    if (it != open_.end()) {
      lru_.splice(lru_.begin(), lru_, it->second.second);
      return it->second.first;
    }
    while (open_.size() >= cap_) {
      const std::string victim = lru_.back();
      lru_.pop_back();
      ::close(open_[victim].first);
      open_.erase(victim);
    }
    const int fd = ::open(path.c_str(), flags_);
    if (fd < 0) {
      if (errno == ENOENT) return NotFoundError(what + ": missing");
      return InternalError(what + ": cannot open: " + ErrnoText());
    }
    lru_.push_front(path);
    open_[path] = {fd, lru_.begin()};
    return fd;
  }
  void Close(const std::string& path) {
    auto it = open_.find(path);
    if (it == open_.end()) return;
    ::close(it->second.first);
    lru_.erase(it->second.second);
    open_.erase(it);
  }

 private:
  int flags_;
  size_t cap_ = 64;
  std::list<std::string> lru_;
  std::map<std::string, std::pair<int, std::list<std::string>::iterator>> open_;
};

// Elapsed-time and byte counting for progress reports.
class ProgressTracker {
 public:
  ProgressTracker(const ProgressFn& fn, std::string stage) : fn_(fn) {
    p_.stage = std::move(stage);
    start_ = Clock::now();
  }
  ConvertProgress& state() { return p_; }
  void Bytes(int64_t n) {
    p_.bytes_done += n;
    Report(false);
  }
  void Report(bool finished) {
    if (!fn_) return;
    p_.seconds = std::chrono::duration<double>(Clock::now() - start_).count();
    p_.tensor_finished = finished;
    fn_(p_);
  }

 private:
  const ProgressFn& fn_;
  ConvertProgress p_;
  Clock::time_point start_;
};

double ElementAsDouble(const char* p, DType t) {
  switch (t) {
    case DType::kF32: {
      float v;
      std::memcpy(&v, p, 4);
      return v;
    }
    case DType::kF64: {
      double v;
      std::memcpy(&v, p, 8);
      return v;
    }
    case DType::kI32: {
      int32_t v;
      std::memcpy(&v, p, 4);
      return v;
    }
    case DType::kI64: {
      int64_t v;
      std::memcpy(&v, p, 8);
      return static_cast<double>(v);
    }
    case DType::kU8:
      return static_cast<unsigned char>(*p);
    case DType::kBF16: {
      bf16 v;
      std::memcpy(&v, p, 2);
      return Bf16ToFloat(v);
    }
    case DType::kF16: {
      f16 v;
      std::memcpy(&v, p, 2);
      return F16ToFloat(v);
    }
  }
  return 0;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// CRC-32C combination (zlib's crc32_combine with the Castagnoli polynomial).

namespace {
uint32_t Gf2Times(const uint32_t* mat, uint32_t vec) {
  uint32_t sum = 0;
  while (vec) {
    if (vec & 1) sum ^= *mat;
    vec >>= 1;
    ++mat;
  }
  return sum;
}
void Gf2Square(uint32_t* square, const uint32_t* mat) {
  for (int n = 0; n < 32; ++n) square[n] = Gf2Times(mat, mat[n]);
}
}  // namespace

uint32_t Crc32cCombine(uint32_t crc_a, uint32_t crc_b, uint64_t len_b) {
  if (len_b == 0) return crc_a;
  uint32_t even[32], odd[32];
  odd[0] = 0x82F63B78u;  // reflected Castagnoli polynomial: the operator for one zero bit
  uint32_t row = 1;
  for (int n = 1; n < 32; ++n) {
    odd[n] = row;
    row <<= 1;
  }
  Gf2Square(even, odd);  // two zero bits
  Gf2Square(odd, even);  // four zero bits
  do {
    Gf2Square(even, odd);  // the first pass makes one zero byte
    if (len_b & 1) crc_a = Gf2Times(even, crc_a);
    len_b >>= 1;
    if (len_b == 0) break;
    Gf2Square(odd, even);
    if (len_b & 1) crc_a = Gf2Times(odd, crc_a);
    len_b >>= 1;
  } while (len_b != 0);
  return crc_a ^ crc_b;
}

StatusOr<std::string> ResolveCheckpointPath(const std::string& path) {
  std::error_code ec;
  if (fs::exists(fs::path(path) / kManifestFileName, ec)) return path;
  if (!fs::exists(path, ec)) return NotFoundError(path + ": no such file or directory");
  for (const std::string& dir : {path, (fs::path(path) / "checkpoints").string()}) {
    LOOM_ASSIGN_OR_RETURN(auto list, ListCheckpoints(dir));
    if (!list.empty()) return list.front().path;
  }
  return NotFoundError(path + ": not a checkpoint (no " + std::string(kManifestFileName) +
                       ") and no step-* checkpoint below it");
}

int64_t GlobalTensor::row_elements() const {
  int64_t n = 1;
  for (size_t i = 1; i < shape.size(); ++i) n *= shape[i];
  return n;
}

// ---------------------------------------------------------------------------------------------
// CheckpointSource.

struct CheckpointSource::Files {
  FdCache fds{O_RDONLY};  // by path
};

CheckpointSource::~CheckpointSource() = default;

namespace {

// Where a piece's local rows lie in its global tensor.
struct Placement {
  int entry = 0;
  int64_t stride = 1, row_offset = 0, num_rows = 0;
  int64_t col = 0, width = 0;  // global columns (elements of a row) the piece holds
  int group = 0;               // per-row slots: replica index (0 = the one returned)
};

// Checks that the pieces of an embedding tensor tile it exactly, and computes placements.
Status PlaceEmbeddingPieces(const CheckpointManifest& m, const proto::EmbeddingTableInfo& table,
                            GlobalTensor* gt, std::vector<Placement>* out) {
  const std::string what = "table '" + table.name() + "' " + gt->slot;
  std::map<std::pair<int64_t, int64_t>, std::vector<int>> groups;  // (col_begin, width)
  for (int idx : gt->entries) {
    const TensorEntry& e = m.tensors(idx);
    const EmbeddingPiece& p = e.piece();
    const bool per_row = e.shape_size() == 1;
    const std::string where = "tensor " + e.name() + " (" + what + ")";
    if (per_row != gt->per_row) {
      return DataLossError(where + ": pieces disagree on being per-row state");
    }
    if (FromTensorDType(e.dtype()) != gt->dtype) {
      return DataLossError(where + ": pieces disagree on the dtype");
    }
    if (p.row_stride() < 1 || p.row_offset() < 0 || p.row_offset() >= p.row_stride() ||
        p.num_rows() < 0 || p.col_begin() < 0 || p.width() < 1 ||
        p.col_begin() + p.width() > table.dim()) {
      return DataLossError(
          where + ": invalid piece (row_stride " + std::to_string(p.row_stride()) +
          ", row_offset " + std::to_string(p.row_offset()) + ", num_rows " +
          std::to_string(p.num_rows()) + ", columns [" + std::to_string(p.col_begin()) + ", " +
          std::to_string(p.col_begin() + p.width()) + ") of " + std::to_string(table.dim()) + ")");
    }
    const std::vector<int64_t> want =
        per_row ? std::vector<int64_t>{p.num_rows()}
                : std::vector<int64_t>{p.num_rows(), static_cast<int64_t>(p.width())};
    const std::vector<int64_t> have(e.shape().begin(), e.shape().end());
    if (have != want) {
      return DataLossError(where + ": shape " + ShapeText(have) + ", its piece says " +
                           ShapeText(want));
    }
    groups[{p.col_begin(), p.width()}].push_back(idx);
  }
  const int64_t rows = table.num_rows();
  int64_t next_col = 0;
  int group_index = 0;
  for (auto& kv : groups) {
    const int64_t col = kv.first.first, width = kv.first.second;
    if (!gt->per_row) {
      if (col != next_col) {
        return DataLossError(what + ": no piece holds columns [" + std::to_string(next_col) + ", " +
                             std::to_string(col) + ") (a missing column shard?)");
      }
      next_col = col + width;
    }
    // The rows: one stride, every offset once, each piece the rows it must hold.
    const int64_t stride = m.tensors(kv.second[0]).piece().row_stride();
    std::vector<int> by_offset(static_cast<size_t>(stride), -1);
    for (int idx : kv.second) {
      const EmbeddingPiece& p = m.tensors(idx).piece();
      if (p.row_stride() != stride) {
        return DataLossError(what + ": pieces of columns [" + std::to_string(col) + ", " +
                             std::to_string(col + width) + ") have row strides " +
                             std::to_string(stride) + " and " + std::to_string(p.row_stride()));
      }
      if (by_offset[p.row_offset()] >= 0) {
        return DataLossError(what + ": two pieces hold rows " + std::to_string(p.row_offset()) +
                             " mod " + std::to_string(stride) + " (" +
                             m.tensors(by_offset[p.row_offset()]).name() + ", " +
                             m.tensors(idx).name() + ")");
      }
      by_offset[p.row_offset()] = idx;
      const int64_t expect = rows > p.row_offset() ? CeilDiv(rows - p.row_offset(), stride) : 0;
      if (p.num_rows() != expect) {
        return DataLossError(
            "tensor " + m.tensors(idx).name() + ": holds " + std::to_string(p.num_rows()) +
            " rows, rows " + std::to_string(p.row_offset()) + " mod " + std::to_string(stride) +
            " of a " + std::to_string(rows) + "-row table are " + std::to_string(expect));
      }
      Placement pl;
      pl.entry = idx;
      pl.stride = stride;
      pl.row_offset = p.row_offset();
      pl.num_rows = p.num_rows();
      pl.col = gt->per_row ? 0 : col;
      pl.width = gt->per_row ? 1 : width;
      pl.group = gt->per_row ? group_index : 0;
      out->push_back(pl);
    }
    for (int64_t o = 0; o < stride; ++o) {
      if (by_offset[o] < 0) {
        return DataLossError(what + ": no piece holds rows " + std::to_string(o) + " mod " +
                             std::to_string(stride) + " of columns [" + std::to_string(col) + ", " +
                             std::to_string(col + width) + ") (a missing row shard?)");
      }
    }
    ++group_index;
  }
  if (!gt->per_row && next_col != table.dim()) {
    return DataLossError(what + ": no piece holds columns [" + std::to_string(next_col) + ", " +
                         std::to_string(table.dim()) + ") (a missing column shard?)");
  }
  // The returned replica first.
  std::stable_sort(out->begin(), out->end(),
                   [](const Placement& a, const Placement& b) { return a.group < b.group; });
  return Status::Ok();
}

StatusOr<std::vector<Placement>> Placements(const CheckpointManifest& m, const GlobalTensor& gt) {
  std::vector<Placement> out;
  if (gt.table < 0) {
    Placement pl;
    pl.entry = gt.entries[0];
    pl.num_rows = gt.rows();
    pl.width = gt.row_elements();
    out.push_back(pl);
    return out;
  }
  GlobalTensor copy = gt;
  LOOM_RETURN_IF_ERROR(PlaceEmbeddingPieces(m, m.tables(gt.table), &copy, &out));
  return out;
}

}  // namespace

// Streams one global tensor of a checkpoint (see the header: each piece read once, in order,
// its CRC checked at its end).
class CheckpointRowSource final : public RowSource {
 public:
  CheckpointRowSource(const CheckpointSource* src, const GlobalTensor& gt,
                      std::vector<Placement> placements)
      : src_(src), gt_(gt), pieces_(std::move(placements)) {
    state_.resize(pieces_.size());
  }

  StatusOr<int64_t> Next(int64_t max_rows, std::vector<char>* out) override {
    const int64_t rows = gt_.rows();
    const int64_t n = std::min(std::max<int64_t>(max_rows, 1), rows - row_);
    if (n <= 0) return int64_t{0};
    const int64_t esize = DTypeSize(gt_.dtype);
    const int64_t row_elems = gt_.row_elements();
    out->resize(static_cast<size_t>(n * row_elems * esize));
    const CheckpointManifest& m = src_->manifest_;
    for (size_t i = 0; i < pieces_.size(); ++i) {
      const Placement& p = pieces_[i];
      State& s = state_[i];
      const TensorEntry& e = m.tensors(p.entry);
      const std::string file = src_->path_ + "/" + e.file();
      const int64_t l0 = std::clamp<int64_t>(CeilDiv(row_ - p.row_offset, p.stride), 0, p.num_rows);
      const int64_t l1 =
          std::clamp<int64_t>(CeilDiv(row_ + n - p.row_offset, p.stride), 0, p.num_rows);
      if (l1 <= l0) continue;
      if (l0 != s.next) {
        return InternalError("tensor " + e.name() + ": rows read out of order");
      }
      const int64_t piece_row_bytes = p.width * esize;
      tmp_.resize(static_cast<size_t>((l1 - l0) * piece_row_bytes));
      LOOM_ASSIGN_OR_RETURN(const int fd, src_->files_->fds.Get(file, ShortPath(file)));
      LOOM_RETURN_IF_ERROR(PreadFull(fd, tmp_.data(), tmp_.size(),
                                     e.offset() + static_cast<uint64_t>(l0 * piece_row_bytes),
                                     ShortPath(file) + ": tensor " + e.name()));
      s.crc = data::Crc32cExtend(s.crc, tmp_.data(), tmp_.size());
      s.next = l1;
      if (s.next == p.num_rows && s.crc != e.crc32c()) {
        return DataLossError(ShortPath(file) + ": tensor " + e.name() + " at offset " +
                             std::to_string(e.offset()) + ": CRC-32C " + Hex8(s.crc) +
                             ", the manifest says " + Hex8(e.crc32c()) + " (corrupted)");
      }
      for (int64_t l = l0; l < l1; ++l) {
        const int64_t g = l * p.stride + p.row_offset;
        char* dst = out->data() + ((g - row_) * row_elems + p.col) * esize;
        const char* src = tmp_.data() + (l - l0) * piece_row_bytes;
        if (p.group == 0) {
          std::memcpy(dst, src, static_cast<size_t>(piece_row_bytes));
        } else if (std::memcmp(dst, src, static_cast<size_t>(piece_row_bytes)) != 0) {
          return DataLossError(ShortPath(file) + ": tensor " + e.name() + ": row " +
                               std::to_string(g) + " of the per-row state '" + gt_.slot +
                               "' of table '" + gt_.parameter +
                               "' differs between its column slices (the slices must agree)");
        }
      }
    }
    row_ += n;
    return n;
  }

 private:
  struct State {
    uint32_t crc = 0;
    int64_t next = 0;
  };
  const CheckpointSource* src_;
  GlobalTensor gt_;
  std::vector<Placement> pieces_;
  std::vector<State> state_;
  std::vector<char> tmp_;
  int64_t row_ = 0;
};

StatusOr<std::unique_ptr<CheckpointSource>> CheckpointSource::Open(const std::string& path) {
  LOOM_ASSIGN_OR_RETURN(std::string resolved, ResolveCheckpointPath(path));
  std::unique_ptr<CheckpointSource> src(new CheckpointSource());
  src->path_ = resolved;
  LOOM_ASSIGN_OR_RETURN(src->manifest_, ReadManifest(resolved));
  const CheckpointManifest& m = src->manifest_;
  // Files present with their sizes, tensors inside them (no checksums: streaming checks them).
  LOOM_RETURN_IF_ERROR(VerifyCheckpoint(resolved, m, /*checksums=*/false));
  src->files_ = std::make_unique<Files>();

  // The bytes outside tensors (alignment padding): with the tensors' CRCs from the manifest
  // (each checked when its tensor is streamed) they must give the file's CRC, so a corrupted
  // byte anywhere in a file is found, not only inside tensors. Reads only the gaps.
  {
    std::map<std::string, std::vector<const TensorEntry*>> by_file;
    for (const auto& e : m.tensors()) by_file[e.file()].push_back(&e);
    std::vector<char> gap;
    for (const auto& f : m.files()) {
      auto& list = by_file[f.name()];
      std::sort(list.begin(), list.end(), [](const TensorEntry* a, const TensorEntry* b) {
        return a->offset() < b->offset();
      });
      const std::string fpath = resolved + "/" + f.name();
      LOOM_ASSIGN_OR_RETURN(const int fd, src->files_->fds.Get(fpath, ShortPath(fpath)));
      uint32_t crc = 0;
      uint64_t pos = 0;
      auto skip_to = [&](uint64_t end) -> Status {
        while (pos < end) {
          const uint64_t n = std::min<uint64_t>(end - pos, uint64_t{1} << 20);
          gap.resize(static_cast<size_t>(n));
          LOOM_RETURN_IF_ERROR(PreadFull(fd, gap.data(), n, pos, ShortPath(fpath)));
          crc = data::Crc32cExtend(crc, gap.data(), gap.size());
          pos += n;
        }
        return Status::Ok();
      };
      for (const TensorEntry* e : list) {
        if (e->offset() < pos) {
          return DataLossError(ShortPath(fpath) + ": tensor " + e->name() +
                               " overlaps the tensor before it (corrupted manifest)");
        }
        LOOM_RETURN_IF_ERROR(skip_to(e->offset()));
        crc = Crc32cCombine(crc, e->crc32c(), e->size_bytes());
        pos = e->offset() + e->size_bytes();
      }
      LOOM_RETURN_IF_ERROR(skip_to(f.size_bytes()));
      if (crc != f.crc32c()) {
        return DataLossError(ShortPath(fpath) +
                             ": the bytes between its tensors and their CRC-32Cs "
                             "give the file CRC-32C " +
                             Hex8(crc) + ", the manifest says " + Hex8(f.crc32c()) +
                             " (corrupted outside the tensors)");
      }
    }
  }

  // Global tensors.
  std::map<std::string, int> table_index;
  for (int t = 0; t < m.tables_size(); ++t) table_index[m.tables(t).name()] = t;
  std::map<std::string, size_t> by_name;
  auto add = [&](GlobalTensor gt) -> GlobalTensor* {
    by_name[gt.name] = src->tensors_.size();
    src->tensors_.push_back(std::move(gt));
    return &src->tensors_.back();
  };
  std::vector<std::vector<int>> table_entries(m.tables_size());
  for (int i = 0; i < m.tensors_size(); ++i) {
    const TensorEntry& e = m.tensors(i);
    if (e.kind() == TensorEntry::DENSE_PARAMETER ||
        e.kind() == TensorEntry::DENSE_OPTIMIZER_STATE) {
      GlobalTensor gt;
      gt.name = e.name();
      gt.kind = e.kind();
      gt.dtype = FromTensorDType(e.dtype());
      gt.shape.assign(e.shape().begin(), e.shape().end());
      gt.parameter = e.parameter();
      gt.slot = e.slot();
      gt.entries = {i};
      if (by_name.count(gt.name)) return DataLossError("tensor " + gt.name + ": listed twice");
      add(std::move(gt));
      continue;
    }
    auto t = table_index.find(e.piece().table());
    if (t == table_index.end()) {
      return DataLossError("tensor " + e.name() + ": piece of table '" + e.piece().table() +
                           "', which the manifest's tables do not list");
    }
    table_entries[t->second].push_back(i);
  }
  for (int t = 0; t < m.tables_size(); ++t) {
    const proto::EmbeddingTableInfo& info = m.tables(t);
    std::vector<std::string> slots;  // stored order, weight first
    std::map<std::string, std::vector<int>> by_slot;
    for (int i : table_entries[t]) {
      const TensorEntry& e = m.tensors(i);
      const std::string slot = e.kind() == TensorEntry::EMBEDDING_WEIGHT ? "weight" : e.slot();
      if (slot.empty()) return DataLossError("tensor " + e.name() + ": state without a slot");
      if (!by_slot.count(slot)) slots.push_back(slot);
      by_slot[slot].push_back(i);
    }
    if (!by_slot.count("weight")) {
      return DataLossError("table '" + info.name() + "': the manifest holds none of its weights");
    }
    std::stable_partition(slots.begin(), slots.end(),
                          [](const std::string& s) { return s == "weight"; });
    for (const std::string& slot : slots) {
      const TensorEntry& first = m.tensors(by_slot[slot][0]);
      GlobalTensor gt;
      gt.name = "embedding/" + info.name() + "/" + slot;
      gt.kind = first.kind();
      gt.dtype = FromTensorDType(first.dtype());
      gt.per_row = first.shape_size() == 1;
      gt.shape = gt.per_row ? std::vector<int64_t>{info.num_rows()}
                            : std::vector<int64_t>{info.num_rows(), info.dim()};
      gt.parameter = info.name();
      gt.slot = slot;
      gt.table = t;
      gt.entries = by_slot[slot];
      std::vector<Placement> placements;
      LOOM_RETURN_IF_ERROR(PlaceEmbeddingPieces(m, info, &gt, &placements));
      // Empty pieces are never read: check their CRC (of nothing) now.
      for (const Placement& p : placements) {
        const TensorEntry& e = m.tensors(p.entry);
        if (p.num_rows == 0 && e.crc32c() != 0) {
          return DataLossError(e.file() + ": tensor " + e.name() + ": empty, but its CRC-32C is " +
                               Hex8(e.crc32c()) + " (corrupted manifest)");
        }
      }
      add(std::move(gt));
    }
  }
  return src;
}

const GlobalTensor* CheckpointSource::Find(const std::string& name) const {
  for (const GlobalTensor& t : tensors_) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

StatusOr<std::unique_ptr<RowSource>> CheckpointSource::Stream(const GlobalTensor& t) const {
  LOOM_ASSIGN_OR_RETURN(std::vector<Placement> pl, Placements(manifest_, t));
  return std::unique_ptr<RowSource>(new CheckpointRowSource(this, t, std::move(pl)));
}

StatusOr<std::vector<char>> CheckpointSource::ReadAll(const GlobalTensor& t) const {
  LOOM_ASSIGN_OR_RETURN(auto stream, Stream(t));
  std::vector<char> out, block;
  while (true) {
    LOOM_ASSIGN_OR_RETURN(int64_t n, stream->Next(std::max<int64_t>(t.rows(), 1), &block));
    if (n == 0) break;
    out.insert(out.end(), block.begin(), block.end());
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// CheckpointBuilder: lays out, writes and commits a checkpoint directory.

namespace {

struct OutTensor {
  TensorEntry entry;  // file, offset and size set by Begin, crc by Commit
  int file = 0;
  int64_t stride = 1, row_offset = 0, num_rows = 0;
  int64_t col = 0, width = 0;  // global columns of a row (elements)
  int64_t esize = 4;
  uint32_t crc = 0;
  int64_t rows_done = 0;
};

struct OutFile {
  std::string name;
  int writer_rank = 0;
  std::vector<int> tensors;  // file order
  uint64_t size = 0;
  bool created = false;
};

class CheckpointBuilder {
 public:
  CheckpointBuilder(std::string out_dir, int64_t step, bool overwrite)
      : out_dir_(std::move(out_dir)), step_(step), overwrite_(overwrite) {
    final_ = (fs::path(out_dir_) / CheckpointDirName(step_)).string();
    tmp_ = (fs::path(out_dir_) / (".tmp-" + CheckpointDirName(step_))).string();
  }
  ~CheckpointBuilder() {
    fds_.reset();
    if (!committed_ && created_) {
      std::error_code ec;
      fs::remove_all(tmp_, ec);
    }
  }

  const std::string& final_path() const { return final_; }

  int File(const std::string& name, int writer_rank) {
    for (size_t i = 0; i < files_.size(); ++i) {
      if (files_[i].name == name) return static_cast<int>(i);
    }
    OutFile f;
    f.name = name;
    f.writer_rank = writer_rank;
    files_.push_back(f);
    return static_cast<int>(files_.size()) - 1;
  }

  int AddTensor(int file, TensorEntry entry, int64_t stride, int64_t row_offset, int64_t num_rows,
                int64_t col, int64_t width) {
    OutTensor t;
    t.entry = std::move(entry);
    t.file = file;
    t.stride = stride;
    t.row_offset = row_offset;
    t.num_rows = num_rows;
    t.col = col;
    t.width = width;
    t.esize = DTypeSize(FromTensorDType(t.entry.dtype()));
    tensors_.push_back(std::move(t));
    files_[file].tensors.push_back(static_cast<int>(tensors_.size()) - 1);
    return static_cast<int>(tensors_.size()) - 1;
  }

  // Checks the destination, creates the temporary directory and the preallocated files.
  Status Begin() {
    std::error_code ec;
    if (fs::exists(final_, ec) && !overwrite_) {
      return FailedPreconditionError(final_ + ": exists (pass --force to replace it)");
    }
    fs::create_directories(out_dir_, ec);
    if (ec) return InternalError(out_dir_ + ": cannot create: " + ec.message());
    fs::remove_all(tmp_, ec);
    fs::create_directory(tmp_, ec);
    if (ec) return InternalError(tmp_ + ": cannot create: " + ec.message());
    created_ = true;
    for (OutFile& f : files_) {
      // Empty embedding files are not written (the trainer writes one only for a rank that
      // owns shards); dense.bin always is.
      if (f.tensors.empty() && f.name != kDenseFileName) continue;
      int64_t pos = 0;
      for (int ti : f.tensors) {
        OutTensor& t = tensors_[ti];
        const int64_t size = t.num_rows * t.width * t.esize;
        const int64_t offset = Align(pos);
        t.entry.set_file(f.name);
        t.entry.set_offset(static_cast<uint64_t>(offset));
        t.entry.set_size_bytes(static_cast<uint64_t>(size));
        pos = offset + size;
      }
      f.size = static_cast<uint64_t>(pos);
      const std::string path = tmp_ + "/" + f.name;
      const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0644);
      if (fd < 0) return InternalError(path + ": cannot create: " + ErrnoText());
      const int rc = ::ftruncate(fd, static_cast<off_t>(f.size));
      const std::string err = rc != 0 ? ErrnoText() : "";
      ::close(fd);
      if (rc != 0) {
        return InternalError(path + ": cannot size to " + std::to_string(f.size) +
                             " bytes: " + err);
      }
      f.created = true;
    }
    fds_ = std::make_unique<FdCache>(O_RDWR);
    return Status::Ok();
  }

  // Streams a global tensor (rows x row_elements elements of esize bytes) from `src` into the
  // target tensors `targets`.
  Status Write(RowSource* src, const std::string& name, int64_t rows, int64_t row_elements,
               int64_t esize, const std::vector<int>& targets, int64_t block_bytes,
               ProgressTracker* progress) {
    const int64_t row_bytes = std::max<int64_t>(row_elements * esize, 1);
    const int64_t block_rows = std::max<int64_t>(block_bytes / row_bytes, 1);
    int64_t row = 0;
    while (true) {
      LOOM_ASSIGN_OR_RETURN(int64_t n, src->Next(block_rows, &buf_));
      if (n == 0) break;
      if (static_cast<int64_t>(buf_.size()) != n * row_elements * esize) {
        return InternalError(name + ": a block of the wrong size");
      }
      for (int ti : targets) {
        OutTensor& t = tensors_[ti];
        OutFile& f = files_[t.file];
        const int64_t i0 =
            std::clamp<int64_t>(CeilDiv(row - t.row_offset, t.stride), 0, t.num_rows);
        const int64_t i1 =
            std::clamp<int64_t>(CeilDiv(row + n - t.row_offset, t.stride), 0, t.num_rows);
        if (i1 <= i0) continue;
        if (i0 != t.rows_done) return InternalError(t.entry.name() + ": rows out of order");
        const int64_t piece_row_bytes = t.width * esize;
        const char* data;
        if (t.stride == 1 && t.width == row_elements) {
          data = buf_.data() + (i0 + t.row_offset - row) * row_bytes;
        } else {
          stage_.resize(static_cast<size_t>((i1 - i0) * piece_row_bytes));
          for (int64_t i = i0; i < i1; ++i) {
            const int64_t g = i * t.stride + t.row_offset;
            std::memcpy(stage_.data() + (i - i0) * piece_row_bytes,
                        buf_.data() + (g - row) * row_bytes + t.col * esize,
                        static_cast<size_t>(piece_row_bytes));
          }
          data = stage_.data();
        }
        const uint64_t len = static_cast<uint64_t>((i1 - i0) * piece_row_bytes);
        const std::string path = tmp_ + "/" + f.name;
        LOOM_ASSIGN_OR_RETURN(const int fd, fds_->Get(path, path));
        LOOM_RETURN_IF_ERROR(PwriteFull(
            fd, data, len, t.entry.offset() + static_cast<uint64_t>(i0 * piece_row_bytes),
            tmp_ + "/" + f.name));
        t.crc = data::Crc32cExtend(t.crc, data, len);
        t.rows_done = i1;
        bytes_written_ += static_cast<int64_t>(len);
      }
      row += n;
      if (progress != nullptr) progress->Bytes(n * row_elements * esize);
    }
    if (row != rows) {
      return InternalError(name + ": " + std::to_string(row) + " rows streamed, expected " +
                           std::to_string(rows));
    }
    for (int ti : targets) {
      if (tensors_[ti].rows_done != tensors_[ti].num_rows) {
        return InternalError(tensors_[ti].entry.name() + ": not every row was written");
      }
    }
    return Status::Ok();
  }

  // Fills in tensors, files (CRCs) into `m`, writes manifest.pb and manifest.crc32c, fsyncs
  // and renames the temporary directory into place.
  StatusOr<std::string> Commit(CheckpointManifest m) {
    m.clear_tensors();
    m.clear_files();
    // dense.bin first, then the embedding files by rank (the order of the trainer's manifest).
    std::vector<int> order;
    for (size_t i = 0; i < files_.size(); ++i) {
      if (files_[i].created) order.push_back(static_cast<int>(i));
    }
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
      const bool da = files_[a].name == kDenseFileName, db = files_[b].name == kDenseFileName;
      if (da != db) return da;
      return files_[a].writer_rank < files_[b].writer_rank;
    });
    static const char kZeros[kTensorAlignment] = {};
    for (int fi : order) {
      OutFile& f = files_[fi];
      uint32_t crc = 0;
      uint64_t pos = 0;
      for (int ti : f.tensors) {
        OutTensor& t = tensors_[ti];
        if (t.rows_done != t.num_rows) {
          return InternalError(t.entry.name() + ": never written");
        }
        crc = data::Crc32cExtend(crc, kZeros, t.entry.offset() - pos);
        crc = Crc32cCombine(crc, t.crc, t.entry.size_bytes());
        pos = t.entry.offset() + t.entry.size_bytes();
        t.entry.set_crc32c(t.crc);
        *m.add_tensors() = t.entry;
      }
      const std::string path = tmp_ + "/" + f.name;
      LOOM_ASSIGN_OR_RETURN(const int fd, fds_->Get(path, path));
      if (::fsync(fd) != 0) return InternalError(path + ": fsync failed: " + ErrnoText());
      fds_->Close(path);
      proto::CheckpointFile* cf = m.add_files();
      cf->set_name(f.name);
      cf->set_writer_rank(f.writer_rank);
      cf->set_size_bytes(pos);
      cf->set_crc32c(crc);
    }
    std::string bytes;
    m.SerializeToString(&bytes);
    const std::string crc_line = "crc32c=" + Hex8(data::Crc32c(bytes.data(), bytes.size())) +
                                 " size=" + std::to_string(bytes.size()) + "\n";
    LOOM_RETURN_IF_ERROR(WriteFileDurable(tmp_ + "/" + kManifestFileName, bytes));
    LOOM_RETURN_IF_ERROR(WriteFileDurable(tmp_ + "/" + kManifestCrcFileName, crc_line));
    LOOM_RETURN_IF_ERROR(FsyncPath(tmp_, true));
    std::error_code ec;
    const std::string old = (fs::path(out_dir_) / (".old-" + CheckpointDirName(step_))).string();
    if (fs::exists(final_, ec)) {
      if (!overwrite_) return FailedPreconditionError(final_ + ": exists (pass --force)");
      fs::remove_all(old, ec);
      fs::rename(final_, old, ec);
      if (ec) return InternalError(final_ + ": cannot move aside: " + ec.message());
    }
    fs::rename(tmp_, final_, ec);
    if (ec) return InternalError(final_ + ": cannot commit (rename): " + ec.message());
    committed_ = true;
    LOOM_RETURN_IF_ERROR(FsyncPath(out_dir_, true));
    fs::remove_all(old, ec);
    return final_;
  }

  int64_t bytes_written() const { return bytes_written_; }

 private:
  std::string out_dir_, final_, tmp_;
  int64_t step_;
  bool overwrite_;
  bool created_ = false, committed_ = false;
  std::vector<OutFile> files_;
  std::vector<OutTensor> tensors_;
  std::vector<char> buf_, stage_;
  std::unique_ptr<FdCache> fds_;
  int64_t bytes_written_ = 0;
};

// A target entry copied from a source entry, location fields cleared.
TensorEntry CleanEntry(const TensorEntry& e) {
  TensorEntry out = e;
  out.clear_file();
  out.clear_offset();
  out.clear_size_bytes();
  out.clear_crc32c();
  return out;
}

// The config the checkpoint was written with.
StatusOr<proto::LoomConfig> ManifestConfig(const CheckpointManifest& m) {
  if (m.config_text().empty()) {
    return FailedPreconditionError(
        "the manifest has no config_text (the embedding config is needed to plan the target)");
  }
  proto::LoomConfig cfg;
  LOOM_RETURN_IF_ERROR(config::ParseTextProto(m.config_text(), "manifest config_text", &cfg));
  return cfg;
}

struct TargetPlan {
  proto::LoomConfig config;
  embedding::EmbeddingSpec spec;
  embedding::ShardingPlan plan;
  std::vector<std::string> notes;
};

StatusOr<TargetPlan> MakeTargetPlan(const CheckpointManifest& m, const ReshardOptions& o) {
  const int M = o.world_size;
  if (M < 1) return InvalidArgumentError("--world-size must be >= 1, got " + std::to_string(M));
  TargetPlan tp;
  LOOM_ASSIGN_OR_RETURN(tp.config, ManifestConfig(m));
  proto::EmbeddingConfig* ec = tp.config.mutable_embedding();
  if (o.has_plan) {
    ec->mutable_sharding_overrides()->CopyFrom(o.plan.sharding_overrides());
    if (o.plan.has_data_parallel_max_bytes()) {
      ec->set_data_parallel_max_bytes(o.plan.data_parallel_max_bytes());
    }
    if (o.plan.has_per_rank_memory_budget_bytes()) {
      ec->set_per_rank_memory_budget_bytes(o.plan.per_rank_memory_budget_bytes());
    }
  }
  auto spec = embedding::BuildEmbeddingSpec(*ec, M);
  if (!spec.ok()) {
    return Status(spec.status().code(),
                  "the target plan at " + std::to_string(M) + " ranks: " + spec.status().message() +
                      (o.has_plan ? ""
                                  : " (give --plan FILE with sharding_overrides valid at " +
                                        std::to_string(M) + " ranks)"));
  }
  tp.spec = std::move(*spec);
  // The tables must be the checkpoint's.
  if (static_cast<int>(tp.spec.tables.size()) != m.tables_size()) {
    return FailedPreconditionError("the config has " + std::to_string(tp.spec.tables.size()) +
                                   " embedding tables, the manifest " +
                                   std::to_string(m.tables_size()));
  }
  for (int t = 0; t < m.tables_size(); ++t) {
    const auto& a = tp.spec.tables[t];
    const auto& b = m.tables(t);
    if (a.name != b.name() || a.num_rows != b.num_rows() || a.dim != b.dim()) {
      return FailedPreconditionError(
          "embedding table " + std::to_string(t) + ": the config says '" + a.name + "' (" +
          std::to_string(a.num_rows) + " x " + std::to_string(a.dim) + "), the manifest '" +
          b.name() + "' (" + std::to_string(b.num_rows()) + " x " + std::to_string(b.dim()) + ")");
    }
  }
  // The local batch the trainer would plan for (it only sizes buffers and weighs the
  // placement; a config that does not resolve at M ranks cannot train there either).
  int64_t batch = 1;
  auto b = config::ResolveLocalBatchSize(tp.config.train(), M);
  if (b.ok()) {
    batch = *b;
    if (tp.config.train().eval_local_batch_size() > 0) {
      batch = std::max<int64_t>(batch, tp.config.train().eval_local_batch_size());
    }
  } else {
    tp.notes.push_back("the config's batch size does not resolve at " + std::to_string(M) +
                       " ranks (" + b.status().message() +
                       "): set train.local_batch_size or a divisible global_batch_size to train");
  }
  embedding::PlannerOptions po;
  po.world_size = M;
  po.batch_size = batch;
  po.num_threads = 1;
  auto plan = embedding::PlanSharding(tp.spec, po);
  if (!plan.ok()) {
    return Status(plan.status().code(),
                  "the target plan at " + std::to_string(M) + " ranks: " + plan.status().message());
  }
  tp.plan = std::move(*plan);
  return tp;
}

// Positions of the training-data slices for the target world size (see PositionPolicy).
Status NewRankStates(const CheckpointManifest& m, int M, PositionPolicy policy,
                     std::vector<proto::RankState>* out, proto::TrainerState* trainer,
                     std::vector<std::string>* notes) {
  out->assign(M, proto::RankState());
  for (int r = 0; r < M; ++r) {
    (*out)[r].set_rank(r);
    (*out)[r].set_host("loom ckpt");  // no process of this world size wrote it
  }
  const int N = m.world_size();
  std::vector<proto::DataSlicePosition> saved;
  for (const auto& rs : m.ranks()) {
    for (const auto& p : rs.data_slices()) saved.push_back(p);
  }
  if (M == N) {
    for (int r = 0; r < M && r < m.ranks_size(); ++r) {
      (*out)[r] = m.ranks(r);
      (*out)[r].set_rank(r);
    }
    if (!saved.empty()) notes->push_back("reader positions kept exactly (same world size)");
    return Status::Ok();
  }
  if (saved.empty()) return Status::Ok();
  // The slicings present (a converted checkpoint may hold several), each complete.
  std::map<int, std::map<int, const proto::DataSlicePosition*>> slicings;  // S -> slice -> pos
  for (const auto& p : saved) {
    if (p.num_slices() < 1 || p.slice() < 0 || p.slice() >= p.num_slices()) {
      return DataLossError("the manifest holds a position of data slice " +
                           std::to_string(p.slice()) + " of " + std::to_string(p.num_slices()));
    }
    slicings[p.num_slices()][p.slice()] = &p;
  }
  for (const auto& kv : slicings) {
    if (static_cast<int>(kv.second.size()) != kv.first) {
      return DataLossError("the manifest holds " + std::to_string(kv.second.size()) + " of the " +
                           std::to_string(kv.first) + " data-slice positions of its " +
                           std::to_string(kv.first) + "-slice reading");
    }
  }
  for (const auto& kv : slicings) {
    const int S = kv.first;
    if (S % M != 0) continue;
    // The S exact positions, rank r reading slices [r S/M, (r+1) S/M).
    for (int r = 0; r < M; ++r) {
      for (int s = r * (S / M); s < (r + 1) * (S / M); ++s) {
        *(*out)[r].add_data_slices() = *kv.second.at(s);
      }
    }
    notes->push_back("exact reader positions of the " + std::to_string(S) +
                     " data slices kept (a trainer reading " + std::to_string(S) +
                     " slices resumes exactly)");
  }
  const int S = slicings.count(N) ? N : slicings.begin()->first;  // what the writer read
  const auto& reference = slicings[S];
  if (!slicings.count(M)) {
    // Positions for M slices, synthesized at an epoch start.
    const proto::ReaderPosition& tmpl = reference.begin()->second->position();
    int64_t epoch = trainer->epoch();
    bool boundary = true;
    for (const auto& kv : reference) {
      const auto& q = kv.second->position();
      boundary = boundary && q.epoch() == epoch && q.rows_in_epoch() == 0 &&
                 q.chunk_cursor() == 0 && q.window_offset() == 0;
    }
    if (policy == PositionPolicy::kNextEpoch && !boundary) {
      ++epoch;
      trainer->set_epoch(epoch);
    }
    for (int r = 0; r < M; ++r) {
      proto::DataSlicePosition* d = (*out)[r].add_data_slices();
      d->set_slice(r);
      d->set_num_slices(M);
      proto::ReaderPosition* p = d->mutable_position();
      p->set_epoch(epoch);
      p->set_chunk_cursor(0);
      p->set_window_offset(0);
      p->set_file_index(0);
      p->set_block(0);
      p->set_record(0);
      p->set_seed(tmpl.seed());
      p->set_rank(r);
      p->set_world_size(M);
      p->set_data_fingerprint(tmpl.data_fingerprint());
      p->set_shuffle_buffer_rows(tmpl.shuffle_buffer_rows());
      p->set_even_slices(tmpl.even_slices());
      p->set_bad_records(0);
      p->set_rows_in_epoch(0);
    }
    if (boundary) {
      notes->push_back("reader positions: the checkpoint is at the start of epoch " +
                       std::to_string(epoch) + ", so the " + std::to_string(M) +
                       " new data slices start there exactly");
    } else if (policy == PositionPolicy::kRestartEpoch) {
      notes->push_back("reader positions: the " + std::to_string(N) +
                       " ranks' positions do "
                       "not carry over to " +
                       std::to_string(M) + " ranks; the " + std::to_string(M) +
                       " new data slices restart epoch " + std::to_string(epoch) +
                       " (its samples already seen are seen again)");
    } else {
      notes->push_back("reader positions: the " + std::to_string(M) +
                       " new data slices start "
                       "epoch " +
                       std::to_string(epoch) +
                       " (the rest of the previous epoch is "
                       "skipped)");
    }
  }
  return Status::Ok();
}

// Adds the target pieces of every embedding tensor of `src` for `plan`; targets[i] lists the
// target tensors of src.tensors()[i].
void AddEmbeddingTargets(const CheckpointSource& src, const TargetPlan& tp, int dense_file,
                         CheckpointBuilder* b, std::vector<std::vector<int>>* targets) {
  const auto& tensors = src.tensors();
  for (int s = 0; s < static_cast<int>(tp.plan.shards.size()); ++s) {
    const embedding::Shard& sh = tp.plan.shards[s];
    const std::string& table = tp.spec.tables[sh.table].name;
    const int file = sh.rank < 0 ? dense_file : b->File(EmbeddingFileName(sh.rank), sh.rank);
    for (size_t g = 0; g < tensors.size(); ++g) {
      const GlobalTensor& gt = tensors[g];
      if (gt.table != sh.table) continue;
      TensorEntry e;
      const bool weight = gt.slot == "weight";
      e.set_name("embedding/" + table + "/shard" + std::to_string(s) + "/" +
                 (weight ? std::string("weight") : gt.slot));
      e.set_kind(gt.kind);
      e.set_dtype(ToTensorDType(gt.dtype));
      e.add_shape(sh.num_rows);
      if (!gt.per_row) e.add_shape(sh.width);
      e.set_parameter(table);
      e.set_slot(weight ? "" : gt.slot);
      EmbeddingPiece* p = e.mutable_piece();
      p->set_table(table);
      p->set_shard(s);
      p->set_strategy(ToPieceStrategy(sh.strategy));
      p->set_rank(sh.rank);
      p->set_row_stride(sh.row_stride);
      p->set_row_offset(sh.row_offset);
      p->set_num_rows(sh.num_rows);
      p->set_col_begin(sh.col_begin);
      p->set_width(sh.width);
      const int ti = b->AddTensor(file, std::move(e), sh.row_stride, sh.row_offset, sh.num_rows,
                                  gt.per_row ? 0 : sh.col_begin, gt.per_row ? 1 : sh.width);
      (*targets)[g].push_back(ti);
    }
  }
}

void FillTables(const CheckpointManifest& src, const TargetPlan& tp, CheckpointManifest* out) {
  out->clear_tables();
  for (size_t t = 0; t < tp.spec.tables.size(); ++t) {
    const proto::EmbeddingTableInfo& old = src.tables(static_cast<int>(t));
    const embedding::TablePlan& plan = tp.plan.tables[t];
    proto::EmbeddingTableInfo* info = out->add_tables();
    info->set_name(old.name());
    info->set_num_rows(old.num_rows());
    info->set_dim(old.dim());
    info->set_optimizer(old.optimizer());
    info->set_strategy(ToPieceStrategy(plan.strategy));
    for (int r : plan.ranks) info->add_ranks(r);
    for (int s : plan.shards) info->add_shards(s);
    for (const auto& f : old.features()) info->add_features(f);
  }
}

void ReportTableDone(const GlobalTensor& gt, const std::vector<GlobalTensor>& all, size_t index,
                     ProgressTracker* progress) {
  ConvertProgress& p = progress->state();
  ++p.tensors_done;
  if (gt.table >= 0 && (index + 1 == all.size() || all[index + 1].table != gt.table)) {
    ++p.tables_done;
  }
  progress->Report(true);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Reshard and merge.

StatusOr<embedding::ShardingPlan> PlanReshard(const CheckpointManifest& manifest,
                                              const ReshardOptions& options,
                                              proto::LoomConfig* new_config) {
  LOOM_ASSIGN_OR_RETURN(TargetPlan tp, MakeTargetPlan(manifest, options));
  if (new_config != nullptr) *new_config = tp.config;
  return tp.plan;
}

namespace {

StatusOr<ConvertResult> ReshardImpl(const std::string& source, const std::string& out_dir,
                                    const ReshardOptions& o, const std::string& stage) {
  LOOM_ASSIGN_OR_RETURN(auto src, CheckpointSource::Open(source));
  const CheckpointManifest& m = src->manifest();
  LOOM_ASSIGN_OR_RETURN(TargetPlan tp, MakeTargetPlan(m, o));
  ConvertResult result;
  result.notes = tp.notes;
  result.plan = tp.plan.ToString(tp.spec);

  CheckpointManifest out = m;
  out.clear_ranks();
  std::vector<proto::RankState> ranks;
  LOOM_RETURN_IF_ERROR(
      NewRankStates(m, o.world_size, o.positions, &ranks, out.mutable_trainer(), &result.notes));
  for (auto& r : ranks) *out.add_ranks() = r;
  out.set_world_size(o.world_size);
  out.set_created_utc(UtcNow());
  out.set_producer(m.producer() + " | " + o.producer + " " + stage + " " +
                   std::to_string(m.world_size()) + " -> " + std::to_string(o.world_size) +
                   " ranks");
  if (o.has_plan) {
    out.set_config_text(config::ToText(tp.config));
    out.set_config_hash(Fnv1a64(out.config_text()));
    result.notes.push_back(
        "the manifest's config_text now carries the target plan's "
        "embedding.sharding_overrides: resume with them");
  }
  FillTables(m, tp, &out);

  CheckpointBuilder b(out_dir, m.step(), o.overwrite);
  const int dense = b.File(kDenseFileName, 0);
  const auto& tensors = src->tensors();
  std::vector<std::vector<int>> targets(tensors.size());
  for (size_t g = 0; g < tensors.size(); ++g) {
    const GlobalTensor& gt = tensors[g];
    if (gt.table >= 0) continue;
    const TensorEntry& e = m.tensors(gt.entries[0]);
    targets[g].push_back(b.AddTensor(dense, CleanEntry(e), 1, 0, gt.rows(), 0, gt.row_elements()));
  }
  AddEmbeddingTargets(*src, tp, dense, &b, &targets);
  LOOM_RETURN_IF_ERROR(b.Begin());

  ProgressTracker progress(o.progress, stage);
  progress.state().tensors_total = static_cast<int>(tensors.size());
  progress.state().tables_total = m.tables_size();
  for (const auto& gt : tensors) progress.state().bytes_total += gt.bytes();
  for (size_t g = 0; g < tensors.size(); ++g) {
    const GlobalTensor& gt = tensors[g];
    progress.state().tensor = gt.name;
    LOOM_ASSIGN_OR_RETURN(auto stream, src->Stream(gt));
    LOOM_RETURN_IF_ERROR(b.Write(stream.get(), gt.name, gt.rows(), gt.row_elements(),
                                 DTypeSize(gt.dtype), targets[g], o.block_bytes, &progress));
    ReportTableDone(gt, tensors, g, &progress);
  }
  LOOM_ASSIGN_OR_RETURN(result.path, b.Commit(out));
  result.bytes_written = b.bytes_written();
  return result;
}

}  // namespace

StatusOr<ConvertResult> Reshard(const std::string& source, const std::string& out_dir,
                                const ReshardOptions& options) {
  return ReshardImpl(source, out_dir, options, "reshard");
}

StatusOr<ConvertResult> Merge(const std::string& source, const std::string& out_dir,
                              ReshardOptions options) {
  options.world_size = 1;
  if (!options.has_plan) {
    options.has_plan = true;
    options.plan.clear_sharding_overrides();
  }
  return ReshardImpl(source, out_dir, options, "merge");
}

// ---------------------------------------------------------------------------------------------
// Diff.

StatusOr<std::vector<TensorDiff>> DiffCheckpoints(const std::string& a, const std::string& b,
                                                  const DiffOptions& options) {
  LOOM_ASSIGN_OR_RETURN(auto sa, CheckpointSource::Open(a));
  LOOM_ASSIGN_OR_RETURN(auto sb, CheckpointSource::Open(b));
  auto wanted = [&](const GlobalTensor& t) {
    if (options.optimizer_state) return true;
    return t.kind == TensorEntry::DENSE_PARAMETER || t.kind == TensorEntry::EMBEDDING_WEIGHT;
  };
  std::vector<TensorDiff> out;
  std::vector<std::pair<const GlobalTensor*, const GlobalTensor*>> pairs;
  for (const GlobalTensor& t : sa->tensors()) {
    if (wanted(t)) pairs.push_back({&t, sb->Find(t.name)});
  }
  for (const GlobalTensor& t : sb->tensors()) {
    if (wanted(t) && sa->Find(t.name) == nullptr) pairs.push_back({nullptr, &t});
  }
  ProgressTracker progress(options.progress, "diff");
  progress.state().tensors_total = static_cast<int>(pairs.size());
  for (auto& p : pairs) {
    if (p.first != nullptr && p.second != nullptr) progress.state().bytes_total += p.first->bytes();
  }
  std::vector<char> ba, bb;
  for (auto& p : pairs) {
    TensorDiff d;
    const GlobalTensor* ta = p.first;
    const GlobalTensor* tb = p.second;
    d.name = ta ? ta->name : tb->name;
    d.shape = ta ? ta->shape : tb->shape;
    d.in_a = ta != nullptr;
    d.in_b = tb != nullptr;
    progress.state().tensor = d.name;
    if (!d.in_a || !d.in_b) {
      d.comparable = false;
      d.note = d.in_a ? "only in A" : "only in B";
    } else if (ta->shape != tb->shape || ta->dtype != tb->dtype) {
      d.comparable = false;
      d.note = std::string("A is ") + DTypeName(ta->dtype) + ShapeText(ta->shape) + ", B is " +
               DTypeName(tb->dtype) + ShapeText(tb->shape);
    } else {
      d.numel = ta->rows() * ta->row_elements();
      LOOM_ASSIGN_OR_RETURN(auto ra, sa->Stream(*ta));
      LOOM_ASSIGN_OR_RETURN(auto rb, sb->Stream(*tb));
      const int64_t esize = DTypeSize(ta->dtype);
      const int64_t block_rows =
          std::max<int64_t>(options.block_bytes / std::max<int64_t>(ta->row_bytes(), 1), 1);
      double dot = 0, na = 0, nb = 0, max_abs = 0;
      while (true) {
        LOOM_ASSIGN_OR_RETURN(int64_t n, ra->Next(block_rows, &ba));
        LOOM_ASSIGN_OR_RETURN(int64_t n2, rb->Next(block_rows, &bb));
        if (n != n2) return InternalError(d.name + ": the two streams disagree on rows");
        if (n == 0) break;
        const int64_t count = n * ta->row_elements();
        for (int64_t i = 0; i < count; ++i) {
          const char* pa = ba.data() + i * esize;
          const char* pb = bb.data() + i * esize;
          if (std::memcmp(pa, pb, static_cast<size_t>(esize)) == 0) {
            const double x = ElementAsDouble(pa, ta->dtype);
            dot += x * x;
            na += x * x;
            nb += x * x;
            continue;
          }
          ++d.num_different;
          const double x = ElementAsDouble(pa, ta->dtype);
          const double y = ElementAsDouble(pb, ta->dtype);
          dot += x * y;
          na += x * x;
          nb += y * y;
          const double diff = std::fabs(x - y);
          if (!std::isnan(max_abs) && !(diff <= max_abs)) max_abs = diff;  // NaN sticks
        }
        progress.Bytes(n * ta->row_bytes());
      }
      d.max_abs_diff = max_abs;
      if (na == 0 && nb == 0) {
        d.cosine = 1;
      } else if (na == 0 || nb == 0) {
        d.cosine = 0;
      } else {
        d.cosine = dot / (std::sqrt(na) * std::sqrt(nb));
      }
    }
    ++progress.state().tensors_done;
    progress.Report(true);
    out.push_back(std::move(d));
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Import.

namespace {

// Rows of a safetensors tensor converted to f32.
class SafetensorsRowSource final : public RowSource {
 public:
  SafetensorsRowSource(const SafetensorsReader* file, const SafetensorsReader::Entry* e,
                       int64_t row_elements)
      : file_(file), e_(e), row_elements_(row_elements) {
    rows_ = row_elements > 0 ? e->numel() / row_elements : 0;
  }
  StatusOr<int64_t> Next(int64_t max_rows, std::vector<char>* out) override {
    const int64_t n = std::min(std::max<int64_t>(max_rows, 1), rows_ - row_);
    if (n <= 0) return int64_t{0};
    const int64_t count = n * row_elements_;
    const int64_t es = e_->element_size;
    raw_.resize(static_cast<size_t>(count * es));
    LOOM_RETURN_IF_ERROR(file_->Read(*e_, static_cast<uint64_t>(row_ * row_elements_ * es),
                                     raw_.size(), raw_.data()));
    out->resize(static_cast<size_t>(count * 4));
    float* dst = reinterpret_cast<float*>(out->data());
    const char* p = raw_.data();
    const std::string& t = e_->dtype;
    for (int64_t i = 0; i < count; ++i, p += es) {
      if (t == "F32") {
        std::memcpy(&dst[i], p, 4);
      } else if (t == "F64") {
        double v;
        std::memcpy(&v, p, 8);
        dst[i] = static_cast<float>(v);
      } else if (t == "BF16") {
        bf16 v;
        std::memcpy(&v, p, 2);
        dst[i] = Bf16ToFloat(v);
      } else {  // F16 (checked by the caller)
        f16 v;
        std::memcpy(&v, p, 2);
        dst[i] = F16ToFloat(v);
      }
    }
    row_ += n;
    return n;
  }

 private:
  const SafetensorsReader* file_;
  const SafetensorsReader::Entry* e_;
  int64_t row_elements_, rows_ = 0, row_ = 0;
  std::vector<char> raw_;
};

// Rows of an int8 row-wise table, dequantized.
class Int8RowSource final : public RowSource {
 public:
  Int8RowSource(const SafetensorsReader* file, const SafetensorsReader::Entry* q,
                const SafetensorsReader::Entry* scale, const SafetensorsReader::Entry* bias,
                int64_t rows, int64_t dim)
      : file_(file), q_(q), scale_(scale), bias_(bias), rows_(rows), dim_(dim) {}
  StatusOr<int64_t> Next(int64_t max_rows, std::vector<char>* out) override {
    const int64_t n = std::min(std::max<int64_t>(max_rows, 1), rows_ - row_);
    if (n <= 0) return int64_t{0};
    qv_.resize(static_cast<size_t>(n * dim_));
    sv_.resize(static_cast<size_t>(n));
    bv_.resize(static_cast<size_t>(n));
    LOOM_RETURN_IF_ERROR(
        file_->Read(*q_, static_cast<uint64_t>(row_ * dim_), qv_.size(), qv_.data()));
    LOOM_RETURN_IF_ERROR(file_->Read(*scale_, static_cast<uint64_t>(row_ * 4), n * 4, sv_.data()));
    LOOM_RETURN_IF_ERROR(file_->Read(*bias_, static_cast<uint64_t>(row_ * 4), n * 4, bv_.data()));
    out->resize(static_cast<size_t>(n * dim_ * 4));
    float* dst = reinterpret_cast<float*>(out->data());
    for (int64_t r = 0; r < n; ++r) {
      DequantizeRowInt8(qv_.data() + r * dim_, dim_, sv_[r], bv_[r], dst + r * dim_);
    }
    row_ += n;
    return n;
  }

 private:
  const SafetensorsReader* file_;
  const SafetensorsReader::Entry *q_, *scale_, *bias_;
  int64_t rows_, dim_, row_ = 0;
  std::vector<int8_t> qv_;
  std::vector<float> sv_, bv_;
};

// Every element the same bytes.
class ConstantRowSource final : public RowSource {
 public:
  ConstantRowSource(int64_t rows, int64_t row_elements, std::vector<char> element)
      : rows_(rows), row_elements_(row_elements), element_(std::move(element)) {}
  StatusOr<int64_t> Next(int64_t max_rows, std::vector<char>* out) override {
    const int64_t n = std::min(std::max<int64_t>(max_rows, 1), rows_ - row_);
    if (n <= 0) return int64_t{0};
    const size_t es = element_.size();
    out->resize(static_cast<size_t>(n * row_elements_) * es);
    for (size_t i = 0; i < out->size(); i += es) std::memcpy(out->data() + i, element_.data(), es);
    row_ += n;
    return n;
  }

 private:
  int64_t rows_, row_elements_, row_ = 0;
  std::vector<char> element_;
};

bool FloatDType(const std::string& t) {
  return t == "F32" || t == "F64" || t == "BF16" || t == "F16";
}

}  // namespace

StatusOr<ConvertResult> ImportSafetensors(const std::string& weights,
                                          const std::string& template_checkpoint,
                                          const std::string& out_dir, const ImportOptions& o) {
  LOOM_ASSIGN_OR_RETURN(auto src, CheckpointSource::Open(template_checkpoint));
  LOOM_ASSIGN_OR_RETURN(SafetensorsReader file, SafetensorsReader::Open(weights));
  const CheckpointManifest& m = src->manifest();
  const std::string fname = fs::path(weights).filename().string();
  proto::LoomConfig cfg;
  if (o.reset_training_state) {
    LOOM_ASSIGN_OR_RETURN(cfg, ManifestConfig(m));
  }

  // What feeds each global tensor.
  const auto& tensors = src->tensors();
  enum class From { kFile, kInt8, kTemplate, kReset };
  std::vector<From> from(tensors.size(), From::kTemplate);
  std::vector<const SafetensorsReader::Entry*> entry(tensors.size(), nullptr);
  std::vector<std::array<const SafetensorsReader::Entry*, 3>> int8(tensors.size());
  std::set<std::string> used;
  std::vector<std::string> missing, problems;
  for (size_t g = 0; g < tensors.size(); ++g) {
    const GlobalTensor& gt = tensors[g];
    const bool is_weight =
        gt.kind == TensorEntry::DENSE_PARAMETER || gt.kind == TensorEntry::EMBEDDING_WEIGHT;
    if (!is_weight) {
      from[g] = o.reset_training_state ? From::kReset : From::kTemplate;
      continue;
    }
    const std::string name =
        gt.table < 0 ? ExportDenseName(gt.parameter) : ExportTableName(gt.parameter);
    const SafetensorsReader::Entry* e = file.Find(name);
    if (e != nullptr) {
      used.insert(name);
      std::vector<int64_t> want = gt.shape;
      if (e->shape != want) {
        problems.push_back(name + " is " + ShapeText(e->shape) + " in " + fname +
                           ", the checkpoint's is " + ShapeText(want));
      } else if (!FloatDType(e->dtype) || gt.dtype != DType::kF32) {
        problems.push_back(name + ": dtype " + e->dtype + " in " + fname +
                           " (F32, F64, BF16 or F16 expected)");
      }
      from[g] = From::kFile;
      entry[g] = e;
      continue;
    }
    if (gt.table >= 0) {
      const std::string base = "embedding." + gt.parameter + ".";
      const auto* q = file.Find(base + "weight_int8");
      const auto* s = file.Find(base + "weight_scale");
      const auto* b = file.Find(base + "weight_bias");
      if (q != nullptr || s != nullptr || b != nullptr) {
        if (q == nullptr || s == nullptr || b == nullptr) {
          problems.push_back(base +
                             "weight_int8/_scale/_bias: only part of the int8 triple is "
                             "in " +
                             fname);
          continue;
        }
        used.insert(q->name);
        used.insert(s->name);
        used.insert(b->name);
        const std::vector<int64_t> rows_only{gt.shape[0]};
        if (q->dtype != "I8" || q->shape != gt.shape || s->dtype != "F32" ||
            s->shape != rows_only || b->dtype != "F32" || b->shape != rows_only) {
          problems.push_back(
              base + "weight_int8 " + q->dtype + ShapeText(q->shape) + ", weight_scale " +
              s->dtype + ShapeText(s->shape) + ", weight_bias " + b->dtype + ShapeText(b->shape) +
              " in " + fname + "; the table needs I8" + ShapeText(gt.shape) + ", F32(" +
              std::to_string(gt.shape[0]) + "), F32(" + std::to_string(gt.shape[0]) + ")");
          continue;
        }
        from[g] = From::kInt8;
        int8[g] = {q, s, b};
        continue;
      }
    }
    if (o.allow_missing) {
      from[g] = From::kTemplate;
    } else {
      missing.push_back(name);
    }
  }
  if (!missing.empty()) {
    std::string list;
    for (size_t i = 0; i < missing.size() && i < 10; ++i) list += (i ? ", " : "") + missing[i];
    if (missing.size() > 10) list += ", ... (" + std::to_string(missing.size()) + " in all)";
    problems.push_back(fname + " lacks " + list + " (--allow-missing keeps the template's)");
  }
  if (!o.ignore_unknown) {
    std::vector<std::string> unknown;
    for (const auto& e : file.entries()) {
      if (!used.count(e.name)) unknown.push_back(e.name);
    }
    if (!unknown.empty()) {
      std::string list;
      for (size_t i = 0; i < unknown.size() && i < 10; ++i) list += (i ? ", " : "") + unknown[i];
      if (unknown.size() > 10) list += ", ... (" + std::to_string(unknown.size()) + " in all)";
      problems.push_back(fname + " holds tensors the checkpoint does not have: " + list +
                         " (--ignore-unknown skips them)");
    }
  }
  if (!problems.empty()) {
    std::string msg;
    for (const auto& p : problems) msg += (msg.empty() ? "" : "; ") + p;
    return FailedPreconditionError(msg);
  }

  // The output: the template's layout and manifest.
  CheckpointManifest out = m;
  out.set_created_utc(UtcNow());
  out.set_producer(m.producer() + " | loom ckpt import " + fname);
  ConvertResult result;
  if (o.reset_training_state) {
    out.set_step(0);
    out.clear_trainer();
    out.mutable_trainer()->set_step(0);
    // The trainer's initial "best" of the early-stopping metric.
    const auto metric = cfg.train().early_stopping().metric();
    const bool higher_better = metric == proto::EarlyStoppingConfig::METRIC_AUC ||
                               metric == proto::EarlyStoppingConfig::METRIC_GAUC;
    out.mutable_trainer()->set_best_metric(higher_better ? -std::numeric_limits<double>::infinity()
                                                         : std::numeric_limits<double>::infinity());
    out.mutable_rng()->set_next_step(0);
    proto::DenseOptimizerState* ds = out.mutable_dense_optimizer();
    ds->set_step(0);
    if (ds->has_plateau()) {
      proto::LrPlateauState fresh;
      const bool max_mode = cfg.optimizer().lr_schedule().plateau().mode() ==
                            proto::OptimizerConfig::LrSchedule::Plateau::PLATEAU_MODE_MAX;
      fresh.set_best(max_mode ? -std::numeric_limits<double>::infinity()
                              : std::numeric_limits<double>::infinity());
      *ds->mutable_plateau() = fresh;
    }
    for (auto& r : *out.mutable_ranks()) {
      for (auto& d : *r.mutable_data_slices()) {
        proto::ReaderPosition* p = d.mutable_position();
        p->set_epoch(0);
        p->set_chunk_cursor(0);
        p->set_window_offset(0);
        p->set_file_index(0);
        p->set_block(0);
        p->set_record(0);
        p->set_bad_records(0);
        p->set_rows_in_epoch(0);
      }
    }
    result.notes.push_back(
        "training state reset: step 0, optimizer state zeroed, reader "
        "positions at the start of epoch 0");
  }
  CheckpointBuilder b(out_dir, out.step(), o.overwrite);
  std::map<std::string, int> writer;
  for (const auto& f : m.files()) writer[f.name()] = f.writer_rank();
  b.File(kDenseFileName, 0);
  std::vector<std::vector<int>> targets(tensors.size());
  for (size_t g = 0; g < tensors.size(); ++g) {
    const GlobalTensor& gt = tensors[g];
    LOOM_ASSIGN_OR_RETURN(std::vector<Placement> pl, Placements(m, gt));
    for (const Placement& p : pl) {
      const TensorEntry& e = m.tensors(p.entry);
      const int out_file = b.File(e.file(), writer[e.file()]);
      targets[g].push_back(
          b.AddTensor(out_file, CleanEntry(e), p.stride, p.row_offset, p.num_rows, p.col, p.width));
    }
  }
  LOOM_RETURN_IF_ERROR(b.Begin());
  ProgressTracker progress(o.progress, "import");
  progress.state().tensors_total = static_cast<int>(tensors.size());
  progress.state().tables_total = m.tables_size();
  for (const auto& gt : tensors) progress.state().bytes_total += gt.bytes();
  std::map<std::string, float> initial_accumulator;
  if (o.reset_training_state) {
    for (const auto& t : cfg.embedding().tables()) {
      initial_accumulator[t.name()] = t.optimizer().initial_accumulator_value();
    }
  }
  for (size_t g = 0; g < tensors.size(); ++g) {
    const GlobalTensor& gt = tensors[g];
    progress.state().tensor = gt.name;
    std::unique_ptr<RowSource> stream;
    switch (from[g]) {
      case From::kFile:
        stream = std::make_unique<SafetensorsRowSource>(&file, entry[g], gt.row_elements());
        break;
      case From::kInt8:
        stream = std::make_unique<Int8RowSource>(&file, int8[g][0], int8[g][1], int8[g][2],
                                                 gt.shape[0], gt.shape[1]);
        break;
      case From::kTemplate: {
        LOOM_ASSIGN_OR_RETURN(stream, src->Stream(gt));
        break;
      }
      case From::kReset: {
        std::vector<char> element(static_cast<size_t>(DTypeSize(gt.dtype)), 0);
        const bool adagrad = gt.slot == "adagrad_sum" || gt.slot == "rowwise_adagrad_sum";
        if (adagrad && gt.dtype == DType::kF32) {
          const float v = initial_accumulator[gt.parameter];
          std::memcpy(element.data(), &v, 4);
        }
        stream = std::make_unique<ConstantRowSource>(gt.rows(), gt.row_elements(), element);
        break;
      }
    }
    LOOM_RETURN_IF_ERROR(b.Write(stream.get(), gt.name, gt.rows(), gt.row_elements(),
                                 DTypeSize(gt.dtype), targets[g], o.block_bytes, &progress));
    ReportTableDone(gt, tensors, g, &progress);
  }
  LOOM_ASSIGN_OR_RETURN(result.path, b.Commit(out));
  result.bytes_written = b.bytes_written();
  return result;
}

}  // namespace loom::train
