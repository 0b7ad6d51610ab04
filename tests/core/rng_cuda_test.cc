// The CUDA fills must give the same bits as the CPU reference (philox.h explains why they can).
#include <gtest/gtest.h>

#include "csrc/core/gpu.h"
#include "csrc/core/rng.h"
#include "tests/testing/gpu_test_util.h"

namespace loom {
namespace {

template <typename T>
void ExpectSameBits(const Tensor& cpu, const Tensor& gpu_copy) {
  std::vector<T> a = cpu.ToVector<T>(), b = gpu_copy.ToVector<T>();
  ASSERT_EQ(a.size(), b.size());
  int mismatches = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::memcmp(&a[i], &b[i], sizeof(T)) != 0 && ++mismatches <= 5) {
      ADD_FAILURE() << "element " << i << ": cpu " << a[i] << " cuda " << b[i];
    }
  }
  EXPECT_EQ(mismatches, 0);
}

TEST(RngCudaTest, UniformAndNormalAreBitIdenticalToCpu) {
  LOOM_SKIP_WITHOUT_GPU();
  const ExecContext cuda = ExecContext::Cuda(0);
  for (DType dtype : {DType::kF32, DType::kF64}) {
    const Shape shape{3, 100003};
    Tensor u_cpu = Tensor::Empty(shape, dtype), u_gpu = Tensor::Empty(shape, dtype, cuda.device);
    FillUniform(ExecContext::Cpu(), u_cpu, 42, 9, -0.1, 0.1);
    FillUniform(cuda, u_gpu, 42, 9, -0.1, 0.1);
    Tensor n_cpu = Tensor::Empty(shape, dtype), n_gpu = Tensor::Empty(shape, dtype, cuda.device);
    FillNormal(ExecContext::Cpu(), n_cpu, 42, 10, 0.0, 0.02);
    FillNormal(cuda, n_gpu, 42, 10, 0.0, 0.02);
    gpu::DeviceSynchronize();
    if (dtype == DType::kF32) {
      ExpectSameBits<float>(u_cpu, u_gpu);
      ExpectSameBits<float>(n_cpu, n_gpu);
    } else {
      ExpectSameBits<double>(u_cpu, u_gpu);
      ExpectSameBits<double>(n_cpu, n_gpu);
    }
  }
}

}  // namespace
}  // namespace loom
