#include "csrc/train/checkpoint.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <map>
#include <set>
#include <utility>

#include "csrc/core/file_io.h"
#include "csrc/core/logging.h"
#include "csrc/data/crc32c.h"
#include "csrc/embedding/embedding_spec.h"
#include "csrc/embedding/sharding_plan.h"
#include "csrc/train/checkpoint_internal.h"

namespace loom::train {
namespace fs = std::filesystem;
namespace {

using internal::Hex8;
using internal::ShapeText;
using internal::ShortPath;
using internal::ToPieceStrategy;
using internal::UtcNow;
using proto::CheckpointManifest;
using proto::EmbeddingPiece;
using proto::TensorEntry;

// Appends tensors to one data file: 64-byte aligned, CRC per tensor and per file.
class DataFileWriter {
 public:
  Status Open(const std::string& path) {
    path_ = path;
    fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd_ < 0) return InternalError(path + ": cannot create: " + ErrnoText());
    return Status::Ok();
  }
  // Arms the fault: the process is killed once `at` bytes have been written.
  void ArmFault(uint64_t at) { fault_at_ = at; }

  StatusOr<uint64_t> Append(const void* data, uint64_t n, uint32_t* crc) {
    static const char kZeros[kTensorAlignment] = {};
    const uint64_t pad = (kTensorAlignment - size_ % kTensorAlignment) % kTensorAlignment;
    LOOM_RETURN_IF_ERROR(Write(kZeros, pad));
    const uint64_t offset = size_;
    LOOM_RETURN_IF_ERROR(Write(data, n));
    *crc = data::Crc32c(data, n);
    return offset;
  }

  Status Finish(uint64_t* size, uint32_t* crc) {
    if (::fsync(fd_) != 0) return InternalError(path_ + ": fsync failed: " + ErrnoText());
    if (::close(fd_) != 0) return InternalError(path_ + ": close failed: " + ErrnoText());
    fd_ = -1;
    *size = size_;
    *crc = crc_;
    return Status::Ok();
  }

  ~DataFileWriter() {
    if (fd_ >= 0) ::close(fd_);
  }

 private:
  Status Write(const void* data, uint64_t n) {
    const char* p = static_cast<const char*>(data);
    uint64_t done = 0;
    while (done < n) {
      uint64_t chunk = std::min<uint64_t>(n - done, uint64_t{1} << 26);
      if (fault_at_ > 0 && size_ + chunk >= fault_at_) {
        chunk = fault_at_ > size_ ? fault_at_ - size_ : 0;
        if (chunk > 0) (void)!::write(fd_, p + done, chunk);
        ::fsync(fd_);
        LOG(ERROR) << "LOOM_FAULT_INJECT: killing this process in the middle of " << path_;
        google::FlushLogFiles(google::INFO);
        ::kill(::getpid(), SIGKILL);
      }
      const ssize_t w = ::write(fd_, p + done, chunk);
      if (w < 0) {
        if (errno == EINTR) continue;
        return InternalError(path_ + ": write failed: " + ErrnoText());
      }
      crc_ = data::Crc32cExtend(crc_, p + done, static_cast<size_t>(w));
      done += static_cast<uint64_t>(w);
      size_ += static_cast<uint64_t>(w);
    }
    return Status::Ok();
  }

