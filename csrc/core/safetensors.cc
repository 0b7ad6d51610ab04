#include "csrc/core/safetensors.h"

#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "csrc/core/json.h"

namespace loom {
namespace {

// A JSON reader for exactly what a safetensors header holds: objects, arrays, strings and
// non-negative integers. Anything else is a DataLoss error with the byte offset.
class JsonCursor {
 public:
  JsonCursor(const std::string& text, const std::string& path) : s_(text), path_(path) {}

  Status Error(const std::string& what) const {
    return DataLossError(path_ + ": header JSON at byte " + std::to_string(pos_) + ": " + what);
  }
  void SkipSpace() {
    while (pos_ < s_.size() &&
           (s_[pos_] == ' ' || s_[pos_] == '\n' || s_[pos_] == '\t' || s_[pos_] == '\r')) {
      ++pos_;
    }
  }
  bool Peek(char c) {
    SkipSpace();
    return pos_ < s_.size() && s_[pos_] == c;
  }
  Status Expect(char c) {
    SkipSpace();
    if (pos_ >= s_.size() || s_[pos_] != c) return Error(std::string("expected '") + c + "'");
    ++pos_;
    return Status::Ok();
  }
  StatusOr<std::string> String() {
    LOOM_RETURN_IF_ERROR(Expect('"'));
    std::string out;
    while (pos_ < s_.size() && s_[pos_] != '"') {
      char c = s_[pos_++];
      if (c == '\\') {
        if (pos_ >= s_.size()) break;
        char e = s_[pos_++];
        switch (e) {
          case '"':
          case '\\':
          case '/':
            out += e;
            break;
          case 'n':
            out += '\n';
            break;
          case 't':
            out += '\t';
            break;
          case 'r':
            out += '\r';
            break;
          case 'b':
            out += '\b';
            break;
          case 'f':
            out += '\f';
            break;
          case 'u': {
            if (pos_ + 4 > s_.size()) return Error("truncated \\u escape");
            unsigned code = std::stoul(s_.substr(pos_, 4), nullptr, 16);
            pos_ += 4;
            if (code < 0x80) {
              out += static_cast<char>(code);
            } else if (code < 0x800) {
              out += static_cast<char>(0xc0 | (code >> 6));
              out += static_cast<char>(0x80 | (code & 0x3f));
            } else {
              out += static_cast<char>(0xe0 | (code >> 12));
              out += static_cast<char>(0x80 | ((code >> 6) & 0x3f));
              out += static_cast<char>(0x80 | (code & 0x3f));
            }
            break;
          }
          default:
            return Error("bad escape");
        }
      } else {
        out += c;
      }
    }
    LOOM_RETURN_IF_ERROR(Expect('"'));
    return out;
  }
  StatusOr<int64_t> Integer() {
    SkipSpace();
    size_t start = pos_;
    while (pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '9') ++pos_;
    if (start == pos_ || pos_ - start > 18) return Error("expected a non-negative integer");
    return static_cast<int64_t>(std::stoll(s_.substr(start, pos_ - start)));
  }
  StatusOr<std::vector<int64_t>> IntArray() {
    std::vector<int64_t> out;
    LOOM_RETURN_IF_ERROR(Expect('['));
    if (Peek(']')) {
      ++pos_;
      return out;
    }
    while (true) {
      LOOM_ASSIGN_OR_RETURN(int64_t v, Integer());
      out.push_back(v);
      if (Peek(',')) {
        ++pos_;
        continue;
      }
      LOOM_RETURN_IF_ERROR(Expect(']'));
      return out;
    }
  }
  bool AtEnd() {
    SkipSpace();
    return pos_ == s_.size();
  }

 private:
  const std::string& s_;
  const std::string& path_;
  size_t pos_ = 0;
};

}  // namespace

const char* SafetensorsDTypeName(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return "F32";
    case DType::kF64:
      return "F64";
    case DType::kBF16:
      return "BF16";
    case DType::kF16:
      return "F16";
    case DType::kI32:
      return "I32";
    case DType::kI64:
      return "I64";
    case DType::kU8:
      return "U8";
  }
  return "?";
}

StatusOr<DType> ParseSafetensorsDType(const std::string& name) {
  for (DType t : {DType::kF32, DType::kF64, DType::kBF16, DType::kF16, DType::kI32, DType::kI64,
                  DType::kU8}) {
    if (name == SafetensorsDTypeName(t)) return t;
  }
  return InvalidArgumentError("unsupported safetensors dtype '" + name + "'");
}

