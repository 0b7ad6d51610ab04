// LayerNorm: closed forms, parameter conventions, f32 vs f64, determinism over threads.
#include "csrc/model/ops/layer_norm.h"

#include <cmath>
#include <vector>

#include <gtest/gtest.h>
#include <omp.h>

#include "tests/model/ops/ops_test_util.h"

namespace loom::ops {
namespace {

using test::kCpu;
using test::Random;

TEST(LayerNormTest, ClosedForm) {
  // Row [1, 2, 3, 4]: mean 2.5, var 1.25; row [5, 5, 5, 5]: var 0 so y = beta.
  const Tensor x = Tensor::FromVector<double>({1, 2, 3, 4, 5, 5, 5, 5}, Shape{2, 4});
  const Tensor gamma = Tensor::FromVector<double>({1, 2, 1, 1}, Shape{4});
  const Tensor beta = Tensor::FromVector<double>({0, 0, 0, 10}, Shape{4});
  Tensor y = Tensor::Empty(x.spec()), mean = Tensor::Empty(Shape{2}, DType::kF64),
         rstd = Tensor::Empty(Shape{2}, DType::kF64);
  const LayerNormArgs args{1e-5f};
  LayerNormForward(kCpu, args, x, gamma, beta, y, mean, rstd);
  const double eps = static_cast<double>(1e-5f);
  const double rs = 1.0 / std::sqrt(1.25 + eps);
  const std::vector<double> yv = y.ToVector<double>();
  const std::vector<double> want = {-1.5 * rs, -0.5 * rs * 2, 0.5 * rs, 1.5 * rs + 10, 0, 0, 0, 10};
  for (int i = 0; i < 8; ++i) EXPECT_NEAR(yv[i], want[i], 1e-15) << i;
  EXPECT_EQ(mean.ToVector<double>(), (std::vector<double>{2.5, 5.0}));
  EXPECT_NEAR(rstd.ToVector<double>()[0], rs, 1e-15);
  EXPECT_NEAR(rstd.ToVector<double>()[1], 1.0 / std::sqrt(eps), 1e-9);
}

TEST(LayerNormTest, BackwardConventionsAndClosedForm) {
  // With gamma = 1 the gradient of Σ_c y_c is 0 (y is zero-mean); grad_beta += Σ_r grad_y.
  const int64_t r = 5, c = 8;
  const Tensor x = Random(Shape{r, c}, DType::kF64, 1);
  const Tensor gamma = Tensor::FromVector<double>(std::vector<double>(c, 1.0), Shape{c});
  const Tensor beta = Random(Shape{c}, DType::kF64, 2);
  Tensor y = Tensor::Empty(x.spec()), mean = Tensor::Empty(Shape{r}, DType::kF64),
         rstd = Tensor::Empty(Shape{r}, DType::kF64);
  LayerNormForward(kCpu, LayerNormArgs{}, x, gamma, beta, y, mean, rstd);
  const Tensor ones = Tensor::FromVector<double>(std::vector<double>(r * c, 1.0), Shape{r, c});
  Tensor grad_x = Random(Shape{r, c}, DType::kF64, 3);  // junk, overwritten
  Tensor grad_gamma = Tensor::FromVector<double>(std::vector<double>(c, 7.0), Shape{c});
  Tensor grad_beta = Tensor::FromVector<double>(std::vector<double>(c, -1.0), Shape{c});
  LayerNormBackward(kCpu, ones, x, gamma, mean, rstd, grad_x, grad_gamma, grad_beta);
  for (double v : grad_x.ToVector<double>()) EXPECT_NEAR(v, 0.0, 1e-14);
  for (double v : grad_beta.ToVector<double>()) EXPECT_EQ(v, -1.0 + r);
  // grad_gamma += Σ_r x̂ = 7 + (column sums of the normalized rows).
  const std::vector<double> yv = y.ToVector<double>(), bv = beta.ToVector<double>();
  const std::vector<double> gg = grad_gamma.ToVector<double>();
  for (int64_t j = 0; j < c; ++j) {
    double s = 0;
    for (int64_t i = 0; i < r; ++i) s += yv[i * c + j] - bv[j];
    EXPECT_NEAR(gg[j], 7.0 + s, 1e-13);
  }
}

TEST(LayerNormTest, F32AgreesWithF64) {
  const int64_t r = 300, c = 64;
  const Tensor x = Random(Shape{3, 100, c}, DType::kF32, 4, -3, 5);
  const Tensor gamma = Random(Shape{c}, DType::kF32, 5, 0.5, 1.5);
  const Tensor beta = Random(Shape{c}, DType::kF32, 6);
  const Tensor gy = Random(Shape{3, 100, c}, DType::kF32, 7);
  Tensor out[2][5];
  for (int k = 0; k < 2; ++k) {
    const DType dt = k == 0 ? DType::kF32 : DType::kF64;
    const Tensor xk = test::Cast(x, dt), gk = test::Cast(gamma, dt), bk = test::Cast(beta, dt),
                 gyk = test::Cast(gy, dt);
    Tensor y = Tensor::Empty(xk.spec()), mean = Tensor::Empty(Shape{r}, dt),
           rstd = Tensor::Empty(Shape{r}, dt), gx = Tensor::Empty(xk.spec()),
           gg = Tensor::Zeros(Shape{c}, dt), gb = Tensor::Zeros(Shape{c}, dt);
    LayerNormForward(kCpu, LayerNormArgs{}, xk, gk, bk, y, mean, rstd);
    LayerNormBackward(kCpu, gyk, xk, gk, mean, rstd, gx, gg, gb);
    out[k][0] = y;
    out[k][1] = rstd;
    out[k][2] = gx;
    out[k][3] = gg;
    out[k][4] = gb;
  }
  for (int i = 0; i < 5; ++i) LOOM_EXPECT_REL_NEAR(out[0][i], out[1][i], 1e-5) << "output " << i;
}

TEST(LayerNormTest, ParameterGradientsDoNotDependOnThreadCount) {
  const int64_t r = 1000, c = 48;
  const Tensor x = Random(Shape{r, c}, DType::kF32, 8), gy = Random(Shape{r, c}, DType::kF32, 9);
  const Tensor gamma = Random(Shape{c}, DType::kF32, 10), beta = Random(Shape{c}, DType::kF32, 11);
  std::vector<float> results[2];
  const int saved_threads = omp_get_max_threads();
  for (int k = 0; k < 2; ++k) {
    omp_set_num_threads(k == 0 ? 1 : 3);
    Tensor y = Tensor::Empty(x.spec()), mean = Tensor::Empty(Shape{r}, DType::kF32),
           rstd = Tensor::Empty(Shape{r}, DType::kF32), gx = Tensor::Empty(x.spec()),
           gg = Tensor::Zeros(Shape{c}, DType::kF32), gb = Tensor::Zeros(Shape{c}, DType::kF32);
    LayerNormForward(kCpu, LayerNormArgs{}, x, gamma, beta, y, mean, rstd);
    LayerNormBackward(kCpu, gy, x, gamma, mean, rstd, gx, gg, gb);
    results[k] = gg.ToVector<float>();
    const std::vector<float> b = gb.ToVector<float>();
    results[k].insert(results[k].end(), b.begin(), b.end());
  }
  omp_set_num_threads(saved_threads);
  EXPECT_EQ(results[0], results[1]);
}

TEST(LayerNormTest, ValidationNamesTheArgument) {
  const TensorSpec x{Shape{4, 8}, DType::kF32};
  Status s = ValidateLayerNorm(LayerNormArgs{}, x, TensorSpec{Shape{7}, DType::kF32});
  EXPECT_NE(s.message().find("gamma f32(7) must have shape (8)"), std::string::npos) << s;
  s = ValidateLayerNorm(LayerNormArgs{}, x, TensorSpec{Shape{8}, DType::kF64});
  EXPECT_NE(s.message().find("gamma f64(8) must be f32"), std::string::npos) << s;
  s = ValidateLayerNorm(LayerNormArgs{0.0f}, x, TensorSpec{Shape{8}, DType::kF32});
  EXPECT_NE(s.message().find("epsilon"), std::string::npos) << s;
  // bf16 activations take f32 parameters.
  EXPECT_TRUE(ValidateLayerNorm(LayerNormArgs{}, TensorSpec{Shape{4, 8}, DType::kBF16},
                                TensorSpec{Shape{8}, DType::kF32})
                  .ok());
}

}  // namespace
}  // namespace loom::ops
