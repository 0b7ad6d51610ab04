// Helpers for the op tests: random tensors, dtype conversions, error measures, and the
// CPU-vs-CUDA tolerance rules of docs/numerics.md.
#ifndef LOOM_TESTS_MODEL_OPS_OPS_TEST_UTIL_H_
#define LOOM_TESTS_MODEL_OPS_OPS_TEST_UTIL_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "csrc/core/gpu.h"
#include "csrc/core/philox.h"
#include "csrc/core/rng.h"
#include "csrc/core/tensor.h"

namespace loom::ops::test {

inline const ExecContext kCpu = ExecContext::Cpu();

// The values of any host or device tensor (f32, f64, bf16, u8, i32, i64) as doubles.
inline std::vector<double> AsDoubles(const Tensor& t) {
  const Tensor h = t.device().is_cpu() ? t : t.To(Device::Cpu());
  std::vector<double> out(static_cast<size_t>(h.numel()));
  for (int64_t i = 0; i < h.numel(); ++i) {
    switch (h.dtype()) {
      case DType::kF32:
        out[i] = h.data<float>()[i];
        break;
      case DType::kF64:
        out[i] = h.data<double>()[i];
        break;
      case DType::kBF16:
        out[i] = Bf16ToFloat(h.data<bf16>()[i]);
        break;
      case DType::kU8:
        out[i] = h.data<uint8_t>()[i];
        break;
      case DType::kI32:
        out[i] = h.data<int32_t>()[i];
        break;
      case DType::kI64:
        out[i] = static_cast<double>(h.data<int64_t>()[i]);
        break;
      default:
        ADD_FAILURE() << "AsDoubles: " << DTypeName(h.dtype());
        return out;
    }
  }
  return out;
}

// A host tensor of `dtype` holding `values` (rounded to nearest; bf16 through fp32).
inline Tensor FromDoubles(const std::vector<double>& values, const Shape& shape, DType dtype) {
  Tensor t = Tensor::Empty(shape, dtype);
  for (int64_t i = 0; i < t.numel(); ++i) {
    switch (dtype) {
      case DType::kF32:
        t.data<float>()[i] = static_cast<float>(values[i]);
        break;
      case DType::kF64:
        t.data<double>()[i] = values[i];
        break;
      case DType::kBF16:
        t.data<bf16>()[i] = FloatToBf16(static_cast<float>(values[i]));
        break;
      case DType::kU8:
        t.data<uint8_t>()[i] = static_cast<uint8_t>(values[i]);
        break;
      default:
        ADD_FAILURE() << "FromDoubles: " << DTypeName(dtype);
        return t;
    }
  }
  return t;
}

// Host copy of t converted to dtype.
inline Tensor Cast(const Tensor& t, DType dtype) {
  return FromDoubles(AsDoubles(t), t.shape(), dtype);
}

// Uniform [lo, hi) values from Philox (seed 1234, test stream `id`), as a host tensor of
// `dtype`. For f32/bf16 the values are generated in f64 and rounded, so Cast(t, kF64) holds
// exactly the values the low-precision tensor holds.
inline Tensor Random(const Shape& shape, DType dtype, uint64_t id, double lo = -1.0,
                     double hi = 1.0) {
  Tensor d = Tensor::Empty(shape, DType::kF64);
  FillUniform(ExecContext::Cpu(), d, 1234, MakeStream(kRngTest, id, 0), lo, hi);
  return dtype == DType::kF64 ? d : Cast(d, dtype);
}

// Values away from a kink: |v| in [margin, hi), random sign.
inline Tensor RandomAwayFromZero(const Shape& shape, DType dtype, uint64_t id, double margin,
                                 double hi) {
  std::vector<double> v = AsDoubles(Random(shape, DType::kF64, id, -1.0, 1.0));
  for (double& x : v) x = (x < 0 ? -1.0 : 1.0) * (margin + std::fabs(x) * (hi - margin));
  return FromDoubles(v, shape, dtype);
}

inline double MaxAbs(const std::vector<double>& v) {
  double m = 0.0;
  for (double x : v) m = std::max(m, std::fabs(x));
  return m;
}

inline double MaxAbsDiff(const std::vector<double>& a, const std::vector<double>& b) {
  EXPECT_EQ(a.size(), b.size());
  double m = 0.0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    const double d = std::fabs(a[i] - b[i]);
    m = std::isnan(d) ? INFINITY : std::max(m, d);
  }
  return m;
}

// The tensor-wise relative error of docs/numerics.md: max|got − ref| / max(max|ref|, 1e-6).
inline double RelError(const std::vector<double>& got, const std::vector<double>& ref) {
  return MaxAbsDiff(got, ref) / std::max(MaxAbs(ref), 1e-6);
}
inline double RelError(const Tensor& got, const Tensor& ref) {
  return RelError(AsDoubles(got), AsDoubles(ref));
}

// Relative tolerance of a CPU-vs-CUDA comparison by dtype (docs/numerics.md).
inline double CrossDeviceTolerance(DType dtype) { return dtype == DType::kF64 ? 1e-12 : 1e-5; }

// The bf16 rule (docs/numerics.md, after flash-attention): the kernel's error against the
// fp64 reference may be at most twice the error of the naive bf16 computation (the op
// evaluated in fp32 on the same bf16 inputs, output rounded to bf16), plus 1e-6·max|ref| so
// that an exactly representable result does not demand bit-exactness.
struct Bf16Verdict {
  double kernel_error = 0.0, naive_error = 0.0, bound = 0.0;
  bool ok = false;
  std::string ToString() const {
    std::ostringstream os;
    os << "bf16 rule: max|kernel − ref64| = " << kernel_error << ", naive bf16 error "
       << naive_error << ", bound 2·naive + floor = " << bound << (ok ? " (ok)" : " (FAILED)");
    return os.str();
  }
};
inline Bf16Verdict CheckBf16Rule(const Tensor& kernel, const Tensor& naive, const Tensor& ref64) {
  const std::vector<double> k = AsDoubles(kernel), n = AsDoubles(naive), r = AsDoubles(ref64);
  Bf16Verdict v;
  v.kernel_error = MaxAbsDiff(k, r);
  v.naive_error = MaxAbsDiff(n, r);
  v.bound = 2.0 * v.naive_error + 1e-6 * MaxAbs(r);
  v.ok = v.kernel_error <= v.bound;
  return v;
}

inline ExecContext Gpu() { return ExecContext::Cuda(0); }
inline Tensor ToGpu(const Tensor& t) { return t.To(Device::Cuda(0)); }
inline Tensor GpuEmpty(const Shape& shape, DType dtype) {
  return Tensor::Empty(shape, dtype, Device::Cuda(0));
}
inline Tensor GpuZeros(const Shape& shape, DType dtype) {
  return Tensor::Zeros(shape, dtype, Device::Cuda(0));
}
inline void SyncGpu() { gpu::DeviceSynchronize(); }

}  // namespace loom::ops::test

// EXPECT that got (any device/dtype) is within `tol` relative error of ref; more context can
// be streamed on: LOOM_EXPECT_REL_NEAR(y, ref, 1e-5) << "row " << i;
#define LOOM_EXPECT_REL_NEAR(got, ref, tol) \
  EXPECT_LE(::loom::ops::test::RelError((got), (ref)), (tol)) << #got " vs " #ref " "

#endif  // LOOM_TESTS_MODEL_OPS_OPS_TEST_UTIL_H_
