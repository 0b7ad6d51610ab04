#include "tests/comm/comm_test_util.h"

#include <cmath>
#include <cstring>
#include <sstream>
#include <type_traits>

#include <glog/logging.h>
#include <gtest/gtest.h>

namespace loom::comm::testing {
namespace {

// Storage type T, its accumulation type, and the input value as double.
template <typename T>
struct Traits {
  using Acc = T;
  static Acc In(T v) { return v; }
  static T Out(Acc v) { return v; }
  static T FromDouble(double v) { return static_cast<T>(v); }
  static double ToDouble(T v) { return static_cast<double>(v); }
};
template <>
struct Traits<bf16> {
  using Acc = float;
  static float In(bf16 v) { return Bf16ToFloat(v); }
  static bf16 Out(float v) { return FloatToBf16(v); }
  static bf16 FromDouble(double v) { return FloatToBf16(static_cast<float>(v)); }
  static double ToDouble(bf16 v) { return Bf16ToFloat(v); }
};
template <>
struct Traits<f16> {
  using Acc = float;
  static float In(f16 v) { return F16ToFloat(v); }
  static f16 Out(float v) { return FloatToF16(v); }
  static f16 FromDouble(double v) { return FloatToF16(static_cast<float>(v)); }
  static double ToDouble(f16 v) { return F16ToFloat(v); }
};

// Calls f(T{}) for the element type of dtype.
template <typename F>
void Visit(DType dtype, F&& f) {
  switch (dtype) {
    case DType::kF32:
      return f(float{});
    case DType::kF64:
      return f(double{});
    case DType::kBF16:
      return f(bf16{});
    case DType::kF16:
      return f(f16{});
    case DType::kI32:
      return f(int32_t{});
    case DType::kI64:
      return f(int64_t{});
    case DType::kU8:
      return f(uint8_t{});
  }
  LOG(FATAL) << "bad dtype";
}

template <typename T>
T InputValue(uint64_t seed, int rank, int64_t i) {
  const uint64_t h = Mix(seed, static_cast<uint64_t>(rank), static_cast<uint64_t>(i));
  if constexpr (std::is_integral_v<T>) {
    if constexpr (sizeof(T) == 4) {
      return static_cast<T>(static_cast<int64_t>(h % 2000001) - 1000000);
    } else {
      return static_cast<T>(static_cast<int64_t>(h >> 5) - (int64_t{1} << 58));
    }
  } else {
    const double mant = static_cast<double>((h >> 40) & 0xffffff) / 16777216.0;  // [0, 1)
    const int exponent = static_cast<int>((h >> 8) & 7) - 3;                     // -3..4
    const double v = std::ldexp(0.5 + 0.5 * mant, exponent) * ((h & 1) ? -1.0 : 1.0);
    return Traits<T>::FromDouble(v);
  }
}

template <typename A>
A MaxPropagatingNan(A a, A b) {
  return (a > b || a != a) ? a : b;
}

}  // namespace

uint64_t Mix(uint64_t seed, uint64_t a, uint64_t b, uint64_t c) {
  uint64_t x = seed;
  for (uint64_t v : {a, b, c}) {
    x += 0x9e3779b97f4a7c15ull + v;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    x ^= x >> 31;
  }
  return x;
}

void FillInput(DType dtype, uint64_t seed, int rank, int64_t first, int64_t n, void* out) {
  Visit(dtype, [&](auto tag) {
    using T = decltype(tag);
    if constexpr (std::is_same_v<T, uint8_t>) {
      LOG(FATAL) << "FillInput: u8 is not a reduction dtype";
    } else {
      T* o = static_cast<T*>(out);
      for (int64_t j = 0; j < n; ++j) o[j] = InputValue<T>(seed, rank, first + j);
    }
  });
}

void FillExpected(DType dtype, ReduceOp op, uint64_t seed, int nranks, int64_t first, int64_t n,
                  void* out) {
  Visit(dtype, [&](auto tag) {
    using T = decltype(tag);
    if constexpr (std::is_same_v<T, uint8_t>) {
      LOG(FATAL) << "FillExpected: u8 is not a reduction dtype";
    } else {
      using Tr = Traits<T>;
      T* o = static_cast<T*>(out);
      for (int64_t j = 0; j < n; ++j) {
        typename Tr::Acc acc = Tr::In(InputValue<T>(seed, 0, first + j));
        for (int r = 1; r < nranks; ++r) {
          const typename Tr::Acc x = Tr::In(InputValue<T>(seed, r, first + j));
          acc = op == ReduceOp::kSum ? acc + x : MaxPropagatingNan(acc, x);
        }
        o[j] = Tr::Out(acc);
      }
    }
  });
}

std::vector<double> AbsSums(DType dtype, uint64_t seed, int nranks, int64_t first, int64_t n) {
  std::vector<double> sums(static_cast<size_t>(n), 0.0);
  Visit(dtype, [&](auto tag) {
    using T = decltype(tag);
    if constexpr (!std::is_same_v<T, uint8_t>) {
      for (int64_t j = 0; j < n; ++j) {
        for (int r = 0; r < nranks; ++r) {
          sums[j] += std::fabs(Traits<T>::ToDouble(InputValue<T>(seed, r, first + j)));
        }
      }
    }
  });
  return sums;
}

void FillBits(DType dtype, uint64_t seed, uint64_t a, uint64_t b, int64_t first, int64_t n,
              void* out) {
  const int64_t esize = DTypeSize(dtype);
  char* o = static_cast<char*>(out);
  for (int64_t j = 0; j < n; ++j) {
    const uint64_t h = Mix(seed, a, b, static_cast<uint64_t>(first + j));
    std::memcpy(o + j * esize, &h, static_cast<size_t>(esize));
  }
}

double ElementAsDouble(DType dtype, const void* buffer, int64_t i) {
  double d = 0;
  Visit(dtype, [&](auto tag) {
    using T = decltype(tag);
    if constexpr (std::is_same_v<T, uint8_t>) {
      d = static_cast<const uint8_t*>(buffer)[i];
    } else {
      d = Traits<T>::ToDouble(static_cast<const T*>(buffer)[i]);
    }
  });
  return d;
}

std::string ElementString(DType dtype, const void* buffer, int64_t i) {
  const int64_t esize = DTypeSize(dtype);
  uint64_t bits = 0;
  std::memcpy(&bits, static_cast<const char*>(buffer) + i * esize, static_cast<size_t>(esize));
  std::ostringstream s;
  s.precision(17);
  s << ElementAsDouble(dtype, buffer, i) << " (0x" << std::hex << bits << ")";
  return s.str();
}

int64_t CountBitMismatches(DType dtype, const void* got, const void* want, int64_t n,
                           const std::string& what) {
  const int64_t esize = DTypeSize(dtype);
  const char* g = static_cast<const char*>(got);
  const char* w = static_cast<const char*>(want);
  int64_t bad = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (std::memcmp(g + i * esize, w + i * esize, static_cast<size_t>(esize)) != 0) {
      if (++bad <= 5) {
        ADD_FAILURE() << what << ": element " << i << " of " << n << " is "
                      << ElementString(dtype, got, i) << ", expected "
                      << ElementString(dtype, want, i);
      }
    }
  }
  return bad;
}

