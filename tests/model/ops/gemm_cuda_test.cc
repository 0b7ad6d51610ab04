// CPU vs CUDA: Gemm, GemmBatched, GemmBatchedSum, Linear (every activation, with and without
// bias: the cuBLASLt epilogue and the fallback), fp32/fp64 typed and bf16 by the bf16 rule.
#include <gtest/gtest.h>

#include "csrc/model/ops/activation.h"
#include "csrc/model/ops/gemm.h"
#include "csrc/model/ops/linear.h"
#include "tests/model/ops/ops_test_util.h"
#include "tests/testing/gpu_test_util.h"

namespace loom::ops {
namespace {

using test::Cast;
using test::Gpu;
using test::kCpu;
using test::Random;
using test::ToGpu;

template <typename T>
class GemmCudaTest : public ::testing::Test {};
using FloatTypes = ::testing::Types<float, double>;
TYPED_TEST_SUITE(GemmCudaTest, FloatTypes);

TYPED_TEST(GemmCudaTest, GemmAllTransposesMatchCpu) {
  LOOM_SKIP_WITHOUT_GPU();
  const DType dt = DTypeOf<TypeParam>::value;
  const int64_t m = 67, n = 45, k = 129;
  for (bool ta : {false, true}) {
    for (bool tb : {false, true}) {
      const Tensor a = Random(ta ? Shape{k, m} : Shape{m, k}, dt, 1);
      const Tensor b = Random(tb ? Shape{n, k} : Shape{k, n}, dt, 2);
      const Tensor c0 = Random(Shape{m, n}, dt, 3);
      GemmArgs args;
      args.trans_a = ta;
      args.trans_b = tb;
      args.alpha = 0.7;
      args.beta = -1.25;
      Tensor c_cpu = c0.To(Device::Cpu()), c_gpu = ToGpu(c0);
      Gemm(kCpu, args, a, b, c_cpu);
      Gemm(Gpu(), args, ToGpu(a), ToGpu(b), c_gpu);
      test::SyncGpu();
      LOOM_EXPECT_REL_NEAR(c_gpu, c_cpu, test::CrossDeviceTolerance(dt)) << ta << tb;
    }
  }
}

TYPED_TEST(GemmCudaTest, BatchedAndBatchedSumMatchCpu) {
  LOOM_SKIP_WITHOUT_GPU();
  const DType dt = DTypeOf<TypeParam>::value;
  const int64_t g = 33, m = 10, n = 12, k = 16;
  const Tensor a = Random(Shape{g, m, k}, dt, 4);
  const Tensor w = Random(Shape{n, k}, dt, 5);  // broadcast
  const Tensor bb = Random(Shape{g, n, k}, dt, 6);
  GemmArgs args;
  args.trans_b = true;
  for (const Tensor* b : {&w, &bb}) {
    Tensor c_cpu = Tensor::Empty(Shape{g, m, n}, dt), c_gpu = test::GpuEmpty(Shape{g, m, n}, dt);
    GemmBatched(kCpu, args, a, *b, c_cpu);
    GemmBatched(Gpu(), args, ToGpu(a), ToGpu(*b), c_gpu);
    test::SyncGpu();
    LOOM_EXPECT_REL_NEAR(c_gpu, c_cpu, test::CrossDeviceTolerance(dt));
  }
  // grad_W (M, N) += Σ_g A[g] B[g]ᵀ
  const Tensor s0 = Random(Shape{m, n}, dt, 7);
  Tensor s_cpu = s0.To(Device::Cpu()), s_gpu = ToGpu(s0);
  GemmArgs acc = args;
  acc.beta = 1.0;
  GemmBatchedSum(kCpu, acc, a, bb, s_cpu);
  GemmBatchedSum(Gpu(), acc, ToGpu(a), ToGpu(bb), s_gpu);
  test::SyncGpu();
  LOOM_EXPECT_REL_NEAR(s_gpu, s_cpu, test::CrossDeviceTolerance(dt));
}

TYPED_TEST(GemmCudaTest, LinearEveryActivationMatchesCpu) {
  LOOM_SKIP_WITHOUT_GPU();
  const DType dt = DTypeOf<TypeParam>::value;
  const int64_t b = 6, t = 50, k = 96, n = 80;
  const Tensor x = Random(Shape{b, t, k}, dt, 8), w = Random(Shape{n, k}, dt, 9),
               bias = Random(Shape{n}, dt, 10), gz = Random(Shape{b, t, n}, dt, 11);
  for (Activation act : {Activation::kIdentity, Activation::kRelu, Activation::kSilu,
                         Activation::kSigmoid, Activation::kTanh}) {
    for (bool with_bias : {true, false}) {
      for (bool with_pre : {true, false}) {
        Tensor y_cpu = Tensor::Empty(Shape{b, t, n}, dt),
               pre_cpu = Tensor::Empty(Shape{b, t, n}, dt);
        Tensor y_gpu = test::GpuEmpty(Shape{b, t, n}, dt),
               pre_gpu = test::GpuEmpty(Shape{b, t, n}, dt);
        const Tensor bias_gpu = ToGpu(bias);
        LinearForward(kCpu, LinearArgs{act}, x, w, with_bias ? bias.cview() : ConstTensorView(),
                      y_cpu, with_pre ? pre_cpu.view() : TensorView());
        LinearForward(Gpu(), LinearArgs{act}, ToGpu(x), ToGpu(w),
                      with_bias ? bias_gpu.cview() : ConstTensorView(), y_gpu,
                      with_pre ? pre_gpu.view() : TensorView());
        test::SyncGpu();
        LOOM_EXPECT_REL_NEAR(y_gpu, y_cpu, test::CrossDeviceTolerance(dt))
            << ActivationName(act) << " bias " << with_bias << " pre " << with_pre;
        if (with_pre) {
          LOOM_EXPECT_REL_NEAR(pre_gpu, pre_cpu, test::CrossDeviceTolerance(dt));
        }
      }
    }
  }
  // Backward: grad_x (=), grad_W and grad_b (+=) onto the same starting values.
  const Tensor gw0 = Random(Shape{n, k}, dt, 12), gb0 = Random(Shape{n}, dt, 13);
  Tensor gx_cpu = Tensor::Empty(x.spec()), gw_cpu = gw0.To(Device::Cpu()),
         gb_cpu = gb0.To(Device::Cpu());
  Tensor gx_gpu = test::GpuEmpty(x.shape(), dt), gw_gpu = ToGpu(gw0), gb_gpu = ToGpu(gb0);
  LinearBackward(kCpu, gz, x, w, gx_cpu, gw_cpu, gb_cpu);
  LinearBackward(Gpu(), ToGpu(gz), ToGpu(x), ToGpu(w), gx_gpu, gw_gpu, gb_gpu);
  test::SyncGpu();
  LOOM_EXPECT_REL_NEAR(gx_gpu, gx_cpu, test::CrossDeviceTolerance(dt));
  LOOM_EXPECT_REL_NEAR(gw_gpu, gw_cpu, test::CrossDeviceTolerance(dt));
  LOOM_EXPECT_REL_NEAR(gb_gpu, gb_cpu, test::CrossDeviceTolerance(dt));
}

// bf16 inputs, fp32 accumulation: within 2x the error of the naive bf16 computation.
TEST(GemmCudaBf16Test, GemmAndLinearFollowTheBf16Rule) {
  LOOM_SKIP_WITHOUT_GPU();
  const int64_t r = 128, k = 256, n = 96;
  const Tensor x16 = Random(Shape{r, k}, DType::kBF16, 14);
  const Tensor w16 = Random(Shape{n, k}, DType::kBF16, 15);
  const Tensor b16 = Random(Shape{n}, DType::kBF16, 16);
  const Tensor x64 = Cast(x16, DType::kF64), w64 = Cast(w16, DType::kF64),
               b64 = Cast(b16, DType::kF64);
  const Tensor x32 = Cast(x16, DType::kF32), w32 = Cast(w16, DType::kF32),
               b32 = Cast(b16, DType::kF32);
  for (Activation act : {Activation::kIdentity, Activation::kRelu, Activation::kSilu}) {
    Tensor ref = Tensor::Empty(Shape{r, n}, DType::kF64),
           naive = Tensor::Empty(Shape{r, n}, DType::kF32);
    LinearForward(kCpu, LinearArgs{act}, x64, w64, b64, ref, TensorView());
    LinearForward(kCpu, LinearArgs{act}, x32, w32, b32, naive, TensorView());
    Tensor y = test::GpuEmpty(Shape{r, n}, DType::kBF16);
    LinearForward(Gpu(), LinearArgs{act}, ToGpu(x16), ToGpu(w16), ToGpu(b16), y, TensorView());
    test::SyncGpu();
    const test::Bf16Verdict v = test::CheckBf16Rule(y, Cast(naive, DType::kBF16), ref);
    EXPECT_TRUE(v.ok) << ActivationName(act) << ": " << v.ToString();
  }
  // Plain GEMM with a bf16 and an f32 output.
  GemmArgs args;
  args.trans_b = true;
  Tensor ref = Tensor::Empty(Shape{r, n}, DType::kF64),
         naive = Tensor::Empty(Shape{r, n}, DType::kF32);
  Gemm(kCpu, args, x64, w64, ref);
  Gemm(kCpu, args, x32, w32, naive);
  Tensor c16 = test::GpuEmpty(Shape{r, n}, DType::kBF16),
         c32 = test::GpuEmpty(Shape{r, n}, DType::kF32);
  Gemm(Gpu(), args, ToGpu(x16), ToGpu(w16), c16);
  Gemm(Gpu(), args, ToGpu(x16), ToGpu(w16), c32);
  test::SyncGpu();
  const test::Bf16Verdict v = test::CheckBf16Rule(c16, Cast(naive, DType::kBF16), ref);
  EXPECT_TRUE(v.ok) << v.ToString();
  LOOM_EXPECT_REL_NEAR(c32, naive, 1e-5);  // f32 output: the fp32 rule against fp32 on CPU
}

}  // namespace
}  // namespace loom::ops