  std::string path_;
  int fd_ = -1;
  uint64_t size_ = 0;
  uint32_t crc_ = 0;
  uint64_t fault_at_ = 0;
};

// One tensor to save: where its bytes are and its manifest entry (file/offset/crc filled in
// when written).
struct Piece {
  TensorEntry entry;
  const void* data = nullptr;
  uint64_t bytes = 0;
};

// A tensor to restore: its entry name and where the bytes go.
struct Target {
  std::string name;
  TensorView dst;                           // host or device view (CopyTensor)
  const embedding::Shard* shard = nullptr;  // embedding pieces: the live shard
};

void SetShape(TensorEntry* e, const std::vector<int64_t>& shape) {
  e->clear_shape();
  for (int64_t d : shape) e->add_shape(d);
}

std::string ShardPrefix(const std::string& table, int shard) {
  return "embedding/" + table + "/shard" + std::to_string(shard) + "/";
}

// The state slots of a table's optimizer: (slot name, per-row elements (0 = width), dtype).
struct Slot {
  const char* name;
  bool per_row;  // one element per row instead of `width`
  DType dtype;
  int which;  // 0: state0, 1: state1, 2: steps
};
std::vector<Slot> SlotsOf(embedding::OptimizerType t) {
  switch (t) {
    case embedding::OptimizerType::kSgd:
      return {};
    case embedding::OptimizerType::kAdagrad:
      return {{"adagrad_sum", false, DType::kF32, 0}};
    case embedding::OptimizerType::kRowwiseAdagrad:
      return {{"rowwise_adagrad_sum", true, DType::kF32, 0}};
    case embedding::OptimizerType::kAdam:
      return {{"adam_m", false, DType::kF32, 0},
              {"adam_v", false, DType::kF32, 1},
              {"adam_step", true, DType::kI32, 2}};
  }
  return {};
}

void* SlotPointer(const embedding::ShardView& v, int which) {
  switch (which) {
    case 0:
      return v.state0;
    case 1:
      return v.state1;
    default:
      return v.steps;
  }
}

// Every embedding tensor of the shards rank `rank` writes (DP shards: rank 0 writes them to
// dense.bin), or, with for_restore, every shard rank `rank` holds.
void EmbeddingPieces(const embedding::EmbeddingCollection& ec, int rank, bool dp, bool for_restore,
                     std::vector<Piece>* pieces, std::vector<Target>* targets) {
  const auto& plan = ec.plan();
  const auto& spec = ec.spec();
  for (int s = 0; s < static_cast<int>(plan.shards.size()); ++s) {
    const embedding::Shard& sh = plan.shards[s];
    const bool is_dp = sh.rank < 0;
    if (is_dp != dp) continue;
    if (!for_restore && !is_dp && sh.rank != rank) continue;
    if (for_restore && !sh.owned_by(rank)) continue;
    const embedding::TableSpec& ts = spec.tables[sh.table];
    const embedding::ShardView& v = ec.shard_view(s);
    CHECK(v.weights != nullptr) << "shard " << s << " of table " << ts.name << " not held here";
    CHECK_EQ(v.num_rows, sh.num_rows);
    CHECK_EQ(v.width, sh.width);
    EmbeddingPiece piece;
    piece.set_table(ts.name);
    piece.set_shard(s);
    piece.set_strategy(ToPieceStrategy(sh.strategy));
    piece.set_rank(sh.rank);
    piece.set_row_stride(sh.row_stride);
    piece.set_row_offset(sh.row_offset);
    piece.set_num_rows(sh.num_rows);
    piece.set_col_begin(sh.col_begin);
    piece.set_width(sh.width);
    const std::string prefix = ShardPrefix(ts.name, s);
    auto add = [&](const std::string& slot, void* data, DType dtype, int64_t cols) {
      const std::vector<int64_t> shape =
          cols > 0 ? std::vector<int64_t>{sh.num_rows, cols} : std::vector<int64_t>{sh.num_rows};
      const int64_t numel = sh.num_rows * std::max<int64_t>(cols, 1);
      if (pieces != nullptr) {
        Piece p;
        p.entry.set_name(prefix + (slot.empty() ? "weight" : slot));
        p.entry.set_kind(slot.empty() ? TensorEntry::EMBEDDING_WEIGHT
                                      : TensorEntry::EMBEDDING_OPTIMIZER_STATE);
        p.entry.set_dtype(ToTensorDType(dtype));
        SetShape(&p.entry, shape);
        p.entry.set_parameter(ts.name);
        p.entry.set_slot(slot);
        *p.entry.mutable_piece() = piece;
        p.data = data;
        p.bytes = static_cast<uint64_t>(numel * DTypeSize(dtype));
        pieces->push_back(std::move(p));
      }
      if (targets != nullptr) {
        Target t;
        t.name = prefix + (slot.empty() ? "weight" : slot);
        t.dst = TensorView(data, TensorSpec{Shape(shape), dtype});
        t.shard = &sh;
        targets->push_back(std::move(t));
      }
    };
    add("", v.weights, DType::kF32, sh.width);
    for (const Slot& slot : SlotsOf(ts.optimizer.type)) {
      add(slot.name, SlotPointer(v, slot.which), slot.dtype, slot.per_row ? 0 : sh.width);
    }
  }
}

// Dense parameters and optimizer state tensors (identical on every rank).
void DensePieces(model::ParameterStore& params, const optim::DenseOptimizer* opt,
                 std::vector<Piece>* pieces, std::vector<Target>* targets) {
  for (const model::Parameter& p : params.parameters()) {
    const std::string name = "dense/" + p.name;
    if (pieces != nullptr) {
      Piece piece;
      piece.entry.set_name(name);
      piece.entry.set_kind(TensorEntry::DENSE_PARAMETER);
      piece.entry.set_dtype(ToTensorDType(p.value.dtype()));
      SetShape(&piece.entry, p.shape.dims());
      piece.entry.set_parameter(p.name);
      piece.entry.set_flat_offset(p.offset);
      piece.data = p.value.raw();
      piece.bytes = static_cast<uint64_t>(p.value.nbytes());
      pieces->push_back(std::move(piece));
    }
    if (targets != nullptr) targets->push_back(Target{name, p.value, nullptr});
  }
  if (opt == nullptr) return;
  for (const optim::NamedStateTensor& s : opt->StateTensors()) {
    const std::string name = "dense_opt/" + s.name;
    const size_t slash = s.name.rfind('/');
    if (pieces != nullptr) {
      Piece piece;
      piece.entry.set_name(name);
      piece.entry.set_kind(TensorEntry::DENSE_OPTIMIZER_STATE);
      piece.entry.set_dtype(ToTensorDType(s.tensor.dtype()));
      SetShape(&piece.entry, s.tensor.shape().dims());
      piece.entry.set_parameter(s.name.substr(0, slash));
      piece.entry.set_slot(slash == std::string::npos ? "" : s.name.substr(slash + 1));
      piece.data = s.tensor.raw();
      piece.bytes = static_cast<uint64_t>(s.tensor.nbytes());
      pieces->push_back(std::move(piece));
    }
    if (targets != nullptr) targets->push_back(Target{name, s.tensor, nullptr});
  }
}

bool ParseStepDir(const std::string& name, int64_t* step) {
  static const std::string kPrefix = "step-";
  if (name.size() <= kPrefix.size() || name.compare(0, kPrefix.size(), kPrefix) != 0) return false;
  int64_t v = 0;
  for (size_t i = kPrefix.size(); i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9') return false;
    if (v > (INT64_MAX - 9) / 10) return false;
    v = v * 10 + (name[i] - '0');
  }
  *step = v;
  return true;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Names, hashes, dtypes.

std::string CheckpointDirName(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "step-%012" PRId64, step);
  return buf;
}

std::string EmbeddingFileName(int rank) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "embedding-r%05d.bin", rank);
  return buf;
}

