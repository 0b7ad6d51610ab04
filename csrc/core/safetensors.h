// Reading and writing safetensors files: the interchange format for weights (export to serving
// and PyTorch, import, and the reference-parity tests).
//
// Format (https://github.com/huggingface/safetensors, specification in docs/checkpoint-format.md):
//   8 bytes   little-endian u64 N, the header length
//   N bytes   JSON: {"<name>": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]},
//                    ..., "__metadata__": {"<key>": "<string value>", ...}}
//   rest      raw little-endian tensor data; offsets are relative to the start of this section
// Tensors are written in the order added, 8-byte aligned, names sorted in the header.
#ifndef LOOM_CORE_SAFETENSORS_H_
#define LOOM_CORE_SAFETENSORS_H_

#include <map>
#include <string>
#include <vector>

#include "csrc/core/status.h"
#include "csrc/core/tensor.h"

namespace loom {

class SafetensorsWriter {
 public:
  // Copies the view (any device) into the file buffer. Fatal on a duplicate name.
  void Add(const std::string& name, ConstTensorView tensor);
  void SetMetadata(const std::string& key, const std::string& value);
  // Writes to `path` atomically (a temporary file, then rename).
  Status Write(const std::string& path) const;

 private:
  struct Entry {
    TensorSpec spec;
    std::vector<char> bytes;
  };
  std::map<std::string, Entry> tensors_;
  std::vector<std::string> order_;
  std::map<std::string, std::string> metadata_;
};

class SafetensorsFile {
 public:
  // Reads and validates the whole file: header JSON, dtypes, shapes, offsets within bounds and
  // non-overlapping. Errors name the file and what is wrong.
  static StatusOr<SafetensorsFile> Read(const std::string& path);

  std::vector<std::string> names() const;
  bool Has(const std::string& name) const { return tensors_.count(name) > 0; }
  // The tensor as a host Tensor; NotFound names the file and tensor.
  StatusOr<Tensor> Get(const std::string& name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::map<std::string, Tensor> tensors_;
  std::map<std::string, std::string> metadata_;
};

// "F32" <-> DType::kF32, etc. (safetensors dtype names).
const char* SafetensorsDTypeName(DType dtype);
StatusOr<DType> ParseSafetensorsDType(const std::string& name);

}  // namespace loom

#endif  // LOOM_CORE_SAFETENSORS_H_
