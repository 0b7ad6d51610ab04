// Export of a Loom checkpoint's weights to safetensors (serving, PyTorch), with optional
// bf16/f16 storage and int8 row-wise quantization of the embedding tables; and the streaming
// safetensors reader the import uses (ckpt_convert.h).
//
// File (https://github.com/huggingface/safetensors):
//   8 bytes   little-endian u64 N, the header length (the header is padded with spaces so the
//             data section starts at a multiple of 8)
//   N bytes   JSON {"<name>": {"dtype": "F32", "shape": [..], "data_offsets": [b, e]}, ...,
//                   "__metadata__": {"<key>": "<string>", ...}}
//   rest      the tensors' raw little-endian row-major bytes, back to back with no gaps
//             (offsets relative to the data section), 4-byte dtypes first, then 2-, then
//             1-byte ones, so every tensor is aligned to its element size.
//
// Tensor names (docs/checkpoint-format.md, "Conversion tools"):
//   <parameter>                     every dense parameter under its model name
//                                   (docs/model.md §7, e.g. "head.out.weight"), --dtype
//   embedding.<table>.weight        (rows, D) table, --dtype
//   with --quantize-embeddings int8-rowwise, instead of embedding.<table>.weight:
//   embedding.<table>.weight_int8   (rows, D) I8   q
//   embedding.<table>.weight_scale  (rows) F32     s
//   embedding.<table>.weight_bias   (rows) F32     b      w[r, c] ~= s[r] * q[r, c] + b[r]
//     per row: lo = min_c w, hi = max_c w, s = (hi - lo) / 255, b = lo + 128 s,
//     q = clamp(round((w - lo) / s), 0, 255) - 128 (q = -128 and s = 0 for a constant row), so
//     |w - (s q + b)| <= s / 2 plus float rounding of s q + b.
// Optimizer state is not exported. Metadata: format "loom-export", format_version "1",
// model_type, step, world_size (of the source), source (its path), dtype, quantization,
// model_config (ModelConfig as JSON, proto field names, every default spelled out: what
// tests/reference/interformer_ref.py's config_from_json reads), embedding_config
// (EmbeddingConfig as JSON: tables with rows, dims and id mappings; features with their
// kinds, tables and poolings) and loom_config (the checkpoint's config_text).
#ifndef LOOM_TRAIN_CKPT_EXPORT_H_
#define LOOM_TRAIN_CKPT_EXPORT_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "csrc/core/dtype.h"
#include "csrc/core/status.h"
#include "csrc/train/ckpt_convert.h"

namespace loom::train {

// ---------------------------------------------------------------------------------------------
// int8 row-wise quantization (the rule above). d >= 1.
void QuantizeRowInt8(const float* w, int64_t d, int8_t* q, float* scale, float* bias);
// w[c] = scale * q[c] + bias.
void DequantizeRowInt8(const int8_t* q, int64_t d, float scale, float bias, float* w);

// ---------------------------------------------------------------------------------------------
// Export.

struct ExportOptions {
  DType dtype = DType::kF32;  // of dense parameters and unquantized tables: f32, bf16, f16
  bool quantize_embeddings_int8 = false;
  bool dense = true;       // export the dense parameters
  bool embeddings = true;  // export the tables
  int64_t block_bytes = kDefaultBlockBytes;
  bool overwrite = false;  // replace an existing output file
  ProgressFn progress;
};

struct ExportResult {
  std::string path;
  int64_t tensors = 0;
  int64_t bytes = 0;  // file size
};

// Streams the weights of `checkpoint` (resolved by ResolveCheckpointPath) into the
// safetensors file `out_path`, written atomically (a temporary file in the same directory,
// fsynced, then renamed). bf16 and f16 round to nearest even.
StatusOr<ExportResult> ExportSafetensors(const std::string& checkpoint, const std::string& out_path,
                                         const ExportOptions& options);

// The exported name of a dense parameter / table weight.
std::string ExportDenseName(const std::string& parameter);  // the parameter name itself
std::string ExportTableName(const std::string& table);      // "embedding.<table>.weight"

// ---------------------------------------------------------------------------------------------
// Streaming safetensors reading (any dtype string of the format; nothing is loaded until
// asked).

class SafetensorsReader {
 public:
  struct Entry {
    std::string name;
    std::string dtype;         // "F32", "BF16", "I8", ...
    int64_t element_size = 0;  // bytes; 0 for a dtype this reader does not know
    std::vector<int64_t> shape;
    uint64_t begin = 0, end = 0;  // data_offsets
    int64_t numel() const;
  };
  // Reads and validates the header: JSON syntax, known dtypes, offsets inside the file and
  // equal to shape x element size, no overlaps. Errors name the file and tensor.
  static StatusOr<SafetensorsReader> Open(const std::string& path);
  SafetensorsReader(SafetensorsReader&& other) noexcept;
  SafetensorsReader& operator=(SafetensorsReader&& other) noexcept;
  ~SafetensorsReader();

  const std::string& path() const { return path_; }
  const std::vector<Entry>& entries() const { return entries_; }
  const Entry* Find(const std::string& name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // n bytes of the tensor starting at byte `offset` of its data.
  Status Read(const Entry& e, uint64_t offset, uint64_t n, void* out) const;

 private:
  SafetensorsReader() = default;
  std::string path_;
  int fd_ = -1;
  uint64_t data_start_ = 0, file_size_ = 0;
  std::vector<Entry> entries_;
  std::map<std::string, std::string> metadata_;
};

// Element size of a safetensors dtype string (F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL ...);
// 0 if unknown.
int64_t SafetensorsElementSize(const std::string& dtype);

}  // namespace loom::train

#endif  // LOOM_TRAIN_CKPT_EXPORT_H_