uint64_t Fnv1a64(const std::string& bytes) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  return h;
}

proto::TensorDType ToTensorDType(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return proto::TENSOR_DTYPE_F32;
    case DType::kF64:
      return proto::TENSOR_DTYPE_F64;
    case DType::kBF16:
      return proto::TENSOR_DTYPE_BF16;
    case DType::kF16:
      return proto::TENSOR_DTYPE_F16;
    case DType::kI32:
      return proto::TENSOR_DTYPE_I32;
    case DType::kI64:
      return proto::TENSOR_DTYPE_I64;
    case DType::kU8:
      return proto::TENSOR_DTYPE_U8;
  }
  return proto::TENSOR_DTYPE_F32;
}

DType FromTensorDType(proto::TensorDType dtype) {
  switch (dtype) {
    case proto::TENSOR_DTYPE_F32:
      return DType::kF32;
    case proto::TENSOR_DTYPE_F64:
      return DType::kF64;
    case proto::TENSOR_DTYPE_BF16:
      return DType::kBF16;
    case proto::TENSOR_DTYPE_F16:
      return DType::kF16;
    case proto::TENSOR_DTYPE_I32:
      return DType::kI32;
    case proto::TENSOR_DTYPE_I64:
      return DType::kI64;
    case proto::TENSOR_DTYPE_U8:
      return DType::kU8;
  }
  return DType::kF32;
}

void MaybeInjectFault(const char* point, int64_t step, int rank) {
  const char* spec = std::getenv("LOOM_FAULT_INJECT");
  if (spec == nullptr) return;
  const std::string want =
      std::string(point) + ":step=" + std::to_string(step) + ":rank=" + std::to_string(rank);
  if (want != spec) return;
  LOG(ERROR) << "LOOM_FAULT_INJECT: killing this process at " << want;
  google::FlushLogFiles(google::INFO);
  ::kill(::getpid(), SIGKILL);
}

// ---------------------------------------------------------------------------------------------
// Offline access.

StatusOr<std::vector<CheckpointRef>> ListCheckpoints(const std::string& dir) {
  std::vector<CheckpointRef> out;
  std::error_code ec;
  if (!fs::exists(dir, ec)) return out;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    int64_t step = 0;
    const std::string name = it->path().filename().string();
    if (!ParseStepDir(name, &step)) continue;
    if (!it->is_directory(ec)) continue;
    out.push_back(CheckpointRef{step, it->path().string()});
  }
  if (ec) return InternalError(dir + ": cannot list: " + ec.message());
  std::sort(out.begin(), out.end(),
            [](const CheckpointRef& a, const CheckpointRef& b) { return a.step > b.step; });
  return out;
}

StatusOr<CheckpointManifest> ReadManifest(const std::string& checkpoint_path) {
  const std::string mpath = (fs::path(checkpoint_path) / kManifestFileName).string();
  const std::string cpath = (fs::path(checkpoint_path) / kManifestCrcFileName).string();
  LOOM_ASSIGN_OR_RETURN(std::string bytes, ReadFileToString(mpath, ShortPath(mpath)));
  LOOM_ASSIGN_OR_RETURN(std::string crc_text, ReadFileToString(cpath, ShortPath(cpath)));
  unsigned int want_crc = 0;
  unsigned long long want_size = 0;
  if (std::sscanf(crc_text.c_str(), "crc32c=%8x size=%llu", &want_crc, &want_size) != 2) {
    return DataLossError(ShortPath(cpath) + ": malformed (expected \"crc32c=<8 hex> size=<n>\")");
  }
  if (bytes.size() != want_size) {
    return DataLossError(ShortPath(mpath) + ": size " + std::to_string(bytes.size()) + ", " +
                         kManifestCrcFileName + " says " + std::to_string(want_size) +
                         (bytes.size() < want_size ? " (truncated)" : ""));
  }
  const uint32_t crc = data::Crc32c(bytes.data(), bytes.size());
  if (crc != want_crc) {
    return DataLossError(ShortPath(mpath) + ": CRC-32C " + Hex8(crc) + ", " + kManifestCrcFileName +
                         " says " + Hex8(want_crc) + " (corrupted)");
  }
  CheckpointManifest m;
  if (!m.ParseFromString(bytes)) {
    return DataLossError(ShortPath(mpath) + ": not a valid CheckpointManifest");
  }
  if (m.format_version() != kCheckpointFormatVersion) {
    return FailedPreconditionError(ShortPath(mpath) + ": format_version " +
                                   std::to_string(m.format_version()) + ", this build reads " +
                                   std::to_string(kCheckpointFormatVersion));
  }
  return m;
}

