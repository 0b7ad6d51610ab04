// CPU and CUDA drop exactly the same elements (bit-for-bit masks), and for f32/f64 produce the
// same output bits.
#include <cstring>

#include <gtest/gtest.h>

#include "csrc/core/philox.h"
#include "csrc/core/rng.h"
#include "csrc/model/ops/dropout.h"
#include "tests/model/ops/ops_test_util.h"
#include "tests/testing/gpu_test_util.h"

namespace loom::ops {
namespace {

using test::Gpu;
using test::kCpu;
using test::ToGpu;

template <typename T>
void ExpectSameBits(const Tensor& a, const Tensor& b) {
  const std::vector<T> x = a.ToVector<T>(), y = b.ToVector<T>();
  ASSERT_EQ(x.size(), y.size());
  int64_t mismatches = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    if (std::memcmp(&x[i], &y[i], sizeof(T)) != 0 && ++mismatches <= 5) {
      ADD_FAILURE() << "element " << i << " differs";
    }
  }
  EXPECT_EQ(mismatches, 0);
}

TEST(DropoutCudaTest, MaskAndOutputAreBitIdenticalToCpu) {
  LOOM_SKIP_WITHOUT_GPU();
  const int64_t n = 3 * 100003;  // not a multiple of 4
  for (float p : {0.1f, 0.5f, 0.77f}) {
    DropoutArgs args;
    args.p = p;
    args.seed = 0x5EED;
    args.stream = MakeStream(kRngDropout, 4, 12345);
    Tensor k_cpu = Tensor::Empty(Shape{n}, DType::kU8),
           k_gpu = test::GpuEmpty(Shape{n}, DType::kU8);
    DropoutMask(kCpu, args, k_cpu);
    DropoutMask(Gpu(), args, k_gpu);
    test::SyncGpu();
    ExpectSameBits<uint8_t>(k_cpu, k_gpu);

    const Tensor x = test::Random(Shape{3, 100003}, DType::kF32, 1);
    Tensor y_cpu = Tensor::Empty(x.spec()), y_gpu = test::GpuEmpty(x.shape(), DType::kF32);
    DropoutForward(kCpu, args, x, y_cpu);
    DropoutForward(Gpu(), args, ToGpu(x), y_gpu);
    Tensor g_cpu = Tensor::Empty(x.spec()), g_gpu = test::GpuEmpty(x.shape(), DType::kF32);
    DropoutBackward(kCpu, args, x, g_cpu);
    DropoutBackward(Gpu(), args, ToGpu(x), g_gpu);
    const Tensor x64 = test::Cast(x, DType::kF64);
    Tensor d_cpu = Tensor::Empty(x64.spec()), d_gpu = test::GpuEmpty(x.shape(), DType::kF64);
    DropoutForward(kCpu, args, x64, d_cpu);
    DropoutForward(Gpu(), args, ToGpu(x64), d_gpu);
    test::SyncGpu();
    ExpectSameBits<float>(y_cpu, y_gpu);
    ExpectSameBits<float>(g_cpu, g_gpu);
    ExpectSameBits<double>(d_cpu, d_gpu);

    // bf16 keeps the same mask.
    const Tensor x16 = test::Cast(x, DType::kBF16);
    Tensor y16 = test::GpuEmpty(x.shape(), DType::kBF16);
    DropoutForward(Gpu(), args, ToGpu(x16), y16);
    test::SyncGpu();
    const std::vector<double> a = test::AsDoubles(y16), b = test::AsDoubles(y_cpu);
    for (size_t i = 0; i < a.size(); ++i) ASSERT_EQ(a[i] == 0.0, b[i] == 0.0) << i;
  }
}

}  // namespace
}  // namespace loom::ops
