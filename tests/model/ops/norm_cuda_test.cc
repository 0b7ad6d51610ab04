// CPU vs CUDA: LayerNorm and Softmax (with masks), fp32/fp64 typed and bf16 by the bf16 rule.
#include <gtest/gtest.h>

#include "csrc/model/ops/layer_norm.h"
#include "csrc/model/ops/softmax.h"
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
class NormCudaTest : public ::testing::Test {};
using FloatTypes = ::testing::Types<float, double>;
TYPED_TEST_SUITE(NormCudaTest, FloatTypes);

struct LayerNormRun {
  Tensor y, mean, rstd, gx, gg, gb;
};

// Runs forward and backward of LayerNorm on `ctx` from host inputs; results stay on ctx.
LayerNormRun RunLayerNorm(const ExecContext& ctx, const Tensor& x, const Tensor& gamma,
                          const Tensor& beta, const Tensor& gy, const Tensor& gg0,
                          const Tensor& gb0) {
  const Device dev = ctx.device;
  const int64_t rows = x.numel() / x.dim(-1);
  const DType st = gamma.dtype();
  LayerNormRun r;
  r.y = Tensor::Empty(x.spec(), dev);
  r.mean = Tensor::Empty(Shape{rows}, st, dev);
  r.rstd = Tensor::Empty(Shape{rows}, st, dev);
  r.gx = Tensor::Empty(x.spec(), dev);
  r.gg = gg0.To(dev);
  r.gb = gb0.To(dev);
  const Tensor xd = x.To(dev), gd = gamma.To(dev), bd = beta.To(dev), gyd = gy.To(dev);
  LayerNormForward(ctx, LayerNormArgs{}, xd, gd, bd, r.y, r.mean, r.rstd);
  LayerNormBackward(ctx, gyd, xd, gd, r.mean, r.rstd, r.gx, r.gg, r.gb);
  if (dev.is_cuda()) test::SyncGpu();
  return r;
}

TYPED_TEST(NormCudaTest, LayerNormMatchesCpu) {
  LOOM_SKIP_WITHOUT_GPU();
  const DType dt = DTypeOf<TypeParam>::value;
  for (int64_t c : {64, 200, 1000}) {  // one to many elements per lane
    const int64_t rows = 3000;
    const Tensor x = Random(Shape{rows, c}, dt, 1, -2, 4), gy = Random(Shape{rows, c}, dt, 2);
    const Tensor gamma = Random(Shape{c}, dt, 3, 0.5, 1.5), beta = Random(Shape{c}, dt, 4);
    const Tensor gg0 = Random(Shape{c}, dt, 5), gb0 = Random(Shape{c}, dt, 6);
    const LayerNormRun cpu = RunLayerNorm(kCpu, x, gamma, beta, gy, gg0, gb0);
    const LayerNormRun gpu = RunLayerNorm(Gpu(), x, gamma, beta, gy, gg0, gb0);
    const double tol = test::CrossDeviceTolerance(dt);
    LOOM_EXPECT_REL_NEAR(gpu.y, cpu.y, tol) << "C " << c;
    LOOM_EXPECT_REL_NEAR(gpu.mean, cpu.mean, tol);
    LOOM_EXPECT_REL_NEAR(gpu.rstd, cpu.rstd, tol);
    LOOM_EXPECT_REL_NEAR(gpu.gx, cpu.gx, tol);
    LOOM_EXPECT_REL_NEAR(gpu.gg, cpu.gg, tol);
    LOOM_EXPECT_REL_NEAR(gpu.gb, cpu.gb, tol);
  }
}

TEST(NormCudaBf16Test, LayerNormFollowsTheBf16Rule) {
  LOOM_SKIP_WITHOUT_GPU();
  const int64_t rows = 2048, c = 64;
  const Tensor x16 = Random(Shape{rows, c}, DType::kBF16, 7, -2, 4);
  const Tensor gy16 = Random(Shape{rows, c}, DType::kBF16, 8);
  const Tensor gamma = Random(Shape{c}, DType::kF32, 9, 0.5, 1.5),
               beta = Random(Shape{c}, DType::kF32, 10);
  const Tensor zeros = Tensor::Zeros(Shape{c}, DType::kF32);
  const LayerNormRun ref =
      RunLayerNorm(kCpu, Cast(x16, DType::kF64), Cast(gamma, DType::kF64), Cast(beta, DType::kF64),
                   Cast(gy16, DType::kF64), Cast(zeros, DType::kF64), Cast(zeros, DType::kF64));
  const LayerNormRun naive = RunLayerNorm(kCpu, Cast(x16, DType::kF32), gamma, beta,
                                          Cast(gy16, DType::kF32), zeros, zeros);
  const LayerNormRun gpu = RunLayerNorm(Gpu(), x16, gamma, beta, gy16, zeros, zeros);
  const test::Bf16Verdict vy = test::CheckBf16Rule(gpu.y, Cast(naive.y, DType::kBF16), ref.y);
  EXPECT_TRUE(vy.ok) << "y: " << vy.ToString();
  const test::Bf16Verdict vx = test::CheckBf16Rule(gpu.gx, Cast(naive.gx, DType::kBF16), ref.gx);
  EXPECT_TRUE(vx.ok) << "grad_x: " << vx.ToString();
  // f32 outputs of a bf16 op: the fp32 rule against the fp32 CPU run on the same inputs.
  LOOM_EXPECT_REL_NEAR(gpu.gg, naive.gg, 1e-5);
  LOOM_EXPECT_REL_NEAR(gpu.gb, naive.gb, 1e-5);
  LOOM_EXPECT_REL_NEAR(gpu.rstd, naive.rstd, 1e-5);
}