Status VerifyCheckpoint(const std::string& checkpoint_path, const CheckpointManifest& manifest,
                        bool checksums) {
  std::vector<std::string> problems;
  std::map<std::string, const proto::CheckpointFile*> files;
  for (const auto& f : manifest.files()) files[f.name()] = &f;
  std::map<std::string, std::string> contents;
  for (const auto& f : manifest.files()) {
    const std::string path = (fs::path(checkpoint_path) / f.name()).string();
    std::error_code ec;
    const bool exists = fs::exists(path, ec);
    if (!exists) {
      problems.push_back(ShortPath(path) + ": missing (written by rank " +
                         std::to_string(f.writer_rank()) + ")");
      continue;
    }
    const uint64_t size = fs::file_size(path, ec);
    if (ec) {
      problems.push_back(ShortPath(path) + ": cannot stat: " + ec.message());
      continue;
    }
    if (size != f.size_bytes()) {
      problems.push_back(ShortPath(path) + ": size " + std::to_string(size) +
                         ", the manifest says " + std::to_string(f.size_bytes()) +
                         (size < f.size_bytes() ? " (truncated)" : " (trailing bytes)"));
      continue;
    }
    if (!checksums) continue;
    auto bytes = ReadFileToString(path, ShortPath(path));
    if (!bytes.ok()) {
      problems.push_back(bytes.status().message());
      continue;
    }
    const uint32_t crc = data::Crc32c(bytes->data(), bytes->size());
    if (crc != f.crc32c()) {
      problems.push_back(ShortPath(path) + ": CRC-32C " + Hex8(crc) + ", the manifest says " +
                         Hex8(f.crc32c()) + " (corrupted)");
    }
    contents[f.name()] = std::move(*bytes);
  }
  for (const auto& t : manifest.tensors()) {
    auto f = files.find(t.file());
    if (f == files.end()) {
      problems.push_back("tensor " + t.name() + ": file '" + t.file() +
                         "' is not listed in the manifest");
      continue;
    }
    const uint64_t expected = [&] {
      uint64_t n = static_cast<uint64_t>(DTypeSize(FromTensorDType(t.dtype())));
      for (int64_t d : t.shape()) n *= static_cast<uint64_t>(d);
      return n;
    }();
    if (expected != t.size_bytes()) {
      problems.push_back("tensor " + t.name() + ": size_bytes " + std::to_string(t.size_bytes()) +
                         " does not match its shape " + ShapeText(t.shape()));
    }
    if (t.offset() + t.size_bytes() > f->second->size_bytes()) {
      problems.push_back("tensor " + t.name() + ": bytes [" + std::to_string(t.offset()) + ", " +
                         std::to_string(t.offset() + t.size_bytes()) + ") lie beyond the end of " +
                         t.file() + " (" + std::to_string(f->second->size_bytes()) + " bytes)");
      continue;
    }
    auto c = contents.find(t.file());
    if (!checksums || c == contents.end() || c->second.size() < t.offset() + t.size_bytes()) {
      continue;
    }
    const uint32_t crc = data::Crc32c(c->second.data() + t.offset(), t.size_bytes());
    if (crc != t.crc32c()) {
      problems.push_back(t.file() + ": tensor " + t.name() + " at offset " +
                         std::to_string(t.offset()) + ": CRC-32C " + Hex8(crc) +
                         ", the manifest says " + Hex8(t.crc32c()) + " (corrupted)");
    }
  }
  if (problems.empty()) return Status::Ok();
  std::string msg;
  for (const auto& p : problems) msg += (msg.empty() ? "" : "; ") + p;
  return DataLossError(msg);
}

