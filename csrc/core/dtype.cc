#include "csrc/core/dtype.h"

namespace loom {

const char* DTypeName(DType t) {
  switch (t) {
    case DType::kF32:
      return "f32";
    case DType::kF64:
      return "f64";
    case DType::kBF16:
      return "bf16";
    case DType::kF16:
      return "f16";
    case DType::kI32:
      return "i32";
    case DType::kI64:
      return "i64";
    case DType::kU8:
      return "u8";
  }
  return "?";
}

StatusOr<DType> ParseDType(const std::string& name) {
  for (DType t : {DType::kF32, DType::kF64, DType::kBF16, DType::kF16, DType::kI32, DType::kI64,
                  DType::kU8}) {
    if (name == DTypeName(t)) return t;
  }
  return InvalidArgumentError("unknown dtype '" + name +
                              "' (expected one of f32, f64, bf16, f16, i32, i64, u8)");
}

bool IsFloatingPoint(DType t) {
  return t == DType::kF32 || t == DType::kF64 || t == DType::kBF16 || t == DType::kF16;
}

}  // namespace loom
