// CPU vs CUDA: activations, element-wise ops, reductions, token copies, RoPE and the BCE loss.
#include <gtest/gtest.h>

#include "csrc/model/ops/activation.h"
#include "csrc/model/ops/bce_loss.h"
#include "csrc/model/ops/elementwise.h"
#include "csrc/model/ops/reduce.h"
#include "csrc/model/ops/rope.h"
#include "csrc/model/ops/tokens.h"
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
class ElementwiseCudaTest : public ::testing::Test {};
using FloatTypes = ::testing::Types<float, double>;
TYPED_TEST_SUITE(ElementwiseCudaTest, FloatTypes);

constexpr Activation kAllActivations[] = {Activation::kIdentity, Activation::kRelu,
                                          Activation::kSilu, Activation::kSigmoid,
                                          Activation::kTanh};

TYPED_TEST(ElementwiseCudaTest, ActivationsMatchCpu) {
  LOOM_SKIP_WITHOUT_GPU();
  const DType dt = DTypeOf<TypeParam>::value;
  const Tensor x = Random(Shape{1000, 37}, dt, 1, -10, 10), g = Random(Shape{1000, 37}, dt, 2);
  for (Activation act : kAllActivations) {
    Tensor y_cpu = Tensor::Empty(x.spec()), gx_cpu = Tensor::Empty(x.spec());
    Tensor y_gpu = test::GpuEmpty(x.shape(), dt), gx_gpu = test::GpuEmpty(x.shape(), dt);
    ActivationForward(kCpu, act, x, y_cpu);
    ActivationForward(Gpu(), act, ToGpu(x), y_gpu);
    const ActivationSaved saved =
        act == Activation::kSilu ? ActivationSaved::kInput : ActivationSaved::kOutput;
    ActivationBackward(kCpu, act, saved, g, saved == ActivationSaved::kInput ? x : y_cpu, gx_cpu);
    const Tensor x_gpu = ToGpu(x);
    ActivationBackward(Gpu(), act, saved, ToGpu(g),
                       saved == ActivationSaved::kInput ? x_gpu : y_gpu, gx_gpu);
    test::SyncGpu();
    LOOM_EXPECT_REL_NEAR(y_gpu, y_cpu, test::CrossDeviceTolerance(dt)) << ActivationName(act);
    LOOM_EXPECT_REL_NEAR(gx_gpu, gx_cpu, test::CrossDeviceTolerance(dt)) << ActivationName(act);
  }
}

TEST(ElementwiseCudaBf16Test, ActivationsFollowTheBf16Rule) {
  LOOM_SKIP_WITHOUT_GPU();
  const Tensor x16 = Random(Shape{4096}, DType::kBF16, 3, -6, 6);
  const Tensor g16 = Random(Shape{4096}, DType::kBF16, 4);
  for (Activation act : kAllActivations) {
    Tensor ref = Tensor::Empty(Shape{4096}, DType::kF64),
           naive = Tensor::Empty(Shape{4096}, DType::kF32);
    ActivationForward(kCpu, act, Cast(x16, DType::kF64), ref);
    ActivationForward(kCpu, act, Cast(x16, DType::kF32), naive);
    Tensor y = test::GpuEmpty(Shape{4096}, DType::kBF16);
    ActivationForward(Gpu(), act, ToGpu(x16), y);
    Tensor gref = Tensor::Empty(Shape{4096}, DType::kF64),
           gnaive = Tensor::Empty(Shape{4096}, DType::kF32);
    ActivationBackward(kCpu, act, ActivationSaved::kInput, Cast(g16, DType::kF64),
                       Cast(x16, DType::kF64), gref);
    ActivationBackward(kCpu, act, ActivationSaved::kInput, Cast(g16, DType::kF32),
                       Cast(x16, DType::kF32), gnaive);
    Tensor gx = test::GpuEmpty(Shape{4096}, DType::kBF16);
    ActivationBackward(Gpu(), act, ActivationSaved::kInput, ToGpu(g16), ToGpu(x16), gx);
    test::SyncGpu();
    const test::Bf16Verdict v = test::CheckBf16Rule(y, Cast(naive, DType::kBF16), ref);
    EXPECT_TRUE(v.ok) << ActivationName(act) << " y: " << v.ToString();
    const test::Bf16Verdict vg = test::CheckBf16Rule(gx, Cast(gnaive, DType::kBF16), gref);
    EXPECT_TRUE(vg.ok) << ActivationName(act) << " grad_x: " << vg.ToString();
  }
}

