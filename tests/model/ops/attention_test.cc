// CPU attention (csrc/model/ops/attention_cpu.cc) against closed forms, the naive reference of
// attention_test_util.h, finite differences in double, and its own f64 run.
#include "csrc/model/ops/attention.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include <gtest/gtest.h>
#include <omp.h>

#include "tests/model/ops/attention_test_util.h"

namespace loom::ops {
namespace {

using testing::AttnDims;
using testing::AttnProblem;
using testing::AttnResult;
using testing::HostTensor;
using testing::MaxAbs;
using testing::MaxAbsDiff;
using testing::NaiveAttention;
using testing::PrePaddedMask;
using testing::RandomProblem;
using testing::RelL2;

constexpr double kInf = std::numeric_limits<double>::infinity();

template <typename T>
AttnResult RunCpu(const AttnProblem& p, const AttentionArgs& args = {}) {
  return testing::RunAttentionCpu<T>(p, args);
}

void ExpectClose(const AttnResult& got, const AttnResult& want, double rel_tol,
                 const std::string& what) {
  const struct {
    const char* name;
    const std::vector<double>& a;
    const std::vector<double>& b;
  } fields[] = {{"o", got.o, want.o},
                {"lse", got.lse, want.lse},
                {"grad_q", got.grad_q, want.grad_q},
                {"grad_k", got.grad_k, want.grad_k},
                {"grad_v", got.grad_v, want.grad_v}};
  for (const auto& f : fields) {
    const double err = MaxAbsDiff(f.a, f.b);
    EXPECT_LE(err, rel_tol * std::max(1.0, MaxAbs(f.b))) << what << ": " << f.name;
  }
}

struct Case {
  AttnDims dims;
  int mask_kind;  // 0 none, 1 pre-padded with mixed lengths, 2 random pattern
};

std::vector<uint8_t> MakeMask(const AttnDims& d, int kind, uint64_t seed) {
  if (kind == 0) return {};
  if (kind == 1) {
    return PrePaddedMask(d.batch, d.tk, std::min<int64_t>(4, d.tk), {d.tk, d.tk / 2, 1, d.tk / 3});
  }
  std::vector<double> u = testing::RandomValues(d.batch * d.tk, seed, 9, false, 0.0, 1.0);
  std::vector<uint8_t> mask(u.size());
  for (size_t i = 0; i < u.size(); ++i) mask[i] = u[i] < 0.6 ? 1 : 0;
  for (int64_t b = 0; b < d.batch; ++b) mask[static_cast<size_t>(b * d.tk)] = 1;
  return mask;
}

TEST(AttentionCpuTest, F64MatchesNaiveReference) {
  const Case cases[] = {
      {{2, 5, 7, 2, 4}, 0},      {{2, 37, 37, 2, 16}, 1},  {{3, 70, 130, 1, 12}, 2},
      {{4, 2, 104, 4, 16}, 1},   {{1, 1, 1, 1, 8}, 0},     {{2, 33, 65, 3, 5}, 2},
      {{2, 100, 100, 2, 64}, 1}, {{1, 9, 200, 2, 128}, 2}, {{1, 3, 17, 1, 256}, 1},
  };
  uint64_t seed = 1;
  for (const Case& c : cases) {
    const AttnProblem p =
        RandomProblem(c.dims, seed, DType::kF64, MakeMask(c.dims, c.mask_kind, seed));
    ++seed;
    ExpectClose(RunCpu<double>(p), NaiveAttention<double>(p), 1e-12,
                "B,Tq,Tk,H,Dh=" + std::to_string(c.dims.batch) + "," + std::to_string(c.dims.tq) +
                    "," + std::to_string(c.dims.tk) + "," + std::to_string(c.dims.heads) + "," +
                    std::to_string(c.dims.dh) + " mask " + std::to_string(c.mask_kind));
  }
}

TEST(AttentionCpuTest, ExplicitScale) {
  const AttnDims d{2, 6, 9, 2, 8};
  AttnProblem p = RandomProblem(d, 7, DType::kF64, MakeMask(d, 2, 7));
  p.scale = 0.3;
  AttentionArgs args;
  args.scale = 0.3;
  ExpectClose(RunCpu<double>(p, args), NaiveAttention<double>(p), 1e-12, "scale 0.3");
  EXPECT_DOUBLE_EQ(AttentionScale(AttentionArgs{}, 64), 0.125);
}

// Closed form: with one valid key j*, p = 1, so o = v[j*] exactly, lse = s[j*], grad_v[j*] =
// sum_i grad_o[i], and grad_q = grad_k = 0 (ds = p (dp - D) with D = <grad_o, v[j*]> = dp).
TEST(AttentionCpuTest, OneValidKeyOutputsItsValue) {
  const AttnDims d{2, 5, 70, 2, 16};
  std::vector<uint8_t> mask(static_cast<size_t>(d.batch * d.tk), 0);
  const int64_t key_of[2] = {3, 66};
  for (int64_t b = 0; b < d.batch; ++b) mask[static_cast<size_t>(b * d.tk + key_of[b])] = 1;
  const AttnProblem p = RandomProblem(d, 11, DType::kF32, mask);
  for (int prec = 0; prec < 2; ++prec) {
    const AttnResult r = prec == 0 ? RunCpu<float>(p) : RunCpu<double>(p);
    const double tol = prec == 0 ? 1e-6 : 1e-13;
    for (int64_t b = 0; b < d.batch; ++b) {
      for (int64_t h = 0; h < d.heads; ++h) {
        const int64_t j = key_of[b];
        for (int64_t i = 0; i < d.tq; ++i) {
          double dot = 0.0;
          for (int64_t e = 0; e < d.dh; ++e) {
            EXPECT_EQ(r.o[d.QRow(b, i, h) + e], p.v[d.KRow(b, j, h) + e]);
            dot += p.q[d.QRow(b, i, h) + e] * p.k[d.KRow(b, j, h) + e];
            EXPECT_NEAR(r.grad_q[d.QRow(b, i, h) + e], 0.0, tol);
          }
          EXPECT_NEAR(r.lse[(b * d.heads + h) * d.tq + i], dot * p.scale,
                      1e-5 * (1 + std::fabs(dot)));
        }
        for (int64_t e = 0; e < d.dh; ++e) {
          double sum = 0.0;
          for (int64_t i = 0; i < d.tq; ++i) sum += p.grad_o[d.QRow(b, i, h) + e];
          EXPECT_NEAR(r.grad_v[d.KRow(b, j, h) + e], sum, tol * 10);
          EXPECT_NEAR(r.grad_k[d.KRow(b, j, h) + e], 0.0, tol);
        }
      }
    }
  }
}

// Closed form: q = 0 makes every score 0, so p is uniform over the n valid keys: o = mean of the
// valid v, lse = log(n).
TEST(AttentionCpuTest, UniformScoresAverageTheValidValues) {
  const AttnDims d{2, 3, 130, 2, 8};
  const std::vector<uint8_t> mask = PrePaddedMask(d.batch, d.tk, 4, {130, 50});
  AttnProblem p = RandomProblem(d, 12, DType::kF64, mask);
  std::fill(p.q.begin(), p.q.end(), 0.0);
  const AttnResult r = RunCpu<double>(p);
  for (int64_t b = 0; b < d.batch; ++b) {
    int n = 0;
    for (int64_t j = 0; j < d.tk; ++j) n += mask[static_cast<size_t>(b * d.tk + j)];
    for (int64_t h = 0; h < d.heads; ++h) {
      for (int64_t e = 0; e < d.dh; ++e) {
        double mean = 0.0;
        for (int64_t j = 0; j < d.tk; ++j) {
          if (mask[static_cast<size_t>(b * d.tk + j)]) mean += p.v[d.KRow(b, j, h) + e];
        }
        mean /= n;
        for (int64_t i = 0; i < d.tq; ++i) EXPECT_NEAR(r.o[d.QRow(b, i, h) + e], mean, 1e-14);
      }
      for (int64_t i = 0; i < d.tq; ++i) {
        EXPECT_NEAR(r.lse[(b * d.heads + h) * d.tq + i], std::log(static_cast<double>(n)), 1e-14);
      }
    }
  }
}

// Masked keys may hold anything finite: the results do not change, and their grads are 0.
TEST(AttentionCpuTest, MaskedKeysAreIgnored) {
  const AttnDims d{3, 20, 90, 2, 16};
  const std::vector<uint8_t> mask = PrePaddedMask(d.batch, d.tk, 4, {90, 40, 7});
  const AttnProblem clean = RandomProblem(d, 13, DType::kF32, mask);
  AttnProblem dirty = clean;
  for (int64_t b = 0; b < d.batch; ++b) {
    for (int64_t j = 0; j < d.tk; ++j) {
      if (mask[static_cast<size_t>(b * d.tk + j)]) continue;
      for (int64_t h = 0; h < d.heads; ++h) {
        for (int64_t e = 0; e < d.dh; ++e) {
          dirty.k[d.KRow(b, j, h) + e] = (e % 2 ? 1e6 : -3e5);
          dirty.v[d.KRow(b, j, h) + e] = 7e5;
        }
      }
    }
  }
  const AttnResult a = RunCpu<float>(clean), b = RunCpu<float>(dirty);
  EXPECT_EQ(MaxAbsDiff(a.o, b.o), 0.0);
  EXPECT_EQ(MaxAbsDiff(a.lse, b.lse), 0.0);
  EXPECT_EQ(MaxAbsDiff(a.grad_q, b.grad_q), 0.0);
  EXPECT_EQ(MaxAbsDiff(a.grad_k, b.grad_k), 0.0);
  EXPECT_EQ(MaxAbsDiff(a.grad_v, b.grad_v), 0.0);
  for (int64_t bi = 0; bi < d.batch; ++bi) {
    for (int64_t j = 0; j < d.tk; ++j) {
      if (mask[static_cast<size_t>(bi * d.tk + j)]) continue;
      for (int64_t h = 0; h < d.heads; ++h) {
        for (int64_t e = 0; e < d.dh; ++e) {
          ASSERT_EQ(b.grad_k[d.KRow(bi, j, h) + e], 0.0);
          ASSERT_EQ(b.grad_v[d.KRow(bi, j, h) + e], 0.0);
        }
      }
    }
  }
  // And the result equals attention over the valid keys only.
  ExpectClose(RunCpu<double>(clean), NaiveAttention<double>(clean), 1e-12, "masked");
}

// A batch row with no valid key: o = 0, lse = -inf, and every gradient of that row is 0.
TEST(AttentionCpuTest, FullyMaskedRowOutputsZero) {
  const AttnDims d{2, 6, 70, 2, 8};
  std::vector<uint8_t> mask = PrePaddedMask(d.batch, d.tk, 2, {30});
  std::fill(mask.begin() + d.tk, mask.end(), 0);  // batch row 1: nothing valid
  const AttnProblem p = RandomProblem(d, 14, DType::kF64, mask);
  for (int prec = 0; prec < 2; ++prec) {
    const AttnResult r = prec == 0 ? RunCpu<float>(p) : RunCpu<double>(p);
    for (int64_t h = 0; h < d.heads; ++h) {
      for (int64_t i = 0; i < d.tq; ++i) {
        EXPECT_EQ(r.lse[(1 * d.heads + h) * d.tq + i], -kInf);
        for (int64_t e = 0; e < d.dh; ++e) {
          EXPECT_EQ(r.o[d.QRow(1, i, h) + e], 0.0);
          EXPECT_EQ(r.grad_q[d.QRow(1, i, h) + e], 0.0);
        }
      }
      for (int64_t j = 0; j < d.tk; ++j) {
        for (int64_t e = 0; e < d.dh; ++e) {
          EXPECT_EQ(r.grad_k[d.KRow(1, j, h) + e], 0.0);
          EXPECT_EQ(r.grad_v[d.KRow(1, j, h) + e], 0.0);
        }
      }
    }
  }
  ExpectClose(RunCpu<double>(p), NaiveAttention<double>(p), 1e-12, "fully masked row");
}

TEST(AttentionCpuTest, NoKeysAtAll) {
  const AttnDims d{2, 3, 0, 2, 8};
  const AttnProblem p = RandomProblem(d, 15, DType::kF64);
  const AttnResult r = RunCpu<double>(p);
  for (double x : r.o) EXPECT_EQ(x, 0.0);
  for (double x : r.grad_q) EXPECT_EQ(x, 0.0);
  for (double x : r.lse) EXPECT_EQ(x, -kInf);
}

// Central differences in double on L = sum(grad_o * o), for every element of q, k and v.
TEST(AttentionCpuTest, GradCheckF64) {
  for (const Case& c : {Case{{2, 3, 70, 2, 5}, 1}, Case{{2, 2, 9, 1, 8}, 2}}) {
    const AttnProblem p = RandomProblem(c.dims, 21, DType::kF64, MakeMask(c.dims, c.mask_kind, 21));
    const AttnResult analytic = RunCpu<double>(p);
    auto loss = [&](const AttnProblem& pp) {
      const AttnDims& d = pp.dims;
      Tensor q = HostTensor<double>(pp.q, d.QShape()), k = HostTensor<double>(pp.k, d.KShape()),
             v = HostTensor<double>(pp.v, d.KShape());
      Tensor mask = Tensor::FromVector(pp.mask, d.MaskShape());
      Tensor o = Tensor::Empty(d.QShape(), DType::kF64),
             lse = Tensor::Empty(d.LseShape(), DType::kF64);
      AttentionForward(ExecContext::Cpu(), AttentionArgs{}, q, k, v, mask, o, lse);
      double l = 0.0;
      const double* op = o.data<double>();
      for (int64_t i = 0; i < o.numel(); ++i) l += pp.grad_o[static_cast<size_t>(i)] * op[i];
      return l;
    };
    const double eps = 1e-5;
    double worst = 0.0;
    auto check = [&](std::vector<double> AttnProblem::*field, const std::vector<double>& grad,
                     const char* name) {
      for (size_t i = 0; i < grad.size(); ++i) {
        AttnProblem plus = p, minus = p;
        (plus.*field)[i] += eps;
        (minus.*field)[i] -= eps;
        const double fd = (loss(plus) - loss(minus)) / (2 * eps);
        worst = std::max(worst, std::fabs(fd - grad[i]));
        ASSERT_NEAR(grad[i], fd, 1e-8 * std::max(1.0, std::fabs(fd))) << name << "[" << i << "]";
      }
    };
    check(&AttnProblem::q, analytic.grad_q, "grad_q");
    check(&AttnProblem::k, analytic.grad_k, "grad_k");
    check(&AttnProblem::v, analytic.grad_v, "grad_v");
    EXPECT_GT(MaxAbs(analytic.grad_q), 1e-3);  // the check compared real gradients
    EXPECT_GT(MaxAbs(analytic.grad_k), 1e-3);
  }
}

// f32 against the f64 run on the same (f32-exact) inputs: its error is at most 3x the error of
// the naive f32 reference (the rule of docs/numerics.md), and far under 1e-5 relative.
TEST(AttentionCpuTest, F32MatchesF64) {
  const Case cases[] = {
      {{2, 104, 104, 2, 32}, 1}, {{2, 2, 300, 4, 16}, 1}, {{1, 64, 257, 2, 64}, 2}};
  uint64_t seed = 31;
  for (const Case& c : cases) {
    const AttnProblem p =
        RandomProblem(c.dims, seed, DType::kF32, MakeMask(c.dims, c.mask_kind, seed));
    ++seed;
    const AttnResult ref = RunCpu<double>(p);
    const AttnResult f32 = RunCpu<float>(p);
    const AttnResult naive = NaiveAttention<float>(p);
    const std::vector<double>* got[] = {&f32.o, &f32.grad_q, &f32.grad_k, &f32.grad_v};
    const std::vector<double>* base[] = {&naive.o, &naive.grad_q, &naive.grad_k, &naive.grad_v};
    const std::vector<double>* want[] = {&ref.o, &ref.grad_q, &ref.grad_k, &ref.grad_v};
    const char* names[] = {"o", "grad_q", "grad_k", "grad_v"};
    for (int f = 0; f < 4; ++f) {
      const double err = MaxAbsDiff(*got[f], *want[f]);
      const double naive_err = MaxAbsDiff(*base[f], *want[f]);
      EXPECT_LE(err, 3 * naive_err + 1e-7 * MaxAbs(*want[f])) << names[f] << " naive " << naive_err;
      EXPECT_LE(RelL2(*got[f], *want[f]), 1e-5) << names[f];
    }
    EXPECT_LE(MaxAbsDiff(f32.lse, ref.lse), 1e-5);
  }
}

// Results depend neither on the thread count nor on the run.
TEST(AttentionCpuTest, DeterministicAcrossThreadCounts) {
  const AttnDims d{3, 50, 77, 3, 16};
  const AttnProblem p = RandomProblem(d, 41, DType::kF32, MakeMask(d, 1, 41));
  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  const AttnResult one = RunCpu<float>(p);
  omp_set_num_threads(std::max(2, saved));
  const AttnResult many = RunCpu<float>(p);
  const AttnResult again = RunCpu<float>(p);
  omp_set_num_threads(saved);
  for (const AttnResult* r : {&many, &again}) {
    EXPECT_EQ(MaxAbsDiff(one.o, r->o), 0.0);
    EXPECT_EQ(MaxAbsDiff(one.lse, r->lse), 0.0);
    EXPECT_EQ(MaxAbsDiff(one.grad_q, r->grad_q), 0.0);
    EXPECT_EQ(MaxAbsDiff(one.grad_k, r->grad_k), 0.0);
    EXPECT_EQ(MaxAbsDiff(one.grad_v, r->grad_v), 0.0);
  }
}

TEST(AttentionCpuTest, ValidateNamesTheFault) {
  const Device cpu = Device::Cpu(), gpu = Device::Cuda(0);
  const TensorSpec q{Shape{2, 5, 4, 16}, DType::kF32}, k{Shape{2, 7, 4, 16}, DType::kF32};
  const TensorSpec mask{Shape{2, 7}, DType::kU8};
  EXPECT_TRUE(ValidateAttention({}, cpu, q, k, k, mask).ok());
  EXPECT_TRUE(ValidateAttention({}, cpu, q, k, k, TensorSpec{Shape{}, DType::kU8}).ok());
  EXPECT_TRUE(ValidateAttention({}, gpu, q, k, k, mask).ok());
  auto message = [&](const Status& s) { return s.ok() ? std::string("OK") : s.message(); };
  EXPECT_NE(
      message(ValidateAttention({}, cpu, TensorSpec{Shape{2, 5, 64}, DType::kF32}, k, k, mask))
          .find("q must be"),
      std::string::npos);
  EXPECT_NE(
      message(ValidateAttention({}, cpu, q, TensorSpec{Shape{2, 7, 2, 16}, DType::kF32}, k, mask))
          .find("k must be"),
      std::string::npos);
  EXPECT_NE(
      message(ValidateAttention({}, cpu, q, k, TensorSpec{Shape{2, 8, 4, 16}, DType::kF32}, mask))
          .find("v must"),
      std::string::npos);
  EXPECT_NE(message(ValidateAttention({}, cpu, q, k, k, TensorSpec{Shape{2, 6}, DType::kU8}))
                .find("key_mask"),
            std::string::npos);
  EXPECT_NE(
      message(ValidateAttention({}, cpu, q, k, k, TensorSpec{Shape{2, 7}, DType::kF32})).find("u8"),
      std::string::npos);
  EXPECT_NE(message(ValidateAttention({}, cpu, TensorSpec{Shape{2, 5, 4, 16}, DType::kBF16},
                                      TensorSpec{Shape{2, 7, 4, 16}, DType::kBF16},
                                      TensorSpec{Shape{2, 7, 4, 16}, DType::kBF16}, mask))
                .find("f32 or f64"),
            std::string::npos);
  EXPECT_NE(message(ValidateAttention({}, gpu, TensorSpec{Shape{2, 5, 4, 24}, DType::kF32},
                                      TensorSpec{Shape{2, 7, 4, 24}, DType::kF32},
                                      TensorSpec{Shape{2, 7, 4, 24}, DType::kF32}, mask))
                .find("16, 32, 64 or 128"),
            std::string::npos);
  AttentionArgs tc;
  tc.cuda_kernel = AttentionCudaKernel::kTensorCore;
  EXPECT_NE(message(ValidateAttention(tc, gpu, q, k, k, mask)).find("bf16"), std::string::npos);
  AttentionArgs bad_scale;
  bad_scale.scale = std::numeric_limits<double>::infinity();
  EXPECT_NE(message(ValidateAttention(bad_scale, cpu, q, k, k, mask)).find("scale"),
            std::string::npos);
  EXPECT_EQ(AttentionLseSpec(q), (TensorSpec{Shape{2, 4, 5}, DType::kF32}));
}

}  // namespace
}  // namespace loom::ops