StatusOr<std::vector<char>> ReadTensorBytes(const std::string& checkpoint_path,
                                            const TensorEntry& entry) {
  const std::string path = (fs::path(checkpoint_path) / entry.file()).string();
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return NotFoundError(ShortPath(path) + ": cannot open: " + ErrnoText());
  std::vector<char> out(entry.size_bytes());
  const Status read = PreadFull(fd, out.data(), out.size(), entry.offset(),
                                ShortPath(path) + ": tensor " + entry.name());
  ::close(fd);
  LOOM_RETURN_IF_ERROR(read);
  const uint32_t crc = data::Crc32c(out.data(), out.size());
  if (crc != entry.crc32c()) {
    return DataLossError(ShortPath(path) + ": tensor " + entry.name() + ": CRC-32C " + Hex8(crc) +
                         ", the manifest says " + Hex8(entry.crc32c()) + " (corrupted)");
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Distributed save and restore.

struct Checkpointer::Loaded {
  std::map<std::string, std::string> file_bytes;  // by file name
  std::vector<Target> targets;
  std::vector<const TensorEntry*> entries;  // parallel to targets
};

Checkpointer::Checkpointer(comm::Communicator* comm, CheckpointerOptions options)
    : comm_(comm), options_(std::move(options)) {
  CHECK(comm_ != nullptr);
  CHECK(comm_->device().is_cpu()) << "the Checkpointer needs a host (MPI) communicator";
}

Status Checkpointer::AgreeOnStatus(const Status& local) {
  // Every rank learns the lowest failing rank, its status code and its message.
  const int rank = comm_->rank(), world = comm_->size();
  int64_t mark = local.ok() ? 0 : world - rank;  // the max picks the lowest failing rank
  comm_->AllReduce(&mark, &mark, 1, DType::kI64, comm::ReduceOp::kMax);
  if (mark == 0) return Status::Ok();
  const int root = static_cast<int>(world - mark);
  std::string msg = rank == root ? local.message() : "";
  int64_t head[2] = {static_cast<int64_t>(local.code()), static_cast<int64_t>(msg.size())};
  comm_->Broadcast(head, 2, DType::kI64, root);
  msg.resize(static_cast<size_t>(head[1]));
  if (head[1] > 0) comm_->Broadcast(msg.data(), head[1], DType::kU8, root);
  if (!local.ok()) return local;
  return Status(static_cast<StatusCode>(head[0]), "rank " + std::to_string(root) + ": " + msg);
}

StatusOr<std::string> Checkpointer::Save(const TrainingState& state) {
  const int rank = comm_->rank(), world = comm_->size();
  const int64_t step = state.header.step();
  const fs::path dir(options_.dir);
  const std::string final_name = CheckpointDirName(step);
  const fs::path tmp = dir / (".tmp-" + final_name);
  const fs::path final_path = dir / final_name;

  // 1. The temporary directory, fresh.
  Status st;
  if (rank == 0) {
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec) {
      st =
          InternalError(dir.string() + ": cannot create the checkpoint directory: " + ec.message());
    } else {
      fs::remove_all(tmp, ec);
      if (!ec) fs::create_directory(tmp, ec);
      if (ec) st = InternalError(tmp.string() + ": cannot create: " + ec.message());
    }
  }
  LOOM_RETURN_IF_ERROR(AgreeOnStatus(st));

  // 2. This rank's data file(s).
  std::vector<Piece> pieces;
  std::string file_name;
  if (rank == 0) {
    file_name = kDenseFileName;
    DensePieces(*state.parameters, state.optimizer, &pieces, nullptr);
    if (state.embeddings != nullptr) {
      EmbeddingPieces(*state.embeddings, rank, /*dp=*/true, false, &pieces, nullptr);
    }
  }
  std::vector<Piece> emb_pieces;
  if (state.embeddings != nullptr) {
    EmbeddingPieces(*state.embeddings, rank, /*dp=*/false, false, &emb_pieces, nullptr);
  }
  CheckpointManifest partial;
  auto write_file = [&](const std::string& name, std::vector<Piece>* list) -> Status {
    DataFileWriter w;
    const std::string path = (tmp / name).string();
    LOOM_RETURN_IF_ERROR(w.Open(path));
    const char* fault = std::getenv("LOOM_FAULT_INJECT");
    if (fault != nullptr && std::string(fault) == "checkpoint_write:step=" + std::to_string(step) +
                                                      ":rank=" + std::to_string(rank)) {
      uint64_t total = 0;
      for (const Piece& p : *list) total += p.bytes + kTensorAlignment;
      w.ArmFault(std::max<uint64_t>(total / 2, 1));
    }
    for (Piece& p : *list) {
      uint32_t crc = 0;
      LOOM_ASSIGN_OR_RETURN(uint64_t offset, w.Append(p.data, p.bytes, &crc));
      p.entry.set_file(name);
      p.entry.set_offset(offset);
      p.entry.set_size_bytes(p.bytes);
      p.entry.set_crc32c(crc);
      *partial.add_tensors() = p.entry;
    }
    uint64_t size = 0;
    uint32_t crc = 0;
    LOOM_RETURN_IF_ERROR(w.Finish(&size, &crc));
    proto::CheckpointFile* f = partial.add_files();
    f->set_name(name);
    f->set_writer_rank(rank);
    f->set_size_bytes(size);
    f->set_crc32c(crc);
    return Status::Ok();
  };
  st = Status::Ok();
  if (rank == 0) st = write_file(file_name, &pieces);
  if (st.ok() && !emb_pieces.empty()) st = write_file(EmbeddingFileName(rank), &emb_pieces);
  proto::RankState* rs = partial.add_ranks();
  rs->set_rank(rank);
  rs->set_host(RankAndHost());
  for (const auto& pos : state.data_positions) *rs->add_data_slices() = pos;
  LOOM_RETURN_IF_ERROR(AgreeOnStatus(st));

  // 3. Gather the partial manifests; rank 0 writes the manifest and commits.
  std::string bytes;
  partial.SerializeToString(&bytes);
  std::vector<int64_t> sizes(world);
  int64_t my_size = static_cast<int64_t>(bytes.size());
  comm_->AllGather(&my_size, sizes.data(), 1, DType::kI64);
  std::vector<int64_t> displs(world + 1, 0);
  for (int r = 0; r < world; ++r) displs[r + 1] = displs[r] + sizes[r];
  std::string all(static_cast<size_t>(displs[world]), '\0');
  comm_->AllGatherV(bytes.data(), my_size, all.data(), sizes,
                    std::vector<int64_t>(displs.begin(), displs.end() - 1), DType::kU8);
  st = Status::Ok();
  if (rank == 0) {
    CheckpointManifest m = state.header;
    m.set_format_version(kCheckpointFormatVersion);
    m.set_producer(options_.producer);
    m.set_world_size(world);
    m.set_created_utc(UtcNow());
    m.clear_tensors();
    m.clear_files();
    m.clear_ranks();
    m.clear_tables();
    for (int r = 0; r < world; ++r) {
      CheckpointManifest p;
      if (!p.ParseFromArray(all.data() + displs[r], static_cast<int>(sizes[r]))) {
        st = InternalError("checkpoint: the partial manifest of rank " + std::to_string(r) +
                           " does not parse");
        break;
      }
      for (const auto& t : p.tensors()) *m.add_tensors() = t;
      for (const auto& f : p.files()) *m.add_files() = f;
      for (const auto& x : p.ranks()) *m.add_ranks() = x;
    }
    if (state.embeddings != nullptr) {
      const auto& spec = state.embeddings->spec();
      const auto& plan = state.embeddings->plan();
      for (size_t t = 0; t < spec.tables.size(); ++t) {
        const embedding::TableSpec& ts = spec.tables[t];
        const embedding::TablePlan& tp = plan.tables[t];
        proto::EmbeddingTableInfo* info = m.add_tables();
        info->set_name(ts.name);
        info->set_num_rows(ts.num_rows);
        info->set_dim(ts.dim);
        info->set_optimizer(embedding::OptimizerName(ts.optimizer.type));
        info->set_strategy(ToPieceStrategy(tp.strategy));
        for (int r : tp.ranks) info->add_ranks(r);
        for (int s : tp.shards) info->add_shards(s);
        for (int f : ts.features) info->add_features(spec.features[f].name);
      }
    }
    if (st.ok()) {
      std::string mbytes;
      m.SerializeToString(&mbytes);
      const std::string crc_line = "crc32c=" + Hex8(data::Crc32c(mbytes.data(), mbytes.size())) +
                                   " size=" + std::to_string(mbytes.size()) + "\n";
      st = WriteFileDurable((tmp / kManifestFileName).string(), mbytes);
      if (st.ok()) st = WriteFileDurable((tmp / kManifestCrcFileName).string(), crc_line);
      if (st.ok()) st = FsyncPath(tmp.string(), true);
    }
    if (st.ok()) {
      MaybeInjectFault("checkpoint_commit", step, rank);
      std::error_code ec;
      // A checkpoint of the same step (an earlier run) is replaced: moved aside first, since
      // a directory cannot be renamed onto a non-empty one.
      const fs::path old = dir / (".old-" + final_name);
      if (fs::exists(final_path, ec)) {
        fs::remove_all(old, ec);
        fs::rename(final_path, old, ec);
      }
      if (!ec) fs::rename(tmp, final_path, ec);
      if (ec) {
        st = InternalError(final_path.string() + ": cannot commit (rename): " + ec.message());
      } else {
        st = FsyncPath(dir.string(), true);
        fs::remove_all(old, ec);
      }
    }
    // 4. Rotation and clean-up of crashed saves.
    if (st.ok()) {
      auto list = ListCheckpoints(dir.string());
      if (list.ok() && options_.keep_last > 0) {
        int kept = 0;
        for (const CheckpointRef& c : *list) {
          if (c.step == step || kept < options_.keep_last - 1) {
            if (c.step != step) ++kept;
            continue;
          }
          std::error_code ec;
          fs::remove_all(c.path, ec);
          if (ec) LOG(WARNING) << c.path << ": cannot delete an old checkpoint: " << ec.message();
        }
      }
      std::error_code ec;
      for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
        const std::string name = it->path().filename().string();
        if (name.rfind(".tmp-", 0) == 0 || name.rfind(".old-", 0) == 0) {
          std::error_code ec2;
          fs::remove_all(it->path(), ec2);
        }
      }
    }
  }
  LOOM_RETURN_IF_ERROR(AgreeOnStatus(st));
  return final_path.string();
}

