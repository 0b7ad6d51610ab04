// CPU vs CUDA: the dense InterFormer on the GPU (f32) against the CPU model in f64 with the
// same weights and batch (padded sequences of mixed lengths): logits, every parameter
// gradient and every input gradient. Skipped (reported SKIPPED) without a usable GPU.
//
// Tolerance: 1e-4 relative to each tensor's max |value|. Both backends accumulate in fp32
// through ~30 dependent ops; the CPU f32 model itself sits ~1e-6..1e-5 from f64 on these
// sizes (see the parity tests), and cuBLAS/the CUDA kernels sum in different orders, so 1e-4
// leaves a 10x margin while still catching any wrong formula (those give O(1) errors).
#include <cmath>
#include <cstring>

#include <gtest/gtest.h>

#include "csrc/core/philox.h"
#include "csrc/core/rng.h"
#include "csrc/model/interformer.h"
#include "csrc/proto/config_io.h"
#include "tests/testing/gpu_test_util.h"

namespace loom::model {
namespace {

double MaxRel(const std::vector<double>& got, const std::vector<double>& want) {
  double err = 0.0, scale = 1e-6;
  for (size_t i = 0; i < want.size(); ++i) {
    err = std::max(err, std::fabs(got[i] - want[i]));
    scale = std::max(scale, std::fabs(want[i]));
  }
  return err / scale;
}

std::vector<double> AsDoubles(ConstTensorView v) {
  Tensor host = Tensor::Empty(v.spec());
  CopyTensor(v, host);
  std::vector<double> out(v.numel());
  for (int64_t i = 0; i < v.numel(); ++i) {
    out[i] = v.dtype() == DType::kF32 ? host.data<float>()[i] : host.data<double>()[i];
  }
  return out;
}

TEST(InterFormerCudaTest, MatchesCpuDouble) {
  LOOM_SKIP_WITHOUT_GPU();
  proto::ModelConfig config;
  LOOM_CHECK_OK(config::ParseTextProto(
      "embedding_dim: 16 num_sparse_features: 3 num_dense_features: 2 num_sequences: 2 "
      "num_layers: 2 head_hidden_dims: [32, 16]",
      "test", &config));
  const int64_t b = 8, t = 10;
  auto cpu = InterFormer::Create(config, b, t, DType::kF64, Device::Cpu());
  auto gpu = InterFormer::Create(config, b, t, DType::kF32, Device::Cuda(0));
  ASSERT_TRUE(cpu.ok() && gpu.ok());
  (*cpu)->Initialize(3);
  // The same weights: the f64 values rounded to f32.
  ParameterStore& pc = (*cpu)->parameters();
  double* v = pc.values().data<double>();
  for (int64_t i = 0; i < pc.total_elements(); ++i) v[i] = static_cast<float>(v[i]);
  Tensor w32 = Tensor::Empty(Shape{pc.total_elements()}, DType::kF32);
  for (int64_t i = 0; i < pc.total_elements(); ++i) w32.data<float>()[i] = static_cast<float>(v[i]);
  CopyTensor(w32, (*gpu)->parameters().values());

  const ModelDims& D = (*cpu)->dims();
  auto make = [&](const Shape& s, uint64_t stream, Tensor* f64, Tensor* f32) {
    *f64 = Tensor::Empty(s, DType::kF64);
    FillNormal(ExecContext::Cpu(), f64->view(), 9, MakeStream(kRngTest, stream, 0), 0.0, 1.0);
    Tensor h = Tensor::Empty(s, DType::kF32);
    for (int64_t i = 0; i < s.numel(); ++i) {
      f64->data<double>()[i] = static_cast<float>(f64->data<double>()[i]);
      h.data<float>()[i] = static_cast<float>(f64->data<double>()[i]);
    }
    *f32 = h.To(Device::Cuda(0));
  };
  Tensor d64, d32, s64, s32;
  make(Shape{b, D.m}, 1, &d64, &d32);
  make(Shape{b, D.n, D.d}, 2, &s64, &s32);
  std::vector<Tensor> q64(D.k), q32(D.k);
  for (int64_t j = 0; j < D.k; ++j) make(Shape{b, t, D.d}, 3 + j, &q64[j], &q32[j]);
  Tensor mask = Tensor::Zeros(Shape{b, t}, DType::kU8);
  const int64_t lengths[8] = {10, 0, 1, 5, 7, 2, 10, 3};
  for (int64_t i = 0; i < b; ++i) {
    for (int64_t p = t - lengths[i]; p < t; ++p) mask.data<uint8_t>()[i * t + p] = 1;
  }
  Tensor mask_gpu = mask.To(Device::Cuda(0));
  std::vector<double> lab = {1, 0, 0, 1, 1, 0, 1, 0};
  Tensor l64 = Tensor::FromVector(lab, Shape{b});
  Tensor l32 =
      Tensor::FromVector(std::vector<float>(lab.begin(), lab.end()), Shape{b}).To(Device::Cuda(0));

  DenseInputs in64{d64, s64, {}, mask}, in32{d32, s32, {}, mask_gpu};
  for (int64_t j = 0; j < D.k; ++j) {
    in64.seq.push_back(q64[j]);
    in32.seq.push_back(q32[j]);
  }
  const ExecContext cctx = ExecContext::Cpu(), gctx = ExecContext::Cuda(0);
  Tensor lg64 = Tensor::Empty(Shape{b}, DType::kF64), g64 = Tensor::Empty(Shape{b}, DType::kF64);
  Tensor lg32 = Tensor::Empty(Shape{b}, DType::kF32, Device::Cuda(0));
  Tensor g32 = Tensor::Empty(Shape{b}, DType::kF32, Device::Cuda(0));
  (*cpu)->parameters().ZeroGrad();
  (*cpu)->Forward(cctx, in64, lg64);
  (*cpu)->Loss(cctx, l64, TensorView(), g64);
  (*cpu)->Backward(cctx, g64);
  (*gpu)->parameters().ZeroGrad();
  (*gpu)->Forward(gctx, in32, lg32);
  (*gpu)->Loss(gctx, l32, TensorView(), g32);
  (*gpu)->Backward(gctx, g32);

  EXPECT_LT(MaxRel(AsDoubles(lg32), AsDoubles(lg64)), 1e-4);
  for (size_t i = 0; i < pc.parameters().size(); ++i) {
    EXPECT_LT(MaxRel(AsDoubles((*gpu)->parameters().parameters()[i].grad),
                     AsDoubles(pc.parameters()[i].grad)),
              1e-4)
        << pc.parameters()[i].name;
  }
  EXPECT_LT(
      MaxRel(AsDoubles((*gpu)->input_grads().sparse), AsDoubles((*cpu)->input_grads().sparse)),
      1e-4);
  for (int64_t j = 0; j < D.k; ++j) {
    EXPECT_LT(
        MaxRel(AsDoubles((*gpu)->input_grads().seq[j]), AsDoubles((*cpu)->input_grads().seq[j])),
        1e-4)
        << "seq." << j;
  }
}

}  // namespace
}  // namespace loom::model
