#include "csrc/core/tensor.h"

#include <cstdint>

#include <gtest/gtest.h>

#include "csrc/core/allocator.h"

namespace loom {
namespace {

TEST(TensorTest, ShapeBasics) {
  Shape s{2, 3, 4};
  EXPECT_EQ(s.rank(), 3);
  EXPECT_EQ(s.numel(), 24);
  EXPECT_EQ(s.dim(-1), 4);
  EXPECT_EQ(s.ToString(), "(2, 3, 4)");
  EXPECT_EQ(Shape().numel(), 1);  // a scalar
  EXPECT_EQ((Shape{0, 5}).numel(), 0);
  EXPECT_EQ(s, (Shape{2, 3, 4}));
  EXPECT_NE(s, (Shape{2, 12}));
}

TEST(TensorTest, HostTensorsAreAlignedAndOwned) {
  Tensor t = Tensor::Zeros(Shape{3, 5}, DType::kF32);
  EXPECT_TRUE(t.defined());
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.raw()) % kHostAlignment, 0u);
  EXPECT_EQ(t.nbytes(), 60);
  for (float v : t.ToVector<float>()) EXPECT_EQ(v, 0.0f);
  Tensor alias = t;  // handles share storage
  alias.data<float>()[7] = 3.5f;
  EXPECT_EQ(t.data<float>()[7], 3.5f);
  Tensor copy = t.To(Device::Cpu());  // deep copy
  copy.data<float>()[7] = 1.0f;
  EXPECT_EQ(t.data<float>()[7], 3.5f);
}

TEST(TensorTest, ViewsSliceAndReshape) {
  std::vector<int64_t> values(12);
  for (int i = 0; i < 12; ++i) values[i] = i;
  Tensor t = Tensor::FromVector(values, Shape{4, 3});
  TensorView rows = t.view().Slice0(1, 3);
  EXPECT_EQ(rows.shape(), (Shape{2, 3}));
  EXPECT_EQ(rows.data<int64_t>()[0], 3);
  ConstTensorView flat = rows.Reshape(Shape{6});
  EXPECT_EQ(flat.data<int64_t>()[5], 8);
  EXPECT_DEATH(t.view().Slice0(2, 5), "Slice0\\(2, 5\\)");
  EXPECT_DEATH(t.view().Reshape(Shape{5}), "reshape");
}

TEST(TensorTest, ZeroSizedTensorIsDefined) {
  Tensor t = Tensor::Empty(Shape{0, 8}, DType::kF64);
  EXPECT_TRUE(t.defined());
  EXPECT_EQ(t.numel(), 0);
  EXPECT_TRUE(t.ToVector<double>().empty());
}

}  // namespace
}  // namespace loom
