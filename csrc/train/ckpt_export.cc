#include "csrc/train/ckpt_export.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <utility>

#include <google/protobuf/util/json_util.h>

#include "csrc/core/file_io.h"
#include "csrc/core/json.h"
#include "csrc/core/safetensors.h"
#include "csrc/proto/config_io.h"
#include "csrc/train/checkpoint.h"
#include "csrc/train/checkpoint_internal.h"

namespace loom::train {
namespace fs = std::filesystem;

namespace {

using internal::ShapeText;

// A message as JSON (proto field names, every default of present messages spelled out).
std::string MessageJson(const google::protobuf::Message& message) {
  std::unique_ptr<google::protobuf::Message> full(message.New());
  full->CopyFrom(message);
  config::FillDefaults(full.get());
  google::protobuf::util::JsonPrintOptions opts;
  opts.preserve_proto_field_names = true;
  std::string json;
  if (!google::protobuf::util::MessageToJsonString(*full, &json, opts).ok()) return "{}";
  return json;
}

// ---- A JSON reader for safetensors headers: objects, arrays, strings, numbers, literals.
struct JsonValue {
  enum Kind { kNull, kBool, kNumber, kString, kArray, kObject } kind = kNull;
  std::string str;  // string, or the number's text
  std::vector<JsonValue> items;
  std::vector<std::pair<std::string, JsonValue>> members;
};

class JsonParser {
 public:
  JsonParser(const std::string& s, std::string where) : s_(s), where_(std::move(where)) {}
  StatusOr<JsonValue> Parse() {
    JsonValue v;
    LOOM_RETURN_IF_ERROR(Value(&v, 0));
    Space();
    if (pos_ != s_.size()) return Error("trailing characters");
    return v;
  }

 private:
  Status Error(const std::string& what) const {
    return DataLossError(where_ + ": header JSON at byte " + std::to_string(pos_) + ": " + what);
  }
  void Space() {
    while (pos_ < s_.size() &&
           (s_[pos_] == ' ' || s_[pos_] == '\n' || s_[pos_] == '\r' || s_[pos_] == '\t')) {
      ++pos_;
    }
  }
  Status String(std::string* out) {
    if (pos_ >= s_.size() || s_[pos_] != '"') return Error("expected a string");
    ++pos_;
    while (pos_ < s_.size() && s_[pos_] != '"') {
      char c = s_[pos_++];
      if (c != '\\') {
        *out += c;
        continue;
      }
      if (pos_ >= s_.size()) break;
      const char e = s_[pos_++];
      switch (e) {
        case '"':
        case '\\':
        case '/':
          *out += e;
          break;
        case 'n':
          *out += '\n';
          break;
        case 't':
          *out += '\t';
          break;
        case 'r':
          *out += '\r';
          break;
        case 'b':
          *out += '\b';
          break;
        case 'f':
          *out += '\f';
          break;
        case 'u': {
          if (pos_ + 4 > s_.size()) return Error("truncated \\u escape");
          unsigned code = 0;
          for (int i = 0; i < 4; ++i) {
            const char h = s_[pos_++];
            code <<= 4;
            if (h >= '0' && h <= '9')
              code |= static_cast<unsigned>(h - '0');
            else if (h >= 'a' && h <= 'f')
              code |= static_cast<unsigned>(h - 'a' + 10);
            else if (h >= 'A' && h <= 'F')
              code |= static_cast<unsigned>(h - 'A' + 10);
            else
              return Error("bad \\u escape");
          }
          if (code < 0x80) {
            *out += static_cast<char>(code);
          } else if (code < 0x800) {
            *out += static_cast<char>(0xc0 | (code >> 6));
            *out += static_cast<char>(0x80 | (code & 0x3f));
          } else {
            *out += static_cast<char>(0xe0 | (code >> 12));
            *out += static_cast<char>(0x80 | ((code >> 6) & 0x3f));
            *out += static_cast<char>(0x80 | (code & 0x3f));
          }
          break;
        }
        default:
          return Error("bad escape");
      }
    }
    if (pos_ >= s_.size()) return Error("unterminated string");
    ++pos_;
    return Status::Ok();
  }
  Status Value(JsonValue* v, int depth) {
    if (depth > 64) return Error("nested too deeply");
    Space();
    if (pos_ >= s_.size()) return Error("unexpected end");
    const char c = s_[pos_];
    if (c == '{') {
      v->kind = JsonValue::kObject;
      ++pos_;
      Space();
      if (pos_ < s_.size() && s_[pos_] == '}') {
        ++pos_;
        return Status::Ok();
      }
      while (true) {
        Space();
        std::string key;
        LOOM_RETURN_IF_ERROR(String(&key));
        Space();
        if (pos_ >= s_.size() || s_[pos_] != ':') return Error("expected ':'");
        ++pos_;
        JsonValue member;
        LOOM_RETURN_IF_ERROR(Value(&member, depth + 1));
        v->members.emplace_back(std::move(key), std::move(member));
        Space();
        if (pos_ < s_.size() && s_[pos_] == ',') {
          ++pos_;
          continue;
        }
        if (pos_ < s_.size() && s_[pos_] == '}') {
          ++pos_;
          return Status::Ok();
        }
        return Error("expected ',' or '}'");
      }
    }
    if (c == '[') {
      v->kind = JsonValue::kArray;
      ++pos_;
      Space();
      if (pos_ < s_.size() && s_[pos_] == ']') {
        ++pos_;
        return Status::Ok();
      }
      while (true) {
        JsonValue item;
        LOOM_RETURN_IF_ERROR(Value(&item, depth + 1));
        v->items.push_back(std::move(item));
        Space();
        if (pos_ < s_.size() && s_[pos_] == ',') {
          ++pos_;
          continue;
        }
        if (pos_ < s_.size() && s_[pos_] == ']') {
          ++pos_;
          return Status::Ok();
        }
        return Error("expected ',' or ']'");
      }
    }
    if (c == '"') {
      v->kind = JsonValue::kString;
      return String(&v->str);
    }
    for (const char* lit : {"true", "false", "null"}) {
      const size_t n = std::strlen(lit);
      if (s_.compare(pos_, n, lit) == 0) {
        v->kind = lit[0] == 'n' ? JsonValue::kNull : JsonValue::kBool;
        v->str = lit;
        pos_ += n;
        return Status::Ok();
      }
    }
    const size_t start = pos_;
    while (pos_ < s_.size() &&
           (std::isdigit(static_cast<unsigned char>(s_[pos_])) || s_[pos_] == '-' ||
            s_[pos_] == '+' || s_[pos_] == '.' || s_[pos_] == 'e' || s_[pos_] == 'E')) {
      ++pos_;
    }
    if (start == pos_) return Error("unexpected character");
    v->kind = JsonValue::kNumber;
    v->str = s_.substr(start, pos_ - start);
    return Status::Ok();
  }

