// Token-axis concat / split / copy.
#include "csrc/model/ops/tokens.h"

#include <vector>

#include <gtest/gtest.h>

#include "tests/model/ops/ops_test_util.h"

namespace loom::ops {
namespace {

using test::kCpu;
using test::Random;

TEST(TokensTest, ConcatThenSplitRoundTrips) {
  const Tensor a = Random(Shape{3, 2, 4}, DType::kF32, 1);
  const Tensor b = Random(Shape{3, 5, 4}, DType::kF32, 2);
  const Tensor c = Random(Shape{3, 1, 4}, DType::kF32, 3);
  Tensor whole = Tensor::Empty(Shape{3, 8, 4}, DType::kF32);
  ConcatTokens(kCpu, {a, b, c}, whole);
  const std::vector<float> av = a.ToVector<float>(), bv = b.ToVector<float>(),
                           cv = c.ToVector<float>(), wv = whole.ToVector<float>();
  for (int64_t i = 0; i < 3; ++i) {
    for (int64_t e = 0; e < 4; ++e) {
      for (int64_t j = 0; j < 2; ++j) EXPECT_EQ(wv[(i * 8 + j) * 4 + e], av[(i * 2 + j) * 4 + e]);
      for (int64_t j = 0; j < 5; ++j) {
        EXPECT_EQ(wv[(i * 8 + 2 + j) * 4 + e], bv[(i * 5 + j) * 4 + e]);
      }
      EXPECT_EQ(wv[(i * 8 + 7) * 4 + e], cv[i * 4 + e]);
    }
  }
  Tensor a2 = Tensor::Empty(a.spec()), b2 = Tensor::Empty(b.spec()), c2 = Tensor::Empty(c.spec());
  SplitTokens(kCpu, whole, {a2, b2, c2});
  EXPECT_EQ(a2.ToVector<float>(), av);
  EXPECT_EQ(b2.ToVector<float>(), bv);
  EXPECT_EQ(c2.ToVector<float>(), cv);
}

TEST(TokensTest, KeyMasksConcatenateAsBytes) {
  // The CLS prefix of the key mask: [1]*n_cls ++ km.
  const Tensor cls = test::FromDoubles({1, 1, 1, 1}, Shape{2, 2, 1}, DType::kU8);
  const Tensor km = test::FromDoubles({0, 1, 1, 1, 1, 0}, Shape{2, 3, 1}, DType::kU8);
  Tensor out = Tensor::Empty(Shape{2, 5, 1}, DType::kU8);
  ConcatTokens(kCpu, {cls, km}, out);
  EXPECT_EQ(out.ToVector<uint8_t>(), (std::vector<uint8_t>{1, 1, 0, 1, 1, 1, 1, 1, 1, 0}));
}

TEST(TokensTest, CopyAccumulatesIntoASlice) {
  // Backward of a slice S[:, 3:5, :] into a gradient that already holds other contributions.
  const Tensor g = Tensor::FromVector<double>({1, 2, 3, 4}, Shape{1, 2, 2});
  Tensor grad_s = Tensor::FromVector<double>(std::vector<double>(12, 10.0), Shape{1, 6, 2});
  CopyTokensArgs args;
  args.dst_begin = 3;
  args.count = 2;
  args.accumulate = true;
  CopyTokens(kCpu, args, g, grad_s);
  EXPECT_EQ(grad_s.ToVector<double>(),
            (std::vector<double>{10, 10, 10, 10, 10, 10, 11, 12, 13, 14, 10, 10}));
}

TEST(TokensTest, FeatureConcatThroughReshape) {
  // concat_features of (B·T, d_i) tensors = token concat of (B·T, d_i, 1) views.
  const Tensor a = Random(Shape{6, 3}, DType::kF64, 4), b = Random(Shape{6, 2}, DType::kF64, 5);
  Tensor out = Tensor::Empty(Shape{6, 5}, DType::kF64);
  ConcatTokens(kCpu, {a.cview().Reshape(Shape{6, 3, 1}), b.cview().Reshape(Shape{6, 2, 1})},
               out.view().Reshape(Shape{6, 5, 1}));
  const std::vector<double> av = a.ToVector<double>(), bv = b.ToVector<double>(),
                            ov = out.ToVector<double>();
  for (int r = 0; r < 6; ++r) {
    for (int j = 0; j < 3; ++j) EXPECT_EQ(ov[r * 5 + j], av[r * 3 + j]);
    for (int j = 0; j < 2; ++j) EXPECT_EQ(ov[r * 5 + 3 + j], bv[r * 2 + j]);
  }
}

TEST(TokensTest, ValidationReportsRanges) {
  CopyTokensArgs args;
  args.src_begin = 2;
  args.count = 3;
  Status s = ValidateCopyTokens(args, TensorSpec{Shape{2, 4, 3}, DType::kF32},
                                TensorSpec{Shape{2, 5, 3}, DType::kF32});
  EXPECT_NE(s.message().find("out of range"), std::string::npos) << s;
  s = ValidateConcatTokens({TensorSpec{Shape{2, 1, 3}, DType::kF32}},
                           TensorSpec{Shape{2, 2, 3}, DType::kF32});
  EXPECT_NE(s.message().find("the parts hold 1 tokens"), std::string::npos) << s;
}

}  // namespace
}  // namespace loom::ops
