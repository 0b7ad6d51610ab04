// Philox-4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11), a
// counter-based generator: the i-th random number is a pure function of (key, counter), so
// any thread on any device draws the same value for the same element without shared state.
//
// Loom's convention: key = the 64-bit seed; counter = (block index: 64 bits, stream: 64 bits),
// where `stream` separates independent uses (initializer of parameter p, dropout of layer l at
// step s on rank r; see MakeStream). Element i of a uniform draw is lane i % 4 of block i / 4.
// Element i of a normal draw comes from block i / 2: Box-Muller on lanes 0 and 1 gives the
// cosine (even i) and sine (odd i) branch.
//
// Bit-identical CPU and CUDA results: the uint32 outputs are exact integer arithmetic. The
// float transforms use only correctly rounded operations (explicit *_rn intrinsics on the
// device, -ffp-contract=off on the host) and Loom's own log/sin/cos polynomials in double, so
// uniform and normal draws are the same bits on both backends (tests/core/philox_test.cc and
// tests/core/rng_cuda_test.cc).
#ifndef LOOM_CORE_PHILOX_H_
#define LOOM_CORE_PHILOX_H_

#include <cstdint>
#include <cstring>

#include "csrc/core/macros.h"

namespace loom {

struct Philox4x32Result {
  uint32_t v[4];
};

namespace philox_internal {
constexpr uint32_t kM0 = 0xD2511F53u;
constexpr uint32_t kM1 = 0xCD9E8D57u;
constexpr uint32_t kW0 = 0x9E3779B9u;
constexpr uint32_t kW1 = 0xBB67AE85u;

LOOM_HOST_DEVICE LOOM_INLINE void MulHiLo(uint32_t a, uint32_t b, uint32_t* hi, uint32_t* lo) {
  const uint64_t p = static_cast<uint64_t>(a) * b;
  *hi = static_cast<uint32_t>(p >> 32);
  *lo = static_cast<uint32_t>(p);
}

// Correctly rounded double operations, never contracted into FMAs.
LOOM_HOST_DEVICE LOOM_INLINE double Mul(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dmul_rn(a, b);
#else
  return a * b;
#endif
}
LOOM_HOST_DEVICE LOOM_INLINE double Add(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dadd_rn(a, b);
#else
  return a + b;
#endif
}
LOOM_HOST_DEVICE LOOM_INLINE double Div(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __ddiv_rn(a, b);
#else
  return a / b;
#endif
}
LOOM_HOST_DEVICE LOOM_INLINE double Sqrt(double a) {
#if defined(__CUDA_ARCH__)
  return __dsqrt_rn(a);
#else
  return __builtin_sqrt(a);
#endif
}

// Natural log for x in (0, 1]: x = m * 2^e with m in [sqrt(1/2), sqrt(2)), then
// log(m) = 2 atanh(s), s = (m - 1) / (m + 1), |s| <= 0.172, series to s^25 (error < 1e-18).
LOOM_HOST_DEVICE LOOM_INLINE double Log(double x) {
  uint64_t bits;
  memcpy(&bits, &x, sizeof(bits));
  int e = static_cast<int>((bits >> 52) & 0x7ff) - 1023;
  bits = (bits & 0x000fffffffffffffull) | 0x3ff0000000000000ull;  // m in [1, 2)
  double m;
  memcpy(&m, &bits, sizeof(m));
  if (m > 1.4142135623730951) {
    m = Mul(m, 0.5);
    e += 1;
  }
  const double s = Div(Add(m, -1.0), Add(m, 1.0));
  const double s2 = Mul(s, s);
  double sum = 1.0 / 25.0;
  for (int k = 23; k >= 1; k -= 2) sum = Add(Mul(sum, s2), 1.0 / k);
  const double log_m = Mul(Mul(2.0, s), sum);
  return Add(Mul(static_cast<double>(e), 0.69314718055994530942), log_m);
}

// sin and cos of 2*pi*u for u in [0, 1): reduce to the nearest quarter turn q, so that
// x = 2*pi*u - q*pi/2 lies in [-pi/4, pi/4], then Taylor series in Horner form
// (sin to x^19, cos to x^18; truncation error < 1e-17).
LOOM_HOST_DEVICE LOOM_INLINE void SinCos2Pi(double u, double* sin_out, double* cos_out) {
  // (-1)^k / (2k+1)!  and  (-1)^k / (2k)!  for k = 0..9.
  constexpr double kSin[10] = {1.0,
                               -1.0 / 6.0,
                               1.0 / 120.0,
                               -1.0 / 5040.0,
                               1.0 / 362880.0,
                               -1.0 / 39916800.0,
                               1.0 / 6227020800.0,
                               -1.0 / 1307674368000.0,
                               1.0 / 355687428096000.0,
                               -1.0 / 121645100408832000.0};
  constexpr double kCos[10] = {1.0,
                               -1.0 / 2.0,
                               1.0 / 24.0,
                               -1.0 / 720.0,
                               1.0 / 40320.0,
                               -1.0 / 3628800.0,
                               1.0 / 479001600.0,
                               -1.0 / 87178291200.0,
                               1.0 / 20922789888000.0,
                               -1.0 / 6402373705728000.0};
  const double v = Mul(u, 4.0);
  const int64_t q = static_cast<int64_t>(Add(v, 0.5));  // v >= 0, so truncation is floor
  const double x = Mul(Add(v, -static_cast<double>(q)), 1.5707963267948966);
  const double x2 = Mul(x, x);
  double ps = kSin[9], pc = kCos[9];
  for (int k = 8; k >= 0; --k) {
    ps = Add(Mul(ps, x2), kSin[k]);
    pc = Add(Mul(pc, x2), kCos[k]);
  }
  const double s = Mul(ps, x), c = pc;
  switch (q & 3) {  // rotate by q quarter turns
    case 0:
      *sin_out = s;
      *cos_out = c;
      break;
    case 1:
      *sin_out = c;
      *cos_out = -s;
      break;
    case 2:
      *sin_out = -s;
      *cos_out = -c;
      break;
    default:
      *sin_out = -c;
      *cos_out = s;
      break;
  }
}
}  // namespace philox_internal

// The raw generator: 10 rounds on a 128-bit counter with a 64-bit key.
LOOM_HOST_DEVICE LOOM_INLINE Philox4x32Result Philox4x32(const uint32_t counter[4],
                                                         const uint32_t key[2]) {
  using namespace philox_internal;
  uint32_t c0 = counter[0], c1 = counter[1], c2 = counter[2], c3 = counter[3];
  uint32_t k0 = key[0], k1 = key[1];
  for (int round = 0; round < 10; ++round) {
    if (round > 0) {
      k0 += kW0;
      k1 += kW1;
    }
    uint32_t hi0, lo0, hi1, lo1;
    MulHiLo(kM0, c0, &hi0, &lo0);
    MulHiLo(kM1, c2, &hi1, &lo1);
    const uint32_t n0 = hi1 ^ c1 ^ k0;
    const uint32_t n2 = hi0 ^ c3 ^ k1;
    c0 = n0;
    c1 = lo1;
    c2 = n2;
    c3 = lo0;
  }
  return Philox4x32Result{{c0, c1, c2, c3}};
}

// Block `block` of stream `stream` under `seed`.
LOOM_HOST_DEVICE LOOM_INLINE Philox4x32Result PhiloxBlock(uint64_t seed, uint64_t stream,
                                                          uint64_t block) {
  const uint32_t counter[4] = {static_cast<uint32_t>(block), static_cast<uint32_t>(block >> 32),
                               static_cast<uint32_t>(stream), static_cast<uint32_t>(stream >> 32)};
  const uint32_t key[2] = {static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32)};
  return Philox4x32(counter, key);
}

