#include "csrc/data/schema.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>

#include <google/protobuf/io/tokenizer.h>
#include <google/protobuf/text_format.h>

namespace loom::data {
namespace {

class CollectErrors : public google::protobuf::io::ErrorCollector {
 public:
  explicit CollectErrors(std::string what) : what_(std::move(what)) {}
  void AddError(int line, google::protobuf::io::ColumnNumber column,
                const std::string& message) override {
    if (!first_.empty()) return;
    first_ =
        what_ + ":" + std::to_string(line + 1) + ":" + std::to_string(column + 1) + ": " + message;
  }
  void AddWarning(int, google::protobuf::io::ColumnNumber, const std::string&) override {}
  const std::string& first() const { return first_; }

 private:
  std::string what_;
  std::string first_;
};

}  // namespace

Status ValidateSchema(const proto::DataSchema& schema) {
  std::set<std::string> names;
  auto add_name = [&](const std::string& kind, int i, const std::string& name) -> Status {
    const std::string where = kind + "[" + std::to_string(i) + "]";
    if (name.empty()) return InvalidArgumentError("schema " + where + ": name is empty");
    if (!names.insert(name).second) {
      return InvalidArgumentError("schema " + where + ": duplicate feature name '" + name + "'");
    }
    return Status::Ok();
  };
  if (schema.label().empty()) return InvalidArgumentError("schema: label name is empty");
  names.insert(schema.label());
  if (HasGroupId(schema) && schema.group_id() == schema.label()) {
    return InvalidArgumentError("schema: group_id '" + schema.group_id() +
                                "' has the same name as the label");
  }
  for (int i = 0; i < schema.dense_size(); ++i) {
    LOOM_RETURN_IF_ERROR(add_name("dense", i, schema.dense(i).name()));
  }
  for (int i = 0; i < schema.sparse_size(); ++i) {
    const auto& f = schema.sparse(i);
    LOOM_RETURN_IF_ERROR(add_name("sparse", i, f.name()));
    const std::string where = "schema sparse[" + std::to_string(i) + "] '" + f.name() + "'";
    if (f.weighted() && !f.multi_hot()) {
      return InvalidArgumentError(where + ": weighted requires multi_hot");
    }
    if (f.vocabulary_size() < 0) {
      return InvalidArgumentError(where + ": vocabulary_size must be >= 0, got " +
                                  std::to_string(f.vocabulary_size()));
    }
    if (f.max_values() < 0) {
      return InvalidArgumentError(where + ": max_values must be >= 0");
    }
  }
  for (int i = 0; i < schema.sequence_size(); ++i) {
    const auto& f = schema.sequence(i);
    LOOM_RETURN_IF_ERROR(add_name("sequence", i, f.name()));
    const std::string where = "schema sequence[" + std::to_string(i) + "] '" + f.name() + "'";
    if (f.max_length() < 1) {
      return InvalidArgumentError(where + ": max_length (T) must be >= 1, got " +
                                  std::to_string(f.max_length()));
    }
    if (f.vocabulary_size() < 0) {
      return InvalidArgumentError(where + ": vocabulary_size must be >= 0");
    }
    if (!f.shares_table_with().empty() && FindSparse(schema, f.shares_table_with()) < 0) {
      return InvalidArgumentError(where + ": shares_table_with names '" + f.shares_table_with() +
                                  "', which is no sparse feature");
    }
  }
  if (HasGroupId(schema) && names.count(schema.group_id()) &&
      FindSparse(schema, schema.group_id()) < 0) {
    // A group id may share its name with a sparse feature (user_id as both), nothing else.
    return InvalidArgumentError("schema: group_id '" + schema.group_id() +
                                "' clashes with a dense or sequence feature name");
  }
  return Status::Ok();
}

Status CheckSameLayout(const proto::DataSchema& a, const proto::DataSchema& b) {
  auto diff = [](const std::string& what) {
    return InvalidArgumentError("schema layouts differ: " + what);
  };
  if (a.label() != b.label()) return diff("label '" + a.label() + "' vs '" + b.label() + "'");
  if (a.group_id() != b.group_id()) {
    return diff("group_id '" + a.group_id() + "' vs '" + b.group_id() + "'");
  }
  if (a.dense_size() != b.dense_size()) {
    return diff(std::to_string(a.dense_size()) + " vs " + std::to_string(b.dense_size()) +
                " dense features");
  }
  for (int i = 0; i < a.dense_size(); ++i) {
    if (a.dense(i).name() != b.dense(i).name()) {
      return diff("dense[" + std::to_string(i) + "] '" + a.dense(i).name() + "' vs '" +
                  b.dense(i).name() + "'");
    }
  }
  if (a.sparse_size() != b.sparse_size()) {
    return diff(std::to_string(a.sparse_size()) + " vs " + std::to_string(b.sparse_size()) +
                " sparse features");
  }
  for (int i = 0; i < a.sparse_size(); ++i) {
    const auto &x = a.sparse(i), &y = b.sparse(i);
    if (x.name() != y.name() || x.multi_hot() != y.multi_hot() || x.weighted() != y.weighted()) {
      return diff("sparse[" + std::to_string(i) + "] '" + x.name() + "' vs '" + y.name() +
                  "' (name, multi_hot or weighted)");
    }
  }
  if (a.sequence_size() != b.sequence_size()) {
    return diff(std::to_string(a.sequence_size()) + " vs " + std::to_string(b.sequence_size()) +
                " sequence features");
  }
  for (int i = 0; i < a.sequence_size(); ++i) {
    const auto &x = a.sequence(i), &y = b.sequence(i);
    if (x.name() != y.name() || x.max_length() != y.max_length()) {
      return diff("sequence[" + std::to_string(i) + "] '" + x.name() +
                  "' T=" + std::to_string(x.max_length()) + " vs '" + y.name() +
                  "' T=" + std::to_string(y.max_length()));
    }
  }
  return Status::Ok();
}

int FindSparse(const proto::DataSchema& s, const std::string& name) {
  for (int i = 0; i < s.sparse_size(); ++i) {
    if (s.sparse(i).name() == name) return i;
  }
  return -1;
}
int FindSequence(const proto::DataSchema& s, const std::string& name) {
  for (int i = 0; i < s.sequence_size(); ++i) {
    if (s.sequence(i).name() == name) return i;
  }
  return -1;
}
int FindDense(const proto::DataSchema& s, const std::string& name) {
  for (int i = 0; i < s.dense_size(); ++i) {
    if (s.dense(i).name() == name) return i;
  }
  return -1;
}

Status ParseTextProto(const std::string& text, const std::string& what,
                      google::protobuf::Message* message) {
  google::protobuf::TextFormat::Parser parser;
  CollectErrors errors(what);
  parser.RecordErrorsTo(&errors);
  if (!parser.ParseFromString(text, message)) {
    return InvalidArgumentError(errors.first().empty() ? what + ": cannot parse" : errors.first());
  }
  return Status::Ok();
}

Status ReadTextProto(const std::string& path, google::protobuf::Message* message) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return NotFoundError(path + ": cannot open: " + std::strerror(errno));
  std::stringstream ss;
  ss << in.rdbuf();
  return ParseTextProto(ss.str(), path, message);
}