void SafetensorsWriter::Add(const std::string& name, ConstTensorView tensor) {
  CHECK(!tensors_.count(name)) << "duplicate safetensors entry '" << name << "'";
  Entry e;
  e.spec = tensor.spec();
  e.bytes.resize(static_cast<size_t>(tensor.nbytes()));
  if (!e.bytes.empty()) {
    CopyTensor(tensor, TensorView(e.bytes.data(), tensor.spec(), Device::Cpu()));
  }
  tensors_.emplace(name, std::move(e));
  order_.push_back(name);
}

void SafetensorsWriter::SetMetadata(const std::string& key, const std::string& value) {
  metadata_[key] = value;
}

Status SafetensorsWriter::Write(const std::string& path) const {
  // Data offsets in insertion order, each tensor 8-byte aligned.
  std::map<std::string, std::pair<int64_t, int64_t>> offsets;
  int64_t cursor = 0;
  for (const std::string& name : order_) {
    cursor = (cursor + 7) / 8 * 8;
    const int64_t n = static_cast<int64_t>(tensors_.at(name).bytes.size());
    offsets[name] = {cursor, cursor + n};
    cursor += n;
  }
  std::ostringstream h;
  h << "{";
  bool first = true;
  if (!metadata_.empty()) {
    h << "\"__metadata__\":{";
    for (auto it = metadata_.begin(); it != metadata_.end(); ++it) {
      h << (it == metadata_.begin() ? "" : ",") << "\"" << JsonEscape(it->first) << "\":\""
        << JsonEscape(it->second) << "\"";
    }
    h << "}";
    first = false;
  }
  for (const auto& [name, entry] : tensors_) {
    h << (first ? "" : ",") << "\"" << JsonEscape(name) << "\":{\"dtype\":\""
      << SafetensorsDTypeName(entry.spec.dtype) << "\",\"shape\":[";
    for (int i = 0; i < entry.spec.shape.rank(); ++i) h << (i ? "," : "") << entry.spec.shape[i];
    h << "],\"data_offsets\":[" << offsets[name].first << "," << offsets[name].second << "]}";
    first = false;
  }
  h << "}";
  std::string header = h.str();
  header.append((8 - header.size() % 8) % 8, ' ');  // keep the data section 8-byte aligned

  const std::string tmp = path + ".tmp";
  std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
  if (!out) return NotFoundError("cannot open '" + tmp + "' for writing");
  const uint64_t n = header.size();
  unsigned char len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(n >> (8 * i));
  out.write(reinterpret_cast<const char*>(len), 8);
  out.write(header.data(), static_cast<std::streamsize>(header.size()));
  int64_t written = 0;
  static const char kZeros[8] = {0};
  for (const std::string& name : order_) {
    const auto& [begin, end] = offsets[name];
    out.write(kZeros, begin - written);
    const std::vector<char>& bytes = tensors_.at(name).bytes;
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    written = end;
  }
  out.close();
  if (!out) return DataLossError("short write to '" + tmp + "'");
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    return DataLossError("cannot rename '" + tmp + "' to '" + path + "': " + std::strerror(errno));
  }
  return Status::Ok();
}

