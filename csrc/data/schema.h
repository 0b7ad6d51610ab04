// DataSchema helpers: validation, layout comparison, and text-format (.pbtxt) file I/O for the
// data messages of csrc/proto/data.proto.
#ifndef LOOM_DATA_SCHEMA_H_
#define LOOM_DATA_SCHEMA_H_

#include <cstdint>
#include <string>

#include <google/protobuf/message.h>

#include "csrc/core/status.h"
#include "csrc/proto/data.pb.h"

namespace loom::data {

// Checks a schema: every feature named, names unique (label and group id included),
// T >= 1 for sequences, weighted only with multi_hot, vocabulary sizes >= 0, and
// shares_table_with naming an existing sparse feature. Errors name the field at fault
// ("sequence[1] 'cate_history': max_length must be >= 1").
Status ValidateSchema(const proto::DataSchema& schema);

// OK iff `a` and `b` describe the same columns: names, kinds, multi-hot/weighted flags and T,
// in the same order, and the same label / group id. Vocabulary sizes, pooling, table sharing
// and the name may differ. The error names the first difference.
Status CheckSameLayout(const proto::DataSchema& a, const proto::DataSchema& b);

// Number of sparse / sequence features (F, k) and dense width (m).
inline int NumSparse(const proto::DataSchema& s) { return s.sparse_size(); }
inline int NumSequences(const proto::DataSchema& s) { return s.sequence_size(); }
inline int NumDense(const proto::DataSchema& s) { return s.dense_size(); }
inline bool HasGroupId(const proto::DataSchema& s) { return !s.group_id().empty(); }

// Index of the sparse / sequence / dense feature called `name`, or -1.
int FindSparse(const proto::DataSchema& s, const std::string& name);
int FindSequence(const proto::DataSchema& s, const std::string& name);
int FindDense(const proto::DataSchema& s, const std::string& name);

// Reads a text-format proto. Parse errors come back as "path:line:col: message".
Status ReadTextProto(const std::string& path, google::protobuf::Message* message);
// Parses text-format proto from a string; `what` names the source in errors.
Status ParseTextProto(const std::string& text, const std::string& what,
                      google::protobuf::Message* message);
// Writes a text-format proto (atomically: to path.tmp, then renamed).
Status WriteTextProto(const std::string& path, const google::protobuf::Message& message);
// Writes `text` to `path` (atomically).
Status WriteStringToFile(const std::string& path, const std::string& text);

// A 64-bit FNV-1a hash of bytes; stable across platforms and releases (used for HASH encoding
// and fingerprints). Hash64("") == 0xcbf29ce484222325 mixed by a final avalanche.
uint64_t Hash64(const void* data, size_t n, uint64_t seed = 0);

}  // namespace loom::data

#endif  // LOOM_DATA_SCHEMA_H_