int64_t CountFarElements(DType dtype, const void* got, const void* want, int64_t n,
                         const std::vector<double>& tol, const std::string& what) {
  if (!IsFloatingPoint(dtype)) return CountBitMismatches(dtype, got, want, n, what);
  int64_t bad = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double g = ElementAsDouble(dtype, got, i), w = ElementAsDouble(dtype, want, i);
    if (!(std::fabs(g - w) <= tol[i])) {
      if (++bad <= 5) {
        ADD_FAILURE() << what << ": element " << i << " of " << n << " is "
                      << ElementString(dtype, got, i) << ", expected "
                      << ElementString(dtype, want, i) << " within " << tol[i];
      }
    }
  }
  return bad;
}

double UnitRoundoff(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return std::ldexp(1.0, -24);
    case DType::kF64:
      return std::ldexp(1.0, -53);
    case DType::kBF16:
      return std::ldexp(1.0, -8);
    case DType::kF16:
      return std::ldexp(1.0, -11);
    default:
      return 0.0;
  }
}

const std::vector<DType>& ReduceDTypes() {
  static const std::vector<DType> kTypes = {DType::kF32, DType::kF64, DType::kBF16,
                                            DType::kF16, DType::kI32, DType::kI64};
  return kTypes;
}

const std::vector<DType>& AllDTypes() {
  static const std::vector<DType> kTypes = {DType::kF32, DType::kF64, DType::kBF16, DType::kF16,
                                            DType::kI32, DType::kI64, DType::kU8};
  return kTypes;
}

}  // namespace loom::comm::testing