StatusOr<CheckpointManifest> Checkpointer::ShareManifest(const std::string& path,
                                                         uint64_t expected_model_hash,
                                                         bool* incompatible) {
  const int rank = comm_->rank();
  *incompatible = false;
  Status st;
  std::string bytes;
  int64_t code = 0;  // 0 ok, 1 damaged, 2 incompatible
  if (rank == 0) {
    auto m = ReadManifest(path);
    if (!m.ok()) {
      st = m.status();
      code = m.status().code() == StatusCode::kFailedPrecondition ? 2 : 1;
    } else {
      const int world = comm_->size();
      if (m->world_size() != world) {
        st = FailedPreconditionError(path + ": written by " + std::to_string(m->world_size()) +
                                     " ranks, this job has " + std::to_string(world) +
                                     "; an exact resume needs the same world size "
                                     "(offline resharding is the job of `loom ckpt reshard`)");
        code = 2;
      } else if (expected_model_hash != 0 && m->model_hash() != expected_model_hash) {
        st = FailedPreconditionError(
            path +
            ": the checkpoint's model (model_type, model section, table shapes and "
            "features; model_hash " +
            Hex8(static_cast<uint32_t>(m->model_hash() >> 32)) +
            Hex8(static_cast<uint32_t>(m->model_hash())) +
            ") differs from this config's; "
            "resume with the config it was written with, or start a new run directory");
        code = 2;
      } else {
        m->SerializeToString(&bytes);
      }
    }
  }
  // Share the outcome, then the manifest (or the message).
  comm_->Broadcast(&code, 1, DType::kI64, 0);
  std::string msg = rank == 0 ? (code == 0 ? bytes : st.message()) : "";
  int64_t len = static_cast<int64_t>(msg.size());
  comm_->Broadcast(&len, 1, DType::kI64, 0);
  msg.resize(static_cast<size_t>(len));
  if (len > 0) comm_->Broadcast(msg.data(), len, DType::kU8, 0);
  if (code != 0) {
    *incompatible = code == 2;
    if (rank == 0) return st;
    return code == 2 ? FailedPreconditionError(msg) : DataLossError(msg);
  }
  CheckpointManifest m;
  if (!m.ParseFromString(msg)) return InternalError(path + ": the shared manifest does not parse");
  return m;
}