TYPED_TEST(ElementwiseCudaTest, ArithmeticMatchesCpu) {
  LOOM_SKIP_WITHOUT_GPU();
  const DType dt = DTypeOf<TypeParam>::value;
  const Tensor a = Random(Shape{3, 1001}, dt, 5), b = Random(Shape{3, 1001}, dt, 6),
               g = Random(Shape{3, 1001}, dt, 7);
  Tensor c_cpu[5], c_gpu[5];
  for (int i = 0; i < 5; ++i) {
    c_cpu[i] = b.To(Device::Cpu());
    c_gpu[i] = ToGpu(b);
  }
  const Tensor ag = ToGpu(a), bg = ToGpu(b), gg = ToGpu(g);
  Add(kCpu, a, b, c_cpu[0]);
  Add(Gpu(), ag, bg, c_gpu[0]);
  Axpby(kCpu, 0.3, a, -1.7, b, c_cpu[1]);
  Axpby(Gpu(), 0.3, ag, -1.7, bg, c_gpu[1]);
  Axpy(kCpu, 2.5, a, c_cpu[2]);
  Axpy(Gpu(), 2.5, ag, c_gpu[2]);
  Mul(kCpu, a, b, c_cpu[3]);
  Mul(Gpu(), ag, bg, c_gpu[3]);
  MulBackward(kCpu, g, a, b, c_cpu[4], TensorView());
  MulBackward(Gpu(), gg, ag, bg, c_gpu[4], TensorView());
  test::SyncGpu();
  for (int i = 0; i < 5; ++i) {
    LOOM_EXPECT_REL_NEAR(c_gpu[i], c_cpu[i], test::CrossDeviceTolerance(dt)) << "op " << i;
  }
}

TYPED_TEST(ElementwiseCudaTest, ReductionsMatchCpu) {
  LOOM_SKIP_WITHOUT_GPU();
  const DType dt = DTypeOf<TypeParam>::value;
  for (const Shape& shape : {Shape{4000, 33}, Shape{7, 300, 20}, Shape{50, 513}}) {
    const Tensor x = Random(shape, dt, 8);
    for (int dim = 0; dim < shape.rank(); ++dim) {
      std::vector<int64_t> ydims = shape.dims();
      ydims.erase(ydims.begin() + dim);
      const Tensor y0 = Random(Shape(ydims), dt, 9);
      Tensor y_cpu = y0.To(Device::Cpu()), y_gpu = ToGpu(y0);
      SumDim(kCpu, SumDimArgs{dim, true}, x, y_cpu);
      SumDim(Gpu(), SumDimArgs{dim, true}, ToGpu(x), y_gpu);
      Tensor gx_cpu = Tensor::Empty(x.spec()), gx_gpu = test::GpuEmpty(shape, dt);
      SumDimBackward(kCpu, SumDimArgs{dim}, y0, gx_cpu);
      SumDimBackward(Gpu(), SumDimArgs{dim}, ToGpu(y0), gx_gpu);
      test::SyncGpu();
      LOOM_EXPECT_REL_NEAR(y_gpu, y_cpu, test::CrossDeviceTolerance(dt))
          << shape.ToString() << " dim " << dim;
      LOOM_EXPECT_REL_NEAR(gx_gpu, gx_cpu, 0.0);
    }
  }
  const int64_t b = 40, t = 300, d = 24;
  const Tensor x = Random(Shape{b, t, d}, dt, 10), gy = Random(Shape{b, d}, dt, 11);
  std::vector<double> m(b * t);
  for (int64_t i = 0; i < b * t; ++i) m[i] = (i % t) >= (i / t) * 7 % t ? 1.0 : 0.0;
  for (int64_t j = 0; j < t; ++j) m[5 * t + j] = 0;  // an empty row
  const Tensor mask = test::FromDoubles(m, Shape{b, t}, DType::kU8);
  Tensor y_cpu = Tensor::Empty(Shape{b, d}, dt), y_gpu = test::GpuEmpty(Shape{b, d}, dt);
  Tensor gx_cpu = Tensor::Empty(x.spec()), gx_gpu = test::GpuEmpty(x.shape(), dt);
  MaskedMeanTokens(kCpu, x, mask, y_cpu);
  MaskedMeanTokens(Gpu(), ToGpu(x), ToGpu(mask), y_gpu);
  MaskedMeanTokensBackward(kCpu, gy, mask, gx_cpu);
  MaskedMeanTokensBackward(Gpu(), ToGpu(gy), ToGpu(mask), gx_gpu);
  test::SyncGpu();
  LOOM_EXPECT_REL_NEAR(y_gpu, y_cpu, test::CrossDeviceTolerance(dt));
  LOOM_EXPECT_REL_NEAR(gx_gpu, gx_cpu, test::CrossDeviceTolerance(dt));
}