Status WriteStringToFile(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (f == nullptr) return NotFoundError(tmp + ": cannot create: " + std::strerror(errno));
  const bool ok = std::fwrite(text.data(), 1, text.size(), f) == text.size();
  if (std::fclose(f) != 0 || !ok) {
    return DataLossError(tmp + ": write failed: " + std::strerror(errno));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    return DataLossError(path + ": rename failed: " + std::strerror(errno));
  }
  return Status::Ok();
}

Status WriteTextProto(const std::string& path, const google::protobuf::Message& message) {
  std::string text;
  if (!google::protobuf::TextFormat::PrintToString(message, &text)) {
    return InternalError(path + ": cannot print text proto");
  }
  return WriteStringToFile(path, text);
}

uint64_t Hash64(const void* data, size_t n, uint64_t seed) {
  const auto* p = static_cast<const uint8_t*>(data);
  uint64_t h = 0xcbf29ce484222325ull ^ (seed * 0x9E3779B97F4A7C15ull);
  for (size_t i = 0; i < n; ++i) {
    h ^= p[i];
    h *= 0x100000001b3ull;
  }
  // Final avalanche (SplitMix64 finalizer): FNV's low bits are weak for short strings.
  h ^= h >> 30;
  h *= 0xbf58476d1ce4e5b9ull;
  h ^= h >> 27;
  h *= 0x94d049bb133111ebull;
  h ^= h >> 31;
  return h;
}

}  // namespace loom::data