Status Checkpointer::ReadAndCheck(const std::string& path, const CheckpointManifest& manifest,
                                  const TrainingState& state, Loaded* loaded) {
  const int rank = comm_->rank();
  loaded->targets.clear();
  DensePieces(*state.parameters, state.optimizer, nullptr, &loaded->targets);
  if (state.embeddings != nullptr) {
    EmbeddingPieces(*state.embeddings, rank, /*dp=*/true, true, nullptr, &loaded->targets);
    EmbeddingPieces(*state.embeddings, rank, /*dp=*/false, true, nullptr, &loaded->targets);
  }
  std::map<std::string, const TensorEntry*> by_name;
  for (const auto& t : manifest.tensors()) by_name[t.name()] = &t;
  std::map<std::string, const proto::CheckpointFile*> files;
  for (const auto& f : manifest.files()) files[f.name()] = &f;

  // Which tensors and files this rank needs; shapes and sharding must match.
  std::set<std::string> needed_files;
  loaded->entries.clear();
  size_t dense_params = 0;
  for (const auto& t : manifest.tensors()) {
    if (t.kind() == TensorEntry::DENSE_PARAMETER) ++dense_params;
  }
  if (dense_params != state.parameters->parameters().size()) {
    return FailedPreconditionError(path + ": holds " + std::to_string(dense_params) +
                                   " dense parameters, the model has " +
                                   std::to_string(state.parameters->parameters().size()));
  }
  for (const Target& t : loaded->targets) {
    auto it = by_name.find(t.name);
    if (it == by_name.end()) {
      return FailedPreconditionError(path + ": the manifest has no tensor '" + t.name +
                                     "' (different model, optimizer or sharding plan)");
    }
    const TensorEntry& e = *it->second;
    if (Shape(std::vector<int64_t>(e.shape().begin(), e.shape().end())) != t.dst.shape() ||
        FromTensorDType(e.dtype()) != t.dst.dtype()) {
      return FailedPreconditionError(path + ": tensor '" + t.name + "' is " +
                                     DTypeName(FromTensorDType(e.dtype())) + ShapeText(e.shape()) +
                                     " in the checkpoint, " + t.dst.spec().ToString() + " here");
    }
    if (t.shard != nullptr) {
      const EmbeddingPiece& p = e.piece();
      if (p.row_stride() != t.shard->row_stride || p.row_offset() != t.shard->row_offset ||
          p.col_begin() != t.shard->col_begin || p.rank() != t.shard->rank) {
        return FailedPreconditionError(path + ": tensor '" + t.name +
                                       "' was sharded differently (rank, rows or columns)");
      }
    }
    if (files.find(e.file()) == files.end()) {
      return DataLossError(path + ": tensor '" + t.name + "' lies in '" + e.file() +
                           "', which the manifest does not list");
    }
    needed_files.insert(e.file());
    loaded->entries.push_back(&e);
  }
  if (manifest.ranks_size() != comm_->size() || manifest.ranks(rank).rank() != rank) {
    return DataLossError(path + ": the manifest lacks the state of rank " + std::to_string(rank));
  }
  for (const auto& pos : state.data_positions) {
    bool found = false;
    for (const auto& r : manifest.ranks()) {
      for (const auto& saved : r.data_slices()) {
        found = found || (saved.slice() == pos.slice() && saved.num_slices() == pos.num_slices());
      }
    }
    if (!found) {
      return FailedPreconditionError(path + ": holds no position of data slice " +
                                     std::to_string(pos.slice()) + " of " +
                                     std::to_string(pos.num_slices()) +
                                     " (the run read its data in a different number of slices)");
    }
  }
  if (state.optimizer != nullptr &&
      manifest.dense_optimizer().type() != state.optimizer->config().type()) {
    return FailedPreconditionError(
        path + ": the dense optimizer was " +
        proto::OptimizerConfig::Type_Name(manifest.dense_optimizer().type()) +
        ", the config asks for " +
        proto::OptimizerConfig::Type_Name(state.optimizer->config().type()));
  }

  // Read and check every needed file completely before anything is overwritten.
  loaded->file_bytes.clear();
  for (const std::string& name : needed_files) {
    const proto::CheckpointFile& f = *files[name];
    const std::string fpath = (fs::path(path) / name).string();
    LOOM_ASSIGN_OR_RETURN(std::string bytes, ReadFileToString(fpath, ShortPath(fpath)));
    if (bytes.size() != f.size_bytes()) {
      return DataLossError(ShortPath(fpath) + ": size " + std::to_string(bytes.size()) +
                           ", the manifest says " + std::to_string(f.size_bytes()) +
                           (bytes.size() < f.size_bytes() ? " (truncated)" : " (trailing bytes)"));
    }
    const uint32_t crc = data::Crc32c(bytes.data(), bytes.size());
    if (crc != f.crc32c()) {
      return DataLossError(ShortPath(fpath) + ": CRC-32C " + Hex8(crc) + ", the manifest says " +
                           Hex8(f.crc32c()) + " (corrupted)");
    }
    loaded->file_bytes[name] = std::move(bytes);
  }
  for (const TensorEntry* e : loaded->entries) {
    const std::string& bytes = loaded->file_bytes[e->file()];
    if (e->offset() + e->size_bytes() > bytes.size()) {
      return DataLossError(ShortPath((fs::path(path) / e->file()).string()) + ": tensor " +
                           e->name() + " lies beyond the end of the file");
    }
    const uint32_t crc = data::Crc32c(bytes.data() + e->offset(), e->size_bytes());
    if (crc != e->crc32c()) {
      return DataLossError(ShortPath((fs::path(path) / e->file()).string()) + ": tensor " +
                           e->name() + ": CRC-32C " + Hex8(crc) + ", the manifest says " +
                           Hex8(e->crc32c()) + " (corrupted)");
    }
  }
  return Status::Ok();
}