// A uint32 mapped to the open interval (0, 1): ((u >> 9) + 0.5) * 2^-23, exact in float
// (23 bits plus the half fit the 24-bit significand); never 0 (safe for log), never 1.
LOOM_HOST_DEVICE LOOM_INLINE float UintToUniform(uint32_t u) {
  return (static_cast<float>(u >> 9) + 0.5f) * 1.1920928955078125e-7f;
}

// Element i of the uniform (0, 1) sequence of (seed, stream).
LOOM_HOST_DEVICE LOOM_INLINE float PhiloxUniform(uint64_t seed, uint64_t stream, uint64_t i) {
  return UintToUniform(PhiloxBlock(seed, stream, i >> 2).v[i & 3]);
}

// Element i of the standard normal sequence of (seed, stream), in double before rounding.
LOOM_HOST_DEVICE LOOM_INLINE double PhiloxNormal(uint64_t seed, uint64_t stream, uint64_t i) {
  using namespace philox_internal;
  const Philox4x32Result r = PhiloxBlock(seed, stream, i >> 1);
  const double u1 = static_cast<double>(UintToUniform(r.v[0]));
  const double u2 = static_cast<double>(UintToUniform(r.v[1]));
  const double radius = Sqrt(Mul(-2.0, Log(u1)));
  double s, c;
  SinCos2Pi(u2, &s, &c);
  return Mul(radius, (i & 1) ? s : c);
}

// Packs (purpose, a, b) into a 64-bit stream id: purpose in the top 16 bits, then a (24 bits)
// and b (24 bits). E.g. MakeStream(kStreamDropout, layer, step) — see docs/numerics.md.
LOOM_HOST_DEVICE LOOM_INLINE uint64_t MakeStream(uint32_t purpose, uint64_t a, uint64_t b) {
  return (static_cast<uint64_t>(purpose & 0xffffu) << 48) | ((a & 0xffffffull) << 24) |
         (b & 0xffffffull);
}

}  // namespace loom

#endif  // LOOM_CORE_PHILOX_H_
