// SumDim and MaskedMeanTokens against plain loops; determinism across thread counts.
#include "csrc/model/ops/reduce.h"

#include <vector>

#include <gtest/gtest.h>
#include <omp.h>

#include "tests/model/ops/ops_test_util.h"

namespace loom::ops {
namespace {

using test::kCpu;
using test::Random;

TEST(SumDimTest, EveryDimMatchesNaive) {
  // Shapes exercising each path: contiguous rows (last dim), many small blocks, and the
  // chunked column reduction (leading dim of a tall tensor).
  for (const Shape& shape : {Shape{3, 4, 5}, Shape{2000, 7}, Shape{6, 300, 40}}) {
    const Tensor x = Random(shape, DType::kF64, 1);
    const std::vector<double> xv = x.ToVector<double>();
    for (int dim = 0; dim < shape.rank(); ++dim) {
      int64_t outer = 1, inner = 1;
      for (int i = 0; i < dim; ++i) outer *= shape[i];
      for (int i = dim + 1; i < shape.rank(); ++i) inner *= shape[i];
      const int64_t n = shape[dim];
      std::vector<int64_t> ydims = shape.dims();
      ydims.erase(ydims.begin() + dim);
      Tensor y = Random(Shape(ydims), DType::kF64, 2);
      const std::vector<double> y0 = y.ToVector<double>();
      for (bool acc : {false, true}) {
        Tensor out = y.To(Device::Cpu());
        SumDim(kCpu, SumDimArgs{dim, acc}, x, out);
        const std::vector<double> ov = out.ToVector<double>();
        for (int64_t o = 0; o < outer; ++o) {
          for (int64_t i = 0; i < inner; ++i) {
            double s = acc ? y0[o * inner + i] : 0.0;
            for (int64_t k = 0; k < n; ++k) s += xv[(o * n + k) * inner + i];
            ASSERT_NEAR(ov[o * inner + i], s, 1e-12)
                << shape.ToString() << " dim " << dim << " acc " << acc;
          }
        }
      }
    }
  }
}

TEST(SumDimTest, BackwardBroadcasts) {
  const Tensor gy = Tensor::FromVector<double>({1, 2, 3, 4, 5, 6}, Shape{2, 3});
  Tensor gx = Tensor::Empty(Shape{2, 2, 3}, DType::kF64);
  SumDimBackward(kCpu, SumDimArgs{1}, gy, gx);
  EXPECT_EQ(gx.ToVector<double>(), (std::vector<double>{1, 2, 3, 1, 2, 3, 4, 5, 6, 4, 5, 6}));
  Tensor gx2 = Tensor::Empty(Shape{2, 3, 2}, DType::kF64);
  SumDimBackward(kCpu, SumDimArgs{-1}, gy, gx2);
  EXPECT_EQ(gx2.ToVector<double>(), (std::vector<double>{1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6}));
}

TEST(SumDimTest, ColumnSumsDoNotDependOnThreadCount) {
  const Tensor x = Random(Shape{5000, 33}, DType::kF32, 3);
  std::vector<float> r[2];
  const int saved = omp_get_max_threads();
  for (int k = 0; k < 2; ++k) {
    omp_set_num_threads(k == 0 ? 1 : 4);
    Tensor y = Tensor::Empty(Shape{33}, DType::kF32);
    SumDim(kCpu, SumDimArgs{0}, x, y);
    r[k] = y.ToVector<float>();
  }
  omp_set_num_threads(saved);
  EXPECT_EQ(r[0], r[1]);
}

TEST(MaskedMeanTokensTest, MatchesNaiveAndEmptyRowsAreZero) {
  const int64_t b = 3, t = 5, d = 4;
  const Tensor x = Random(Shape{b, t, d}, DType::kF64, 4);
  const Tensor mask =
      test::FromDoubles({0, 1, 1, 0, 1, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1}, Shape{b, t}, DType::kU8);
  Tensor y = Tensor::Empty(Shape{b, d}, DType::kF64);
  MaskedMeanTokens(kCpu, x, mask, y);
  const std::vector<double> xv = x.ToVector<double>(), yv = y.ToVector<double>();
  const std::vector<double> mv = test::AsDoubles(mask);
  for (int64_t i = 0; i < b; ++i) {
    for (int64_t e = 0; e < d; ++e) {
      double s = 0, c = 0;
      for (int64_t j = 0; j < t; ++j) {
        s += mv[i * t + j] * xv[(i * t + j) * d + e];
        c += mv[i * t + j];
      }
      EXPECT_NEAR(yv[i * d + e], c > 0 ? s / c : 0.0, 1e-15);
    }
  }
  // Backward: valid positions get grad_y / count, padded ones 0, empty rows 0.
  const Tensor gy = Random(Shape{b, d}, DType::kF64, 5);
  Tensor gx = Random(Shape{b, t, d}, DType::kF64, 6);
  MaskedMeanTokensBackward(kCpu, gy, mask, gx);
  const std::vector<double> gv = gy.ToVector<double>(), gxv = gx.ToVector<double>();
  const double counts[] = {3, 0, 5};
  for (int64_t i = 0; i < b; ++i) {
    for (int64_t j = 0; j < t; ++j) {
      for (int64_t e = 0; e < d; ++e) {
        const double want = mv[i * t + j] ? gv[i * d + e] / counts[i] : 0.0;
        EXPECT_NEAR(gxv[(i * t + j) * d + e], want, 1e-16);
      }
    }
  }
}

}  // namespace
}  // namespace loom::ops