TYPED_TEST(NormCudaTest, SoftmaxWithMasksMatchesCpu) {
  LOOM_SKIP_WITHOUT_GPU();
  const DType dt = DTypeOf<TypeParam>::value;
  const int64_t b = 8, h = 2, tq = 30, tk = 70;
  const Tensor x = Random(Shape{b, h, tq, tk}, dt, 11, -5, 5);
  const Tensor gy = Random(Shape{b, h, tq, tk}, dt, 12);
  const Tensor add = Random(Shape{tq, tk}, dt, 13);
  std::vector<double> km(b * tk, 1.0);
  for (int64_t j = 0; j < 20; ++j) km[j] = 0;           // batch 0: pre-padding
  for (int64_t j = 0; j < tk; ++j) km[3 * tk + j] = 0;  // batch 3: all masked
  const Tensor keep = test::FromDoubles(km, Shape{b, tk}, DType::kU8);
  const SoftmaxArgs args{0.25f};
  Tensor y_cpu = Tensor::Empty(x.spec()), gx_cpu = Tensor::Empty(x.spec());
  SoftmaxForward(kCpu, args, x, add, keep, y_cpu);
  SoftmaxBackward(kCpu, args, gy, y_cpu, gx_cpu);
  Tensor y_gpu = test::GpuEmpty(x.shape(), dt), gx_gpu = test::GpuEmpty(x.shape(), dt);
  SoftmaxForward(Gpu(), args, ToGpu(x), ToGpu(add), ToGpu(keep), y_gpu);
  SoftmaxBackward(Gpu(), args, ToGpu(gy), y_gpu, gx_gpu);
  test::SyncGpu();
  LOOM_EXPECT_REL_NEAR(y_gpu, y_cpu, test::CrossDeviceTolerance(dt));
  LOOM_EXPECT_REL_NEAR(gx_gpu, gx_cpu, test::CrossDeviceTolerance(dt));
  const std::vector<double> yv = test::AsDoubles(y_gpu);
  for (int64_t i = 3 * h * tq * tk; i < 4 * h * tq * tk; ++i) ASSERT_EQ(yv[i], 0.0);
}

TEST(NormCudaBf16Test, SoftmaxFollowsTheBf16Rule) {
  LOOM_SKIP_WITHOUT_GPU();
  const int64_t rows = 512, c = 300;
  const Tensor x16 = Random(Shape{rows, c}, DType::kBF16, 14, -8, 8);
  const Tensor gy16 = Random(Shape{rows, c}, DType::kBF16, 15);
  // fp64 reference.
  const Tensor x64 = Cast(x16, DType::kF64), gy64 = Cast(gy16, DType::kF64);
  Tensor y64 = Tensor::Empty(x64.spec()), gx64 = Tensor::Empty(x64.spec());
  SoftmaxForward(kCpu, SoftmaxArgs{}, x64, ConstTensorView(), ConstTensorView(), y64);
  SoftmaxBackward(kCpu, SoftmaxArgs{}, gy64, y64, gx64);
  // Naive bf16: each op in fp32 from bf16 tensors, its output stored as bf16 (the backward
  // reads the stored bf16 y, as it would in a bf16 training step).
  const Tensor x32 = Cast(x16, DType::kF32), gy32 = Cast(gy16, DType::kF32);
  Tensor y32 = Tensor::Empty(x32.spec()), gx32 = Tensor::Empty(x32.spec());
  SoftmaxForward(kCpu, SoftmaxArgs{}, x32, ConstTensorView(), ConstTensorView(), y32);
  const Tensor y_naive = Cast(y32, DType::kBF16);
  SoftmaxBackward(kCpu, SoftmaxArgs{}, gy32, Cast(y_naive, DType::kF32), gx32);
  // The kernel.
  Tensor y = test::GpuEmpty(x16.shape(), DType::kBF16),
         gx = test::GpuEmpty(x16.shape(), DType::kBF16);
  SoftmaxForward(Gpu(), SoftmaxArgs{}, ToGpu(x16), ConstTensorView(), ConstTensorView(), y);
  SoftmaxBackward(Gpu(), SoftmaxArgs{}, ToGpu(gy16), y, gx);
  test::SyncGpu();
  const test::Bf16Verdict vy = test::CheckBf16Rule(y, y_naive, y64);
  EXPECT_TRUE(vy.ok) << "y: " << vy.ToString();
  const test::Bf16Verdict vx = test::CheckBf16Rule(gx, Cast(gx32, DType::kBF16), gx64);
  EXPECT_TRUE(vx.ok) << "grad_x: " << vx.ToString();
}

}  // namespace
}  // namespace loom::ops
