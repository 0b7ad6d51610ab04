#include "csrc/core/philox.h"

#include <cmath>
#include <vector>

#include <gtest/gtest.h>

#include "csrc/core/rng.h"

namespace loom {
namespace {

// Known-answer tests from the Random123 distribution (kat_vectors, philox4x32 with 10 rounds).
TEST(PhiloxTest, PublishedTestVectors) {
  struct Kat {
    uint32_t ctr[4];
    uint32_t key[2];
    uint32_t expected[4];
  };
  const Kat kats[] = {
      {{0, 0, 0, 0}, {0, 0}, {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
      {{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff},
       {0xffffffff, 0xffffffff},
       {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}},
      {{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344},
       {0xa4093822, 0x299f31d0},
       {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}},
  };
  for (const Kat& k : kats) {
    Philox4x32Result r = Philox4x32(k.ctr, k.key);
    for (int i = 0; i < 4; ++i) EXPECT_EQ(r.v[i], k.expected[i]) << "lane " << i;
  }
}

TEST(PhiloxTest, OwnLogAndSinCosMatchLibm) {
  // Loom's polynomials must be accurate, not only reproducible.
  for (int i = 1; i <= 4096; ++i) {
    const double x = i / 4096.0;
    EXPECT_NEAR(philox_internal::Log(x), std::log(x), 4e-16 * (1 + std::fabs(std::log(x))));
    double s, c;
    philox_internal::SinCos2Pi(x - 1.0 / 8192, &s, &c);
    const double a = 2 * M_PI * (x - 1.0 / 8192);
    EXPECT_NEAR(s, std::sin(a), 1e-15);
    EXPECT_NEAR(c, std::cos(a), 1e-15);
  }
}

TEST(PhiloxTest, UniformIsOpenIntervalAndUniform) {
  EXPECT_GT(UintToUniform(0), 0.0f);
  EXPECT_LT(UintToUniform(0xffffffffu), 1.0f);
  const int n = 1 << 18;
  double sum = 0, sum_sq = 0;
  std::vector<int> bins(16, 0);
  for (int i = 0; i < n; ++i) {
    const double u = PhiloxUniform(1234, 7, i);
    sum += u;
    sum_sq += u * u;
    bins[static_cast<int>(u * 16)]++;
  }
  const double mean = sum / n, var = sum_sq / n - mean * mean;
  EXPECT_NEAR(mean, 0.5, 4 * std::sqrt(1.0 / 12 / n));
  EXPECT_NEAR(var, 1.0 / 12, 0.002);
  for (int b : bins) EXPECT_NEAR(b, n / 16, 5 * std::sqrt(n / 16.0));  // ~5 sigma
}

TEST(PhiloxTest, NormalMoments) {
  const int n = 1 << 18;
  double sum = 0, sum_sq = 0, sum4 = 0;
  for (int i = 0; i < n; ++i) {
    const double z = PhiloxNormal(99, 3, i);
    sum += z;
    sum_sq += z * z;
    sum4 += z * z * z * z;
  }
  EXPECT_NEAR(sum / n, 0.0, 5 / std::sqrt(n));
  EXPECT_NEAR(sum_sq / n, 1.0, 0.01);
  EXPECT_NEAR(sum4 / n, 3.0, 0.06);  // kurtosis of a normal
}

TEST(PhiloxTest, StreamsAndSeedsAreIndependent) {
  EXPECT_NE(PhiloxUniform(1, 0, 0), PhiloxUniform(2, 0, 0));
  EXPECT_NE(PhiloxUniform(1, 0, 0), PhiloxUniform(1, 1, 0));
  EXPECT_NE(MakeStream(kRngDropout, 1, 2), MakeStream(kRngDropout, 2, 1));
  EXPECT_EQ(MakeStream(kRngDropout, 1, 2) >> 48, kRngDropout);
}

TEST(PhiloxTest, FillMatchesElementFormula) {
  Tensor t = Tensor::Empty(Shape{1000}, DType::kF32);
  FillUniform(ExecContext::Cpu(), t, 5, 11, -2.0, 3.0);
  Tensor n = Tensor::Empty(Shape{1001}, DType::kF64);
  FillNormal(ExecContext::Cpu(), n, 5, 12, 1.0, 0.5);
  for (int i = 0; i < 1000; ++i) {
    EXPECT_EQ(t.data<float>()[i], static_cast<float>(-2.0 + 5.0 * PhiloxUniform(5, 11, i)));
    EXPECT_EQ(n.data<double>()[i], 1.0 + 0.5 * PhiloxNormal(5, 12, i));
  }
}

}  // namespace
}  // namespace loom
