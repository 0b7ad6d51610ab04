// CUDA attention (attention_cuda.cu) against the CPU op in f64 on the same inputs, forward and
// backward, on fresh random inputs. Tolerance rule (docs/numerics.md, "Attention"): for o,
// grad_q, grad_k, grad_v the kernel's max error against the f64 reference is at most kMult times
// the max error of the naive reference of attention_test_util.h on the same inputs (f32: plain
// fp32; bf16: bf16 operands for every product, fp32 accumulation, outputs rounded to bf16), plus
// 1e-7 of the reference's magnitude (so that an exact naive result does not demand an exact
// kernel). kMult = 3 for f32, 2 for bf16. f32 must also stay within 1e-5 relative (L2) of the
// reference; lse (fp32 for every dtype) within 1e-6 relative.
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "csrc/core/gpu.h"
#include "csrc/model/ops/attention.h"
#include "tests/model/ops/attention_test_util.h"
#include "tests/testing/gpu_test_util.h"

namespace loom::ops {
namespace {

using testing::AttnDims;
using testing::AttnProblem;
using testing::AttnResult;
using testing::MaxAbs;
using testing::MaxAbsDiff;
using testing::NaiveAttention;
using testing::PrePaddedMask;
using testing::RandomProblem;
using testing::RelL2;
using testing::RunAttentionCpu;

Tensor DeviceTensor(const std::vector<double>& values, const Shape& shape, DType dtype,
                    Device device) {
  Tensor host;
  if (dtype == DType::kF32) {
    std::vector<float> f(values.begin(), values.end());
    host = Tensor::FromVector(f, shape);
  } else {
    std::vector<bf16> h(values.size());
    for (size_t i = 0; i < values.size(); ++i) h[i] = FloatToBf16(static_cast<float>(values[i]));
    host = Tensor::FromVector(h, shape);
  }
  return host.To(device);
}

std::vector<double> HostValues(const Tensor& t) {
  std::vector<double> out;
  if (t.dtype() == DType::kF32) {
    for (float x : t.ToVector<float>()) out.push_back(x);
  } else {
    for (bf16 x : t.ToVector<bf16>()) out.push_back(Bf16ToFloat(x));
  }
  return out;
}

// Device tensor filled with 0xff bytes (NaN in f32 and bf16): every output must be written.
Tensor Poisoned(const Shape& shape, DType dtype, Device device) {
  Tensor t = Tensor::Empty(shape, dtype, device);
  if (t.nbytes() > 0) gpu::MemsetAsync(t.raw(), 0xff, static_cast<size_t>(t.nbytes()));
  return t;
}

AttnResult RunCuda(const AttnProblem& p, DType dtype, AttentionCudaKernel kernel) {
  const AttnDims& d = p.dims;
  const ExecContext ctx = ExecContext::Cuda(0);
  const Device dev = ctx.device;
  Tensor q = DeviceTensor(p.q, d.QShape(), dtype, dev),
         k = DeviceTensor(p.k, d.KShape(), dtype, dev),
         v = DeviceTensor(p.v, d.KShape(), dtype, dev),
         go = DeviceTensor(p.grad_o, d.QShape(), dtype, dev);
  Tensor mask;
  if (!p.mask.empty()) mask = Tensor::FromVector(p.mask, d.MaskShape()).To(dev);
  Tensor o = Poisoned(d.QShape(), dtype, dev), lse = Poisoned(d.LseShape(), DType::kF32, dev);
  Tensor gq = Poisoned(d.QShape(), dtype, dev), gk = Poisoned(d.KShape(), dtype, dev),
         gv = Poisoned(d.KShape(), dtype, dev);
  gpu::DeviceSynchronize();
  AttentionArgs args;
  args.scale = p.scale;
  args.cuda_kernel = kernel;
  LOOM_CHECK_OK(ValidateAttention(args, dev, q.spec(), k.spec(), v.spec(),
                                  mask.defined() ? mask.spec() : TensorSpec{Shape{}, DType::kU8}));
  const ConstTensorView mask_view = mask.defined() ? mask.cview() : ConstTensorView();
  AttentionForward(ctx, args, q, k, v, mask_view, o, lse);
  AttentionBackward(ctx, args, q, k, v, mask_view, o, lse, go, gq, gk, gv);
  gpu::DeviceSynchronize();
  return AttnResult{HostValues(o), HostValues(lse), HostValues(gq), HostValues(gk), HostValues(gv)};
}

std::string Describe(const AttnDims& d, DType dtype, AttentionCudaKernel kernel) {
  return std::string(DTypeName(dtype)) +
         (kernel == AttentionCudaKernel::kSimt ? " simt" : " tensor-core") +
         " B=" + std::to_string(d.batch) + " Tq=" + std::to_string(d.tq) +
         " Tk=" + std::to_string(d.tk) + " H=" + std::to_string(d.heads) +
         " Dh=" + std::to_string(d.dh);
}

// The kernels that run `dtype`: f32 -> SIMT; bf16 -> tensor cores and the SIMT fallback.
std::vector<AttentionCudaKernel> KernelsFor(DType dtype) {
  if (dtype == DType::kF32) return {AttentionCudaKernel::kSimt};
  return {AttentionCudaKernel::kTensorCore, AttentionCudaKernel::kSimt};
}

// Every kernel of p's dtype against the f64 CPU op, under the tolerance rule (the reference and
// the naive baseline are computed once per problem).
void CheckAgainstCpu(const AttnProblem& p, DType dtype) {
  const AttnResult ref = RunAttentionCpu<double>(p, AttentionArgs{p.scale});
  const AttnResult naive = NaiveAttention<float>(p, dtype == DType::kBF16);
  for (AttentionCudaKernel kernel : KernelsFor(dtype)) {
    testing::ExpectWithinToleranceRule(RunCuda(p, dtype, kernel), ref, naive, dtype,
                                       Describe(p.dims, dtype, kernel));
  }
}

constexpr DType kDtypes[] = {DType::kF32, DType::kBF16};

// Self-attention (Tq = Tk = T), pre-padded batches of mixed valid lengths (4 CLS keys always
// valid), every head dim and length of the brief.
TEST(AttentionCudaTest, SelfAttentionMatchesCpu) {
  LOOM_SKIP_WITHOUT_GPU();
  uint64_t seed = 100;
  for (int64_t dh : {16, 32, 64, 128}) {
    for (int64_t t : {1, 7, 104, 1004}) {
      // Small problems get more rows and heads: a max error over few elements is a noisy
      // statistic, and the rule compares two of them.
      const AttnDims d{t >= 1000 ? 2 : (t >= 100 ? 3 : 16), t, t, t >= 100 ? 2 : 4, dh};
      const std::vector<uint8_t> mask =
          PrePaddedMask(d.batch, t, std::min<int64_t>(4, t), {t, t / 2 + 1, 1});
      for (DType dtype : kDtypes) {
        const AttnProblem p = RandomProblem(d, seed, dtype, mask);
        if (t == 1) {  // one key: exact-zero gradients, judged by the closed form
          for (AttentionCudaKernel kernel : KernelsFor(dtype)) {
            testing::ExpectSingleKeyClosedForm(RunCuda(p, dtype, kernel), p, dtype,
                                               Describe(d, dtype, kernel));
          }
        } else {
          CheckAgainstCpu(p, dtype);
        }
      }
      ++seed;
    }
  }
}

// PMA: 2 learned queries over T' keys.
TEST(AttentionCudaTest, PmaMatchesCpu) {
  LOOM_SKIP_WITHOUT_GPU();
  uint64_t seed = 200;
  for (int64_t dh : {16, 32, 64, 128}) {
    for (int64_t t : {7, 104, 1004}) {
      const AttnDims d{16, 2, t, 4, dh};
      const std::vector<uint8_t> mask =
          PrePaddedMask(d.batch, t, std::min<int64_t>(4, t), {t, t / 3 + 1, 1, t / 2, 3 * t / 4});
      for (DType dtype : kDtypes) CheckAgainstCpu(RandomProblem(d, seed, dtype, mask), dtype);
      ++seed;
    }
  }
}

// Scattered masks (partly masked tiles next to fully masked ones), no mask at all, an explicit
// scale, a batch row with no valid key, and lengths that are not multiples of any tile.
TEST(AttentionCudaTest, MaskPatternsAndEdgeCases) {
  LOOM_SKIP_WITHOUT_GPU();
  const AttnDims d{3, 77, 300, 2, 32};
  std::vector<double> u = testing::RandomValues(d.batch * d.tk, 7, 9, false, 0.0, 1.0);
  std::vector<uint8_t> scattered(u.size());
  std::vector<uint8_t> with_empty_row(u.size());
  for (size_t i = 0; i < u.size(); ++i) {
    const bool empty_tiles = i >= 64 && i < 192;  // batch row 0: keys [64, 192) all masked
    scattered[i] = (u[i] < 0.3 && !empty_tiles) ? 1 : 0;
    const bool empty_row = i >= static_cast<size_t>(d.tk) && i < static_cast<size_t>(2 * d.tk);
    with_empty_row[i] = empty_row ? 0 : scattered[i];
  }
  for (DType dtype : kDtypes) {
    CheckAgainstCpu(RandomProblem(d, 301, dtype, scattered), dtype);
    CheckAgainstCpu(RandomProblem(d, 302, dtype, {}), dtype);
    AttnProblem scaled = RandomProblem(d, 303, dtype, with_empty_row);
    scaled.scale = 0.05;
    CheckAgainstCpu(scaled, dtype);
    const AttnDims odd{2, 65, 129, 3, 64};
    CheckAgainstCpu(RandomProblem(odd, 304, dtype, PrePaddedMask(2, 129, 4, {129, 60})), dtype);
  }
}

// Masked keys may hold any finite values: the results are bit-identical to a run with clean
// padding, masked keys get exactly zero gradients, and the kernels are deterministic run to run.
void CheckMaskedKeysIgnoredAndDeterministic(const AttnDims& d, const std::vector<uint8_t>& mask,
                                            DType dtype, AttentionCudaKernel kernel) {
  const AttnProblem clean = RandomProblem(d, 401, dtype, mask);
  AttnProblem dirty = clean;
  for (int64_t b = 0; b < d.batch; ++b) {
    for (int64_t j = 0; j < d.tk; ++j) {
      if (mask[static_cast<size_t>(b * d.tk + j)]) continue;
      for (int64_t h = 0; h < d.heads; ++h) {
        for (int64_t e = 0; e < d.dh; ++e) {
          dirty.k[static_cast<size_t>(d.KRow(b, j, h) + e)] = e % 2 ? 4096.0 : -1024.0;
          dirty.v[static_cast<size_t>(d.KRow(b, j, h) + e)] = 65536.0;
        }
      }
    }
  }
  const AttnResult a = RunCuda(clean, dtype, kernel);
  const AttnResult a2 = RunCuda(clean, dtype, kernel);
  const AttnResult b = RunCuda(dirty, dtype, kernel);
  const std::string what = Describe(d, dtype, kernel);
  for (const AttnResult* r : {&a2, &b}) {
    EXPECT_EQ(MaxAbsDiff(a.o, r->o), 0.0) << what;
    EXPECT_EQ(MaxAbsDiff(a.lse, r->lse), 0.0) << what;
    EXPECT_EQ(MaxAbsDiff(a.grad_q, r->grad_q), 0.0) << what;
    EXPECT_EQ(MaxAbsDiff(a.grad_k, r->grad_k), 0.0) << what;
    EXPECT_EQ(MaxAbsDiff(a.grad_v, r->grad_v), 0.0) << what;
  }
  for (int64_t bi = 0; bi < d.batch; ++bi) {
    for (int64_t j = 0; j < d.tk; ++j) {
      if (mask[static_cast<size_t>(bi * d.tk + j)]) continue;
      for (int64_t h = 0; h < d.heads; ++h) {
        for (int64_t e = 0; e < d.dh; ++e) {
          ASSERT_EQ(b.grad_k[static_cast<size_t>(d.KRow(bi, j, h) + e)], 0.0) << what;
          ASSERT_EQ(b.grad_v[static_cast<size_t>(d.KRow(bi, j, h) + e)], 0.0) << what;
        }
      }
    }
  }
}

TEST(AttentionCudaTest, MaskedKeysIgnoredAndDeterministic) {
  LOOM_SKIP_WITHOUT_GPU();
  const AttnDims d{3, 100, 100, 2, 64};
  const std::vector<uint8_t> mask = PrePaddedMask(d.batch, d.tk, 4, {100, 40, 3});
  for (DType dtype : kDtypes) {
    for (AttentionCudaKernel kernel : KernelsFor(dtype)) {
      CheckMaskedKeysIgnoredAndDeterministic(d, mask, dtype, kernel);
    }
  }
}

}  // namespace
}  // namespace loom::ops