TYPED_TEST(ElementwiseCudaTest, TokenCopiesMatchCpu) {
  LOOM_SKIP_WITHOUT_GPU();
  const DType dt = DTypeOf<TypeParam>::value;
  const Tensor a = Random(Shape{9, 4, 16}, dt, 12), b = Random(Shape{9, 70, 16}, dt, 13);
  Tensor w_cpu = Tensor::Empty(Shape{9, 74, 16}, dt), w_gpu = test::GpuEmpty(Shape{9, 74, 16}, dt);
  ConcatTokens(kCpu, {a, b}, w_cpu);
  ConcatTokens(Gpu(), {ToGpu(a), ToGpu(b)}, w_gpu);
  CopyTokensArgs args;
  args.src_begin = 2;
  args.dst_begin = 70;
  args.count = 2;
  args.accumulate = true;
  CopyTokens(kCpu, args, a, w_cpu);
  CopyTokens(Gpu(), args, ToGpu(a), w_gpu);
  test::SyncGpu();
  LOOM_EXPECT_REL_NEAR(w_gpu, w_cpu, test::CrossDeviceTolerance(dt));
}

TYPED_TEST(ElementwiseCudaTest, RopeMatchesCpu) {
  LOOM_SKIP_WITHOUT_GPU();
  const DType dt = DTypeOf<TypeParam>::value;
  for (const Shape& shape : {Shape{37, 104, 2, 32}, Shape{74, 104, 16}}) {
    const Tensor x = Random(shape, dt, 14);
    const RopeArgs args{10000.0, 900};  // positions up to ~1000
    Tensor y_cpu = Tensor::Empty(x.spec()), y_gpu = test::GpuEmpty(shape, dt);
    Tensor g_cpu = Tensor::Empty(x.spec()), g_gpu = test::GpuEmpty(shape, dt);
    RopeForward(kCpu, args, x, y_cpu);
    RopeForward(Gpu(), args, ToGpu(x), y_gpu);
    RopeBackward(kCpu, args, x, g_cpu);
    RopeBackward(Gpu(), args, ToGpu(x), g_gpu);
    test::SyncGpu();
    LOOM_EXPECT_REL_NEAR(y_gpu, y_cpu, test::CrossDeviceTolerance(dt)) << shape.ToString();
    LOOM_EXPECT_REL_NEAR(g_gpu, g_cpu, test::CrossDeviceTolerance(dt)) << shape.ToString();
  }
}

TYPED_TEST(ElementwiseCudaTest, BceWithLogitsMatchesCpu) {
  LOOM_SKIP_WITHOUT_GPU();
  const DType dt = DTypeOf<TypeParam>::value;
  const int64_t b = 5000;
  const Tensor z = Random(Shape{b, 1}, dt, 15, -20, 20), y = Random(Shape{b, 1}, dt, 16, 0, 1),
               w = Random(Shape{b}, dt, 17, 0, 2);
  Tensor l_cpu = Tensor::Empty(Shape{1}, dt), l_gpu = test::GpuEmpty(Shape{1}, dt);
  Tensor g_cpu = Tensor::Empty(z.spec()), g_gpu = test::GpuEmpty(z.shape(), dt);
  BceWithLogitsForward(kCpu, z, y, w, l_cpu);
  BceWithLogitsForward(Gpu(), ToGpu(z), ToGpu(y), ToGpu(w), l_gpu);
  BceWithLogitsBackward(kCpu, 0.5, z, y, w, g_cpu);
  BceWithLogitsBackward(Gpu(), 0.5, ToGpu(z), ToGpu(y), ToGpu(w), g_gpu);
  test::SyncGpu();
  LOOM_EXPECT_REL_NEAR(l_gpu, l_cpu, test::CrossDeviceTolerance(dt));
  LOOM_EXPECT_REL_NEAR(g_gpu, g_cpu, test::CrossDeviceTolerance(dt));
}

}  // namespace
}  // namespace loom::ops
