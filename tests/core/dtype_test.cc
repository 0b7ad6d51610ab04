#include "csrc/core/dtype.h"

#include <cmath>
#include <limits>

#include <gtest/gtest.h>

namespace loom {
namespace {

TEST(DTypeTest, SizesAndNames) {
  EXPECT_EQ(DTypeSize(DType::kF32), 4);
  EXPECT_EQ(DTypeSize(DType::kF64), 8);
  EXPECT_EQ(DTypeSize(DType::kBF16), 2);
  EXPECT_EQ(DTypeSize(DType::kF16), 2);
  EXPECT_EQ(DTypeSize(DType::kI32), 4);
  EXPECT_EQ(DTypeSize(DType::kI64), 8);
  for (DType t : {DType::kF32, DType::kF64, DType::kBF16, DType::kF16, DType::kI32, DType::kI64,
                  DType::kU8}) {
    StatusOr<DType> parsed = ParseDType(DTypeName(t));
    ASSERT_TRUE(parsed.ok());
    EXPECT_EQ(*parsed, t);
  }
  StatusOr<DType> bad = ParseDType("f8");
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("'f8'"), std::string::npos);
}

TEST(DTypeTest, Bf16RoundsToNearestEven) {
  EXPECT_EQ(FloatToBf16(1.0f).bits, 0x3f80);
  EXPECT_EQ(FloatToBf16(-2.0f).bits, 0xc000);
  // 1 + 2^-8 is exactly halfway between 1 and 1 + 2^-7: ties to even (1.0).
  EXPECT_EQ(FloatToBf16(1.0f + std::ldexp(1.0f, -8)).bits, 0x3f80);
  // 1 + 3 * 2^-8 is halfway between 1 + 2^-7 (odd) and 1 + 2^-6: rounds up to even.
  EXPECT_EQ(FloatToBf16(1.0f + 3 * std::ldexp(1.0f, -8)).bits, 0x3f82);
  EXPECT_TRUE(std::isnan(Bf16ToFloat(FloatToBf16(std::numeric_limits<float>::quiet_NaN()))));
  EXPECT_EQ(Bf16ToFloat(FloatToBf16(std::numeric_limits<float>::infinity())),
            std::numeric_limits<float>::infinity());
  // Every bf16 value survives a round trip through float.
  for (uint32_t b = 0; b < 0x10000; ++b) {
    bf16 h{static_cast<uint16_t>(b)};
    float f = Bf16ToFloat(h);
    if (std::isnan(f)) continue;
    EXPECT_EQ(FloatToBf16(f).bits, h.bits) << b;
  }
}

TEST(DTypeTest, F16MatchesIeeeBinary16) {
  EXPECT_EQ(FloatToF16(1.0f).bits, 0x3c00);
  EXPECT_EQ(FloatToF16(-2.0f).bits, 0xc000);
  EXPECT_EQ(FloatToF16(65504.0f).bits, 0x7bff);                      // largest finite
  EXPECT_EQ(FloatToF16(65520.0f).bits, 0x7c00);                      // halfway to 2^16: ties to inf
  EXPECT_EQ(FloatToF16(std::ldexp(1.0f, -24)).bits, 0x0001);         // smallest subnormal
  EXPECT_EQ(FloatToF16(std::ldexp(1.0f, -25)).bits, 0x0000);         // halfway: ties to even (0)
  EXPECT_EQ(FloatToF16(std::ldexp(3.0f, -25)).bits, 0x0002);         // 1.5 ulp: up to even
  EXPECT_EQ(FloatToF16(1.0f + std::ldexp(1.0f, -11)).bits, 0x3c00);  // tie to even
  EXPECT_EQ(FloatToF16(1.0f + std::ldexp(3.0f, -11)).bits, 0x3c02);
  for (uint32_t b = 0; b < 0x10000; ++b) {
    f16 h{static_cast<uint16_t>(b)};
    float f = F16ToFloat(h);
    if (std::isnan(f)) continue;
    EXPECT_EQ(FloatToF16(f).bits, h.bits) << b;
  }
  EXPECT_EQ(F16ToFloat(f16{0x3555}), 0.333251953125f);
}

}  // namespace
}  // namespace loom
