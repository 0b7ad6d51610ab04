// DenseOptimizer on CUDA against the CPU reference, on fresh random inputs (never zeros), for
// every optimizer, with and without clipping, f32 and f64. The clipping norm follows the same
// canonical order on both backends (fused_update.h) and must match bit for bit; the updates
// share their element code (compiled without fma contraction on the device) and are checked
// at fp32 <= 1e-6 relative (docs: fp32 <= 1e-5).
#include <cmath>
#include <cstring>
#include <vector>

#include <gtest/gtest.h>

#include "csrc/core/gpu.h"
#include "csrc/core/philox.h"
#include "csrc/core/rng.h"
#include "csrc/core/tensor.h"
#include "csrc/optim/dense_optimizer.h"
#include "tests/testing/gpu_test_util.h"

namespace loom::optim {
namespace {

using Config = proto::OptimizerConfig;
constexpr uint64_t kSeed = 77;
// Many chunks (kChunk = 2048), ragged tails, an empty and a one-element tensor.
const std::vector<int64_t> kSizes = {1, 4097, 0, 100000, 2048, 33};

template <typename T>
void RunCase(const Config& c) {
  const DType dtype = DTypeOf<T>::value;
  const Device gpu = Device::Cuda(0);
  std::vector<Tensor> w_cpu, g_cpu, w_gpu, g_gpu;
  for (size_t p = 0; p < kSizes.size(); ++p) {
    w_cpu.push_back(Tensor::Empty(Shape{kSizes[p]}, dtype));
    g_cpu.push_back(Tensor::Empty(Shape{kSizes[p]}, dtype));
    FillUniform(ExecContext::Cpu(), w_cpu.back(), kSeed, MakeStream(kRngTest, 1, p), -1, 1);
    w_gpu.push_back(w_cpu.back().To(gpu));
    g_gpu.push_back(Tensor::Empty(Shape{kSizes[p]}, dtype, gpu));
  }
  auto params = [](const std::vector<Tensor>& w, const std::vector<Tensor>& g) {
    std::vector<DenseParam> out;
    for (size_t p = 0; p < w.size(); ++p) {
      out.push_back({"p" + std::to_string(p), w[p].view(), g[p].cview(), p % 2 == 0});
    }
    return out;
  };
  auto cpu = CreateDenseOptimizer(c, params(w_cpu, g_cpu));
  auto cuda = CreateDenseOptimizer(c, params(w_gpu, g_gpu));
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  ASSERT_TRUE(cuda.ok()) << cuda.status();
  const ExecContext ctx = ExecContext::Cuda(0);
  for (int t = 0; t < 4; ++t) {
    for (size_t p = 0; p < kSizes.size(); ++p) {
      FillUniform(ExecContext::Cpu(), g_cpu[p], kSeed, MakeStream(kRngTest, 2 + t, p), -3, 3);
      CopyTensor(g_cpu[p], g_gpu[p]);
    }
    (*cpu)->Step(ExecContext::Cpu());
    (*cuda)->Step(ctx);
    gpu::StreamSynchronize(ctx.stream);
    const double n_cpu = (*cpu)->last_grad_norm(), n_gpu = (*cuda)->last_grad_norm();
    if (c.max_grad_norm() > 0) {
      EXPECT_EQ(std::memcmp(&n_cpu, &n_gpu, sizeof(double)), 0)
          << "step " << t << ": norm cpu " << n_cpu << " cuda " << n_gpu;
    }
  }
  const double tol = dtype == DType::kF32 ? 1e-6 : 1e-13;
  for (size_t p = 0; p < kSizes.size(); ++p) {
    const std::vector<T> a = w_cpu[p].template ToVector<T>(), b = w_gpu[p].template ToVector<T>();
    int64_t bad = 0, exact = 0;
    for (size_t i = 0; i < a.size(); ++i) {
      exact += a[i] == b[i];
      if (std::abs(double(a[i]) - double(b[i])) > tol * std::max(1.0, std::abs(double(a[i])))) {
        if (++bad <= 5)
          ADD_FAILURE() << "param " << p << "[" << i << "] cpu " << a[i] << " cuda " << b[i];
      }
    }
    EXPECT_EQ(bad, 0) << Config::Type_Name(c.type()) << " param " << p << " (" << exact << "/"
                      << a.size() << " bit-identical)";
  }
}

std::vector<Config> Configs() {
  std::vector<Config> out;
  for (auto type :
       {Config::OPTIMIZER_TYPE_ADAM, Config::OPTIMIZER_TYPE_ADAMW, Config::OPTIMIZER_TYPE_SGD}) {
    for (double clip : {0.0, 10.0}) {
      Config c;
      c.set_type(type);
      c.set_lr(0.01);
      c.set_weight_decay(0.02);
      c.set_max_grad_norm(clip);
      if (type == Config::OPTIMIZER_TYPE_SGD) {
        c.set_momentum(0.9);
        c.set_nesterov(clip > 0);
      }
      out.push_back(c);
    }
  }
  return out;
}

TEST(DenseOptimizerCudaTest, MatchesCpuF32) {
  LOOM_SKIP_WITHOUT_GPU();
  for (const Config& c : Configs()) RunCase<float>(c);
}

TEST(DenseOptimizerCudaTest, MatchesCpuF64) {
  LOOM_SKIP_WITHOUT_GPU();
  for (const Config& c : Configs()) RunCase<double>(c);
}

}  // namespace
}  // namespace loom::optim