StatusOr<SafetensorsFile> SafetensorsFile::Read(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return NotFoundError("cannot open safetensors file '" + path + "'");
  in.seekg(0, std::ios::end);
  const int64_t file_size = in.tellg();
  in.seekg(0);
  if (file_size < 8) {
    return DataLossError(path + ": truncated: " + std::to_string(file_size) +
                         " bytes, shorter than the 8-byte header length");
  }
  unsigned char len[8];
  in.read(reinterpret_cast<char*>(len), 8);
  uint64_t header_len = 0;
  for (int i = 0; i < 8; ++i) header_len |= static_cast<uint64_t>(len[i]) << (8 * i);
  if (header_len > static_cast<uint64_t>(file_size - 8) || header_len > (100u << 20)) {
    return DataLossError(path + ": header length " + std::to_string(header_len) +
                         " exceeds the file size " + std::to_string(file_size));
  }
  std::string header(header_len, '\0');
  in.read(header.data(), static_cast<std::streamsize>(header_len));
  const int64_t data_size = file_size - 8 - static_cast<int64_t>(header_len);
  std::vector<char> data(static_cast<size_t>(data_size));
  in.read(data.data(), data_size);
  if (!in) return DataLossError(path + ": short read");

  SafetensorsFile file;
  file.path_ = path;
  JsonCursor c(header, path);
  LOOM_RETURN_IF_ERROR(c.Expect('{'));
  std::vector<std::pair<int64_t, int64_t>> ranges;
  bool first = true;
  while (!c.Peek('}')) {
    if (!first) LOOM_RETURN_IF_ERROR(c.Expect(','));
    first = false;
    LOOM_ASSIGN_OR_RETURN(std::string name, c.String());
    LOOM_RETURN_IF_ERROR(c.Expect(':'));
    LOOM_RETURN_IF_ERROR(c.Expect('{'));
    if (name == "__metadata__") {
      bool first_kv = true;
      while (!c.Peek('}')) {
        if (!first_kv) LOOM_RETURN_IF_ERROR(c.Expect(','));
        first_kv = false;
        LOOM_ASSIGN_OR_RETURN(std::string key, c.String());
        LOOM_RETURN_IF_ERROR(c.Expect(':'));
        LOOM_ASSIGN_OR_RETURN(std::string value, c.String());
        file.metadata_[key] = value;
      }
      LOOM_RETURN_IF_ERROR(c.Expect('}'));
      continue;
    }
    std::string dtype_name;
    std::vector<int64_t> shape, offsets;
    bool has_dtype = false, has_shape = false, has_offsets = false, first_field = true;
    while (!c.Peek('}')) {
      if (!first_field) LOOM_RETURN_IF_ERROR(c.Expect(','));
      first_field = false;
      LOOM_ASSIGN_OR_RETURN(std::string key, c.String());
      LOOM_RETURN_IF_ERROR(c.Expect(':'));
      if (key == "dtype") {
        LOOM_ASSIGN_OR_RETURN(dtype_name, c.String());
        has_dtype = true;
      } else if (key == "shape") {
        LOOM_ASSIGN_OR_RETURN(shape, c.IntArray());
        has_shape = true;
      } else if (key == "data_offsets") {
        LOOM_ASSIGN_OR_RETURN(offsets, c.IntArray());
        has_offsets = true;
      } else {
        return c.Error("unknown key '" + key + "' in tensor '" + name + "'");
      }
    }
    LOOM_RETURN_IF_ERROR(c.Expect('}'));
    if (!has_dtype || !has_shape || !has_offsets || offsets.size() != 2) {
      return DataLossError(path + ": tensor '" + name +
                           "' needs dtype, shape and data_offsets [begin, end]");
    }
    StatusOr<DType> dtype = ParseSafetensorsDType(dtype_name);
    if (!dtype.ok()) return dtype.status().WithContext(path + ": tensor '" + name + "'");
    if (shape.size() > Shape::kMaxDims) {
      return DataLossError(path + ": tensor '" + name + "' has " + std::to_string(shape.size()) +
                           " dimensions (at most " + std::to_string(Shape::kMaxDims) + ")");
    }
    const TensorSpec spec{Shape(shape), *dtype};
    const int64_t begin = offsets[0], end = offsets[1];
    if (begin > end || end > data_size || end - begin != spec.nbytes()) {
      return DataLossError(path + ": tensor '" + name + "' has data_offsets [" +
                           std::to_string(begin) + ", " + std::to_string(end) + "] but needs " +
                           std::to_string(spec.nbytes()) + " bytes within a data section of " +
                           std::to_string(data_size) + " bytes (truncated file?)");
    }
    for (const auto& [b, e] : ranges) {
      if (begin < e && b < end) {
        return DataLossError(path + ": tensor '" + name + "' overlaps another tensor");
      }
    }
    ranges.emplace_back(begin, end);
    Tensor t = Tensor::Empty(spec);
    if (spec.nbytes() > 0) std::memcpy(t.raw(), data.data() + begin, spec.nbytes());
    if (!file.tensors_.emplace(name, std::move(t)).second) {
      return DataLossError(path + ": duplicate tensor '" + name + "'");
    }
  }
  LOOM_RETURN_IF_ERROR(c.Expect('}'));
  if (!c.AtEnd()) return c.Error("trailing characters after the header object");
  return file;
}

std::vector<std::string> SafetensorsFile::names() const {
  std::vector<std::string> out;
  for (const auto& kv : tensors_) out.push_back(kv.first);
  return out;
}

StatusOr<Tensor> SafetensorsFile::Get(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) return NotFoundError(path_ + ": no tensor named '" + name + "'");
  return it->second;
}

}  // namespace loom