  const std::string& s_;
  std::string where_;
  size_t pos_ = 0;
};

// A non-negative integer JSON number.
bool AsCount(const JsonValue& v, int64_t* out) {
  if (v.kind != JsonValue::kNumber || v.str.empty() || v.str.size() > 18) return false;
  int64_t x = 0;
  for (char c : v.str) {
    if (c < '0' || c > '9') return false;
    x = x * 10 + (c - '0');
  }
  *out = x;
  return true;
}

// One tensor of the export file.
struct OutEntry {
  std::string name;
  std::string dtype;  // safetensors dtype
  int64_t esize = 4;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;
  uint64_t written = 0;  // bytes written so far (in order)
};

}  // namespace

// ---------------------------------------------------------------------------------------------
// int8 row-wise.

void QuantizeRowInt8(const float* w, int64_t d, int8_t* q, float* scale, float* bias) {
  float lo = w[0], hi = w[0];
  for (int64_t c = 1; c < d; ++c) {
    lo = std::min(lo, w[c]);
    hi = std::max(hi, w[c]);
  }
  const float s = static_cast<float>((static_cast<double>(hi) - lo) / 255.0);
  *scale = s;
  *bias = static_cast<float>(static_cast<double>(lo) + 128.0 * static_cast<double>(s));
  if (!(s > 0) || !std::isfinite(s)) {
    *scale = 0;
    *bias = lo;
    for (int64_t c = 0; c < d; ++c) q[c] = -128;
    return;
  }
  for (int64_t c = 0; c < d; ++c) {
    double v = std::nearbyint((static_cast<double>(w[c]) - lo) / s);
    v = std::min(255.0, std::max(0.0, v));
    q[c] = static_cast<int8_t>(static_cast<int>(v) - 128);
  }
}

void DequantizeRowInt8(const int8_t* q, int64_t d, float scale, float bias, float* w) {
  for (int64_t c = 0; c < d; ++c) w[c] = scale * static_cast<float>(q[c]) + bias;
}

std::string ExportDenseName(const std::string& parameter) { return parameter; }
std::string ExportTableName(const std::string& table) { return "embedding." + table + ".weight"; }

// ---------------------------------------------------------------------------------------------
// Export.

StatusOr<ExportResult> ExportSafetensors(const std::string& checkpoint, const std::string& out_path,
                                         const ExportOptions& o) {
  if (o.dtype != DType::kF32 && o.dtype != DType::kBF16 && o.dtype != DType::kF16) {
    return InvalidArgumentError(std::string("export dtype must be f32, bf16 or f16, got ") +
                                DTypeName(o.dtype));
  }
  std::error_code ec;
  if (fs::exists(out_path, ec) && !o.overwrite) {
    return FailedPreconditionError(out_path + ": exists (pass --force to replace it)");
  }
  LOOM_ASSIGN_OR_RETURN(auto src, CheckpointSource::Open(checkpoint));
  const proto::CheckpointManifest& m = src->manifest();
  const char* out_dtype = SafetensorsDTypeName(o.dtype);

  // The entries, and which source tensor feeds them.
  struct Job {
    const GlobalTensor* gt;
    std::vector<int> outs;  // weight; or q, scale, bias
  };
  std::vector<OutEntry> entries;
  std::vector<Job> jobs;
  for (const GlobalTensor& gt : src->tensors()) {
    if (gt.kind == proto::TensorEntry::DENSE_PARAMETER && o.dense) {
      if (gt.dtype != DType::kF32) {
        return UnimplementedError("dense parameter " + gt.name + " is " + DTypeName(gt.dtype) +
                                  "; export reads f32 checkpoints");
      }
      OutEntry e;
      e.name = ExportDenseName(gt.parameter);
      e.dtype = out_dtype;
      e.esize = DTypeSize(o.dtype);
      e.shape = gt.shape;
      entries.push_back(e);
      jobs.push_back(Job{&gt, {static_cast<int>(entries.size()) - 1}});
    } else if (gt.kind == proto::TensorEntry::EMBEDDING_WEIGHT && o.embeddings) {
      if (gt.dtype != DType::kF32) {
        return UnimplementedError("table " + gt.parameter + " is " + DTypeName(gt.dtype) +
                                  "; export reads f32 checkpoints");
      }
      Job job{&gt, {}};
      if (o.quantize_embeddings_int8) {
        const std::string base = "embedding." + gt.parameter + ".";
        OutEntry q{base + "weight_int8", "I8", 1, gt.shape};
        OutEntry s{base + "weight_scale", "F32", 4, {gt.shape[0]}};
        OutEntry b{base + "weight_bias", "F32", 4, {gt.shape[0]}};
        for (OutEntry* e : {&q, &s, &b}) {
          entries.push_back(*e);
          job.outs.push_back(static_cast<int>(entries.size()) - 1);
        }
      } else {
        OutEntry e{ExportTableName(gt.parameter), out_dtype, DTypeSize(o.dtype), gt.shape};
        entries.push_back(e);
        job.outs.push_back(static_cast<int>(entries.size()) - 1);
      }
      jobs.push_back(job);
    }
  }
  for (size_t i = 0; i < entries.size(); ++i) {
    for (size_t j = i + 1; j < entries.size(); ++j) {
      if (entries[i].name == entries[j].name) {
        return FailedPreconditionError("two tensors export as '" + entries[i].name + "'");
      }
    }
  }
  // Data layout: larger elements first (each tensor aligned to its element size), no gaps.
  std::vector<int> order(entries.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int>(i);
  std::stable_sort(order.begin(), order.end(),
                   [&](int a, int b) { return entries[a].esize > entries[b].esize; });
  uint64_t pos = 0;
  for (int i : order) {
    int64_t n = entries[i].esize;
    for (int64_t d : entries[i].shape) n *= d;
    entries[i].begin = pos;
    entries[i].end = pos + static_cast<uint64_t>(n);
    pos = entries[i].end;
  }
  const uint64_t data_bytes = pos;

  // Header.
  proto::LoomConfig cfg;
  const bool have_cfg = !m.config_text().empty() &&
                        config::ParseTextProto(m.config_text(), "manifest config_text", &cfg).ok();
  std::vector<std::pair<std::string, std::string>> meta = {
      {"format", "loom-export"},
      {"format_version", "1"},
      {"model_type", m.model_type()},
      {"step", std::to_string(m.step())},
      {"world_size", std::to_string(m.world_size())},
      {"source", src->path()},
      {"dtype", out_dtype},
      {"quantization", o.quantize_embeddings_int8 ? "int8-rowwise" : "none"},
  };
  if (have_cfg) {
    meta.push_back({"model_config", MessageJson(cfg.model())});
    meta.push_back({"embedding_config", MessageJson(cfg.embedding())});
  }
  meta.push_back({"loom_config", m.config_text()});
  std::string header = "{\"__metadata__\":{";
  for (size_t i = 0; i < meta.size(); ++i) {
    header += (i ? "," : "") + JsonQuote(meta[i].first) + ":" + JsonQuote(meta[i].second);
  }
  header += "}";
  for (int i : order) {
    const OutEntry& e = entries[i];
    header += "," + JsonQuote(e.name) + ":{\"dtype\":\"" + e.dtype + "\",\"shape\":[";
    for (size_t k = 0; k < e.shape.size(); ++k)
      header += (k ? "," : "") + std::to_string(e.shape[k]);
    header += "],\"data_offsets\":[" + std::to_string(e.begin) + "," + std::to_string(e.end) + "]}";
  }
  header += "}";
  while (header.size() % 8 != 0) header += ' ';
  const uint64_t data_start = 8 + header.size();

  // Write: a temporary file, preallocated, each entry's bytes in order; then rename.
  const fs::path out(out_path);
  if (!out.parent_path().empty()) fs::create_directories(out.parent_path(), ec);
  const std::string tmp =
      (out.parent_path() / ("." + out.filename().string() + ".tmp-" + std::to_string(::getpid())))
          .string();
  const int fd = ::open(tmp.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) return InternalError(tmp + ": cannot create: " + ErrnoText());
  struct Cleanup {
    int fd;
    std::string tmp;
    bool done = false;
    ~Cleanup() {
      if (fd >= 0) ::close(fd);
      if (!done) ::unlink(tmp.c_str());
    }
  } cleanup{fd, tmp};
  if (::ftruncate(fd, static_cast<off_t>(data_start + data_bytes)) != 0) {
    return InternalError(tmp + ": cannot size to " + std::to_string(data_start + data_bytes) +
                         " bytes: " + ErrnoText());
  }
  unsigned char len_le[8];
  const uint64_t hlen = header.size();
  for (int i = 0; i < 8; ++i) len_le[i] = static_cast<unsigned char>(hlen >> (8 * i));
  LOOM_RETURN_IF_ERROR(PwriteFull(fd, len_le, 8, 0, tmp));
  LOOM_RETURN_IF_ERROR(PwriteFull(fd, header.data(), header.size(), 8, tmp));

  ConvertProgress progress;
  progress.stage = "export";
  progress.tensors_total = static_cast<int>(jobs.size());
  for (const Job& j : jobs) {
    progress.bytes_total += j.gt->bytes();
    if (j.gt->table >= 0) ++progress.tables_total;
  }
  const auto start = std::chrono::steady_clock::now();
  auto report = [&](bool finished) {
    if (!o.progress) return;
    progress.seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    progress.tensor_finished = finished;
    o.progress(progress);
  };
  std::vector<char> block, conv, qbuf;
  std::vector<float> sbuf, bbuf;
  auto put = [&](OutEntry& e, const void* data, uint64_t n) -> Status {
    if (e.written + n > e.end - e.begin) return InternalError(e.name + ": too many bytes");
    LOOM_RETURN_IF_ERROR(PwriteFull(fd, data, n, data_start + e.begin + e.written, tmp));
    e.written += n;
    return Status::Ok();
  };
  for (const Job& job : jobs) {
    const GlobalTensor& gt = *job.gt;
    progress.tensor = gt.name;
    LOOM_ASSIGN_OR_RETURN(auto stream, src->Stream(gt));
    const int64_t row_elems = gt.row_elements();
    const int64_t block_rows =
        std::max<int64_t>(o.block_bytes / std::max<int64_t>(gt.row_bytes(), 1), 1);
    while (true) {
      LOOM_ASSIGN_OR_RETURN(int64_t n, stream->Next(block_rows, &block));
      if (n == 0) break;
      const float* w = reinterpret_cast<const float*>(block.data());
      const int64_t count = n * row_elems;
      if (gt.table >= 0 && o.quantize_embeddings_int8) {
        qbuf.resize(static_cast<size_t>(count));
        sbuf.resize(static_cast<size_t>(n));
        bbuf.resize(static_cast<size_t>(n));
        for (int64_t r = 0; r < n; ++r) {
          QuantizeRowInt8(w + r * row_elems, row_elems,
                          reinterpret_cast<int8_t*>(qbuf.data()) + r * row_elems, &sbuf[r],
                          &bbuf[r]);
        }
        LOOM_RETURN_IF_ERROR(put(entries[job.outs[0]], qbuf.data(), qbuf.size()));
        LOOM_RETURN_IF_ERROR(put(entries[job.outs[1]], sbuf.data(), sbuf.size() * 4));
        LOOM_RETURN_IF_ERROR(put(entries[job.outs[2]], bbuf.data(), bbuf.size() * 4));
      } else if (o.dtype == DType::kF32) {
        LOOM_RETURN_IF_ERROR(put(entries[job.outs[0]], block.data(), block.size()));
      } else {
        conv.resize(static_cast<size_t>(count * 2));
        uint16_t* h = reinterpret_cast<uint16_t*>(conv.data());
        for (int64_t i = 0; i < count; ++i) {
          h[i] = o.dtype == DType::kBF16 ? FloatToBf16(w[i]).bits : FloatToF16(w[i]).bits;
        }
        LOOM_RETURN_IF_ERROR(put(entries[job.outs[0]], conv.data(), conv.size()));
      }
      progress.bytes_done += n * gt.row_bytes();
      report(false);
    }
    ++progress.tensors_done;
    if (gt.table >= 0) ++progress.tables_done;
    report(true);
  }
  for (const OutEntry& e : entries) {
    if (e.written != e.end - e.begin) return InternalError(e.name + ": not fully written");
  }
  if (::fsync(fd) != 0) return InternalError(tmp + ": fsync failed: " + ErrnoText());
  fs::rename(tmp, out_path, ec);
  if (ec) return InternalError(out_path + ": cannot rename into place: " + ec.message());
  cleanup.done = true;
  // The rename itself is made durable; the file is complete either way, so a failure here is
  // not an error.
  (void)FsyncPath(out.parent_path().empty() ? "." : out.parent_path().string(), true);
  ExportResult r;
  r.path = out_path;
  r.tensors = static_cast<int64_t>(entries.size());
  r.bytes = static_cast<int64_t>(data_start + data_bytes);
  return r;
}

// ---------------------------------------------------------------------------------------------
// SafetensorsReader.

int64_t SafetensorsElementSize(const std::string& t) {
  if (t == "F64" || t == "I64" || t == "U64") return 8;
  if (t == "F32" || t == "I32" || t == "U32") return 4;
  if (t == "F16" || t == "BF16" || t == "I16" || t == "U16") return 2;
  if (t == "I8" || t == "U8" || t == "BOOL" || t == "F8_E4M3" || t == "F8_E5M2") return 1;
  return 0;
}

int64_t SafetensorsReader::Entry::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

SafetensorsReader::SafetensorsReader(SafetensorsReader&& o) noexcept { *this = std::move(o); }

SafetensorsReader& SafetensorsReader::operator=(SafetensorsReader&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    path_ = std::move(o.path_);
    fd_ = o.fd_;
    o.fd_ = -1;
    data_start_ = o.data_start_;
    file_size_ = o.file_size_;
    entries_ = std::move(o.entries_);
    metadata_ = std::move(o.metadata_);
  }
  return *this;
}

SafetensorsReader::~SafetensorsReader() {
  if (fd_ >= 0) ::close(fd_);
}

const SafetensorsReader::Entry* SafetensorsReader::Find(const std::string& name) const {
  for (const Entry& e : entries_) {
    if (e.name == name) return &e;
  }
  return nullptr;
}

StatusOr<SafetensorsReader> SafetensorsReader::Open(const std::string& path) {
  SafetensorsReader r;
  r.path_ = path;
  r.fd_ = ::open(path.c_str(), O_RDONLY);
  if (r.fd_ < 0) {
    if (errno == ENOENT) return NotFoundError(path + ": missing");
    return InternalError(path + ": cannot open: " + ErrnoText());
  }
  struct stat st;
  if (::fstat(r.fd_, &st) != 0) return InternalError(path + ": cannot stat: " + ErrnoText());
  r.file_size_ = static_cast<uint64_t>(st.st_size);
  if (r.file_size_ < 8) {
    return DataLossError(path + ": " + std::to_string(r.file_size_) +
                         " bytes, shorter than the 8-byte header length (truncated)");
  }
  unsigned char len_le[8];
  if (::pread(r.fd_, len_le, 8, 0) != 8)
    return DataLossError(path + ": cannot read the header length");
  uint64_t hlen = 0;
  for (int i = 7; i >= 0; --i) hlen = (hlen << 8) | len_le[i];
  if (hlen > r.file_size_ - 8) {
    return DataLossError(path + ": header length " + std::to_string(hlen) + " exceeds the " +
                         std::to_string(r.file_size_) +
                         "-byte file (truncated or not safetensors)");
  }
  std::string header(static_cast<size_t>(hlen), '\0');
  uint64_t done = 0;
  while (done < hlen) {
    const ssize_t n =
        ::pread(r.fd_, header.data() + done, hlen - done, static_cast<off_t>(8 + done));
    if (n <= 0) return DataLossError(path + ": cannot read the header");
    done += static_cast<uint64_t>(n);
  }
  r.data_start_ = 8 + hlen;
  const uint64_t data_size = r.file_size_ - r.data_start_;
  LOOM_ASSIGN_OR_RETURN(JsonValue root, JsonParser(header, path).Parse());
  if (root.kind != JsonValue::kObject)
    return DataLossError(path + ": the header is not a JSON object");
  for (const auto& kv : root.members) {
    if (kv.first == "__metadata__") {
      if (kv.second.kind != JsonValue::kObject) {
        return DataLossError(path + ": __metadata__ is not an object");
      }
      for (const auto& mv : kv.second.members) {
        if (mv.second.kind != JsonValue::kString) {
          return DataLossError(path + ": __metadata__." + mv.first + " is not a string");
        }
        r.metadata_[mv.first] = mv.second.str;
      }
      continue;
    }
    const std::string where = path + ": tensor '" + kv.first + "'";
    if (kv.second.kind != JsonValue::kObject) return DataLossError(where + ": not an object");
    Entry e;
    e.name = kv.first;
    bool have_dtype = false, have_shape = false, have_offsets = false;
    for (const auto& f : kv.second.members) {
      if (f.first == "dtype" && f.second.kind == JsonValue::kString) {
        e.dtype = f.second.str;
        have_dtype = true;
      } else if (f.first == "shape" && f.second.kind == JsonValue::kArray) {
        for (const auto& d : f.second.items) {
          int64_t v;
          if (!AsCount(d, &v)) return DataLossError(where + ": shape holds a non-count");
          e.shape.push_back(v);
        }
        have_shape = true;
      } else if (f.first == "data_offsets" && f.second.kind == JsonValue::kArray &&
                 f.second.items.size() == 2) {
        int64_t b, en;
        if (!AsCount(f.second.items[0], &b) || !AsCount(f.second.items[1], &en)) {
          return DataLossError(where + ": data_offsets are not counts");
        }
        e.begin = static_cast<uint64_t>(b);
        e.end = static_cast<uint64_t>(en);
        have_offsets = true;
      }
    }
    if (!have_dtype || !have_shape || !have_offsets) {
      return DataLossError(where + ": needs dtype, shape and data_offsets [begin, end]");
    }
    e.element_size = SafetensorsElementSize(e.dtype);
    if (e.element_size == 0) return DataLossError(where + ": unknown dtype '" + e.dtype + "'");
    if (e.begin > e.end || e.end > data_size) {
      return DataLossError(where + ": data_offsets [" + std::to_string(e.begin) + ", " +
                           std::to_string(e.end) + "] outside the " + std::to_string(data_size) +
                           "-byte data section (truncated?)");
    }
    if (e.end - e.begin != static_cast<uint64_t>(e.numel() * e.element_size)) {
      return DataLossError(where + ": " + std::to_string(e.end - e.begin) + " bytes for shape " +
                           ShapeText(e.shape) + " x " + e.dtype);
    }
    r.entries_.push_back(std::move(e));
  }
  std::vector<const Entry*> by_offset;
  for (const Entry& e : r.entries_) by_offset.push_back(&e);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const Entry* a, const Entry* b) { return a->begin < b->begin; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    if (by_offset[i]->begin < by_offset[i - 1]->end) {
      return DataLossError(path + ": tensors '" + by_offset[i - 1]->name + "' and '" +
                           by_offset[i]->name + "' overlap");
    }
  }
  return r;
}

Status SafetensorsReader::Read(const Entry& e, uint64_t offset, uint64_t n, void* out) const {
  if (offset + n > e.end - e.begin) {
    return OutOfRangeError(path_ + ": tensor '" + e.name + "': read past its end");
  }
  return PreadFull(fd_, out, n, data_start_ + e.begin + offset,
                   path_ + ": tensor '" + e.name + "'");
}

}  // namespace loom::train