Status Checkpointer::Apply(const CheckpointManifest& manifest, Loaded* loaded,
                           TrainingState* state) {
  for (size_t i = 0; i < loaded->targets.size(); ++i) {
    const TensorEntry& e = *loaded->entries[i];
    const std::string& bytes = loaded->file_bytes[e.file()];
    const Target& t = loaded->targets[i];
    CopyTensor(ConstTensorView(bytes.data() + e.offset(), t.dst.spec(), Device::Cpu()), t.dst);
  }
  if (state->optimizer != nullptr) {
    LOOM_RETURN_IF_ERROR(state->optimizer->LoadState(manifest.dense_optimizer()));
  }
  for (auto& pos : state->data_positions) {
    for (const auto& r : manifest.ranks()) {
      for (const auto& saved : r.data_slices()) {
        if (saved.slice() == pos.slice() && saved.num_slices() == pos.num_slices()) pos = saved;
      }
    }
  }
  state->header = manifest;
  state->header.clear_tensors();
  state->header.clear_files();
  loaded->file_bytes.clear();
  return Status::Ok();
}

Status Checkpointer::Restore(const std::string& path, TrainingState* state,
                             uint64_t expected_model_hash) {
  bool incompatible = false;
  LOOM_ASSIGN_OR_RETURN(CheckpointManifest m,
                        ShareManifest(path, expected_model_hash, &incompatible));
  Loaded loaded;
  LOOM_RETURN_IF_ERROR(AgreeOnStatus(ReadAndCheck(path, m, *state, &loaded)));
  return AgreeOnStatus(Apply(m, &loaded, state));
}

StatusOr<std::string> Checkpointer::RestoreLatest(TrainingState* state,
                                                  uint64_t expected_model_hash) {
  // Rank 0 lists; everyone follows its list.
  std::vector<std::string> paths;
  Status st;
  if (comm_->rank() == 0) {
    auto list = ListCheckpoints(options_.dir);
    if (!list.ok()) {
      st = list.status();
    } else {
      for (const auto& c : *list) paths.push_back(c.path);
    }
  }
  LOOM_RETURN_IF_ERROR(AgreeOnStatus(st));
  std::string joined;
  for (const auto& p : paths) joined += p + '\n';
  int64_t len = static_cast<int64_t>(joined.size());
  comm_->Broadcast(&len, 1, DType::kI64, 0);
  joined.resize(static_cast<size_t>(len));
  if (len > 0) comm_->Broadcast(joined.data(), len, DType::kU8, 0);
  paths.clear();
  for (size_t b = 0, e; b < joined.size(); b = e + 1) {
    e = joined.find('\n', b);
    paths.push_back(joined.substr(b, e - b));
  }

  std::string skipped;
  for (const std::string& path : paths) {
    bool incompatible = false;
    auto m = ShareManifest(path, expected_model_hash, &incompatible);
    Status s = m.status();
    Loaded loaded;
    if (m.ok()) {
      s = AgreeOnStatus(ReadAndCheck(path, *m, *state, &loaded));
      if (!s.ok() && s.code() == StatusCode::kFailedPrecondition) incompatible = true;
    }
    if (incompatible) return s;
    if (s.ok()) {
      LOOM_RETURN_IF_ERROR(AgreeOnStatus(Apply(*m, &loaded, state)));
      if (!skipped.empty()) {
        LOOM_LOG_RANK0(WARNING) << "resumed from " << path
                                << " after skipping newer damaged checkpoints: " << skipped;
      }
      return path;
    }
    LOOM_LOG_RANK0(WARNING) << "checkpoint " << path
                            << " is damaged, trying an older one: " << s.message();
    skipped += (skipped.empty() ? "" : "; ") + s.message();
  }
  if (paths.empty()) return NotFoundError(options_.dir + ": no checkpoint");
  return DataLossError(options_.dir + ": no valid checkpoint (" + skipped + ")");
}

}  // namespace loom::train
