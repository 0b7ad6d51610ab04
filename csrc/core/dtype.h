// Element types of tensors and collectives, and the 16-bit float storage types.
//
// bf16 and f16 are storage formats: arithmetic happens in fp32 after conversion. The
// conversions here are exact IEEE round-to-nearest-even (NaN stays NaN), identical on host and
// device, so a CUDA kernel that stores bf16 produces the same bits as the CPU reference.
#ifndef LOOM_CORE_DTYPE_H_
#define LOOM_CORE_DTYPE_H_

#include <cstdint>
#include <cstring>
#include <string>

#include "csrc/core/macros.h"
#include "csrc/core/status.h"

namespace loom {

enum class DType : uint8_t { kF32 = 0, kF64, kBF16, kF16, kI32, kI64, kU8 };

// Bytes per element.
LOOM_HOST_DEVICE constexpr int64_t DTypeSize(DType t) {
  switch (t) {
    case DType::kF64:
    case DType::kI64:
      return 8;
    case DType::kF32:
    case DType::kI32:
      return 4;
    case DType::kBF16:
    case DType::kF16:
      return 2;
    case DType::kU8:
      return 1;
  }
  return 0;
}

// "f32", "f64", "bf16", "f16", "i32", "i64", "u8".
const char* DTypeName(DType t);
// Inverse of DTypeName; InvalidArgument names the unknown string.
StatusOr<DType> ParseDType(const std::string& name);
bool IsFloatingPoint(DType t);

// 16-bit brain float (8 exponent bits, 7 mantissa bits).
struct bf16 {
  uint16_t bits;
};
// IEEE 754 binary16.
struct f16 {
  uint16_t bits;
};

LOOM_HOST_DEVICE LOOM_INLINE uint32_t FloatBits(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof(u));
  return u;
}
LOOM_HOST_DEVICE LOOM_INLINE float BitsToFloat(uint32_t u) {
  float f;
  memcpy(&f, &u, sizeof(f));
  return f;
}

LOOM_HOST_DEVICE LOOM_INLINE float Bf16ToFloat(bf16 h) {
  return BitsToFloat(static_cast<uint32_t>(h.bits) << 16);
}
// Round to nearest, ties to even; NaN is kept a (quiet) NaN.
LOOM_HOST_DEVICE LOOM_INLINE bf16 FloatToBf16(float f) {
  uint32_t u = FloatBits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return bf16{static_cast<uint16_t>((u >> 16) | 0x40u)};
  u += 0x7fffu + ((u >> 16) & 1u);
  return bf16{static_cast<uint16_t>(u >> 16)};
}

LOOM_HOST_DEVICE LOOM_INLINE float F16ToFloat(f16 h) {
  const uint32_t sign = static_cast<uint32_t>(h.bits & 0x8000u) << 16;
  uint32_t exp = (h.bits >> 10) & 0x1fu;
  uint32_t man = h.bits & 0x3ffu;
  if (exp == 0x1f) return BitsToFloat(sign | 0x7f800000u | (man << 13));  // inf / nan
  if (exp == 0) {
    if (man == 0) return BitsToFloat(sign);  // signed zero
    // Subnormal: value = man * 2^-24.
    float v = static_cast<float>(man) * 5.9604644775390625e-8f;
    return sign ? -v : v;
  }
  return BitsToFloat(sign | ((exp + 112u) << 23) | (man << 13));
}
// Round to nearest, ties to even; overflow goes to infinity; NaN stays NaN.
LOOM_HOST_DEVICE LOOM_INLINE f16 FloatToF16(float f) {
  const uint32_t u = FloatBits(f);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const uint32_t abs = u & 0x7fffffffu;
  if (abs > 0x7f800000u) return f16{static_cast<uint16_t>(sign | 0x7e00u)};
  if (abs >= 0x477ff000u) return f16{static_cast<uint16_t>(sign | 0x7c00u)};  // >= 65520: inf
  if (abs < 0x38800000u) {  // below the smallest normal half (2^-14): subnormal or zero
    // Add 0.5 (as a float) so the FPU rounds the mantissa to the 2^-24 grid, ties to even.
    float a = BitsToFloat(abs) + 0.5f;
    return f16{static_cast<uint16_t>(sign | (FloatBits(a) - 0x3f000000u))};
  }
  uint32_t mant_odd = (abs >> 13) & 1u;
  uint32_t r = abs + 0xc8000fffu + mant_odd;  // rebias exponent (-112 << 23) and round
  return f16{static_cast<uint16_t>(sign | (r >> 13))};
}

// Compile-time mapping from C++ element type to DType.
template <typename T>
struct DTypeOf;
template <>
struct DTypeOf<float> {
  static constexpr DType value = DType::kF32;
};
template <>
struct DTypeOf<double> {
  static constexpr DType value = DType::kF64;
};
template <>
struct DTypeOf<bf16> {
  static constexpr DType value = DType::kBF16;
};
template <>
struct DTypeOf<f16> {
  static constexpr DType value = DType::kF16;
};
template <>
struct DTypeOf<int32_t> {
  static constexpr DType value = DType::kI32;
};
template <>
struct DTypeOf<int64_t> {
  static constexpr DType value = DType::kI64;
};
template <>
struct DTypeOf<uint8_t> {
  static constexpr DType value = DType::kU8;
};

}  // namespace loom

#endif  // LOOM_CORE_DTYPE_H_
