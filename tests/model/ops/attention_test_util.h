// Shared by the attention tests (CPU, CUDA, emulation): random problems, a plain naive
// reference written independently of csrc/model/ops/attention_cpu.cc (it materializes every
// score row and normalizes the probabilities explicitly, no blocking, no online softmax),
// runners and the tolerance rule. NaiveAttention<double> is the oracle of the CPU op;
// NaiveAttention<float> is the "naive implementation" whose error sets the tolerance of the
// optimized kernels (docs/numerics.md, "Attention").
#ifndef LOOM_TESTS_MODEL_OPS_ATTENTION_TEST_UTIL_H_
#define LOOM_TESTS_MODEL_OPS_ATTENTION_TEST_UTIL_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "csrc/core/dtype.h"
#include "csrc/core/philox.h"
#include "csrc/core/rng.h"
#include "csrc/core/tensor.h"
#include "csrc/model/ops/attention.h"

namespace loom::ops::testing {

struct AttnDims {
  int64_t batch = 1, tq = 1, tk = 1, heads = 1, dh = 16;
  int64_t QNumel() const { return batch * tq * heads * dh; }
  int64_t KNumel() const { return batch * tk * heads * dh; }
  Shape QShape() const { return Shape{batch, tq, heads, dh}; }
  Shape KShape() const { return Shape{batch, tk, heads, dh}; }
  Shape LseShape() const { return Shape{batch, heads, tq}; }
  Shape MaskShape() const { return Shape{batch, tk}; }
  int64_t QRow(int64_t b, int64_t i, int64_t h) const { return ((b * tq + i) * heads + h) * dh; }
  int64_t KRow(int64_t b, int64_t j, int64_t h) const { return ((b * tk + j) * heads + h) * dh; }
};

// Host problem in double; every value is exactly representable in the dtype under test
// (RoundTo rounds them first), so all precisions see the same inputs.
struct AttnProblem {
  AttnDims dims;
  double scale = 0.0;  // the resolved scale
  std::vector<double> q, k, v, grad_o;
  std::vector<uint8_t> mask;  // (B, Tk); empty = all valid
};

struct AttnResult {
  std::vector<double> o, lse, grad_q, grad_k, grad_v;
};

inline std::vector<double> RandomValues(int64_t n, uint64_t seed, uint64_t stream, bool normal,
                                        double a, double b) {
  Tensor t = Tensor::Empty(Shape{n}, DType::kF64);
  if (normal) {
    FillNormal(ExecContext::Cpu(), t, seed, MakeStream(kRngTest, stream, 0), a, b);
  } else {
    FillUniform(ExecContext::Cpu(), t, seed, MakeStream(kRngTest, stream, 0), a, b);
  }
  return t.ToVector<double>();
}

// Pre-padded key mask like the model's: positions [0, n_cls) valid (the CLS tokens), then
// padding, then the last valid_len[b] positions valid.
inline std::vector<uint8_t> PrePaddedMask(int64_t batch, int64_t tk, int64_t n_cls,
                                          const std::vector<int64_t>& valid_len) {
  std::vector<uint8_t> mask(static_cast<size_t>(batch * tk), 0);
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t len = valid_len[static_cast<size_t>(b % static_cast<int64_t>(valid_len.size()))];
    for (int64_t j = 0; j < tk; ++j) {
      const bool valid = j < n_cls || j >= tk - len;
      mask[static_cast<size_t>(b * tk + j)] = valid ? 1 : 0;
    }
  }
  return mask;
}

inline double RoundTo(DType dtype, double x) {
  switch (dtype) {
    case DType::kF32:
      return static_cast<double>(static_cast<float>(x));
    case DType::kBF16:
      return static_cast<double>(Bf16ToFloat(FloatToBf16(static_cast<float>(x))));
    default:
      return x;
  }
}

inline void RoundAll(DType dtype, std::vector<double>* xs) {
  for (double& x : *xs) x = RoundTo(dtype, x);
}

// q, k ~ N(0, 1) (scores of unit spread), v, grad_o ~ U(-1, 1); rounded to `dtype`.
inline AttnProblem RandomProblem(const AttnDims& dims, uint64_t seed, DType dtype,
                                 std::vector<uint8_t> mask = {}) {
  AttnProblem p;
  p.dims = dims;
  p.scale = 1.0 / std::sqrt(static_cast<double>(dims.dh));
  p.q = RandomValues(dims.QNumel(), seed, 1, true, 0.0, 1.0);
  p.k = RandomValues(dims.KNumel(), seed, 2, true, 0.0, 1.0);
  p.v = RandomValues(dims.KNumel(), seed, 3, false, -1.0, 1.0);
  p.grad_o = RandomValues(dims.QNumel(), seed, 4, false, -1.0, 1.0);
  RoundAll(dtype, &p.q);
  RoundAll(dtype, &p.k);
  RoundAll(dtype, &p.v);
  RoundAll(dtype, &p.grad_o);
  p.mask = std::move(mask);
  return p;
}

template <typename T>
Tensor HostTensor(const std::vector<double>& values, const Shape& shape) {
  std::vector<T> cast(values.size());
  for (size_t i = 0; i < values.size(); ++i) cast[i] = static_cast<T>(values[i]);
  return Tensor::FromVector(cast, shape);
}

template <typename T>
std::vector<double> ToDouble(const Tensor& t) {
  std::vector<T> v = t.ToVector<T>();
  return std::vector<double>(v.begin(), v.end());
}

// Runs the op on the CPU in precision T (forward, then backward with p.grad_o). Outputs are
// poisoned with NaN first, so an unwritten element fails every comparison.
template <typename T>
AttnResult RunAttentionCpu(const AttnProblem& p, const AttentionArgs& args = {}) {
  const AttnDims& d = p.dims;
  Tensor q = HostTensor<T>(p.q, d.QShape()), k = HostTensor<T>(p.k, d.KShape()),
         v = HostTensor<T>(p.v, d.KShape()), go = HostTensor<T>(p.grad_o, d.QShape());
  Tensor mask;
  if (!p.mask.empty()) mask = Tensor::FromVector(p.mask, d.MaskShape());
  const DType dtype = DTypeOf<T>::value;
  Tensor o = Tensor::Empty(d.QShape(), dtype), lse = Tensor::Empty(d.LseShape(), dtype);
  Tensor gq = Tensor::Empty(d.QShape(), dtype), gk = Tensor::Empty(d.KShape(), dtype),
         gv = Tensor::Empty(d.KShape(), dtype);
  for (Tensor* t : {&o, &lse, &gq, &gk, &gv}) {
    std::vector<T> nan(static_cast<size_t>(t->numel()), std::numeric_limits<T>::quiet_NaN());
    if (!nan.empty()) std::memcpy(t->raw(), nan.data(), nan.size() * sizeof(T));
  }
  const ExecContext cpu = ExecContext::Cpu();
  const ConstTensorView mask_view = mask.defined() ? mask.cview() : ConstTensorView();
  AttentionForward(cpu, args, q, k, v, mask_view, o, lse);
  AttentionBackward(cpu, args, q, k, v, mask_view, o, lse, go, gq, gk, gv);
  return AttnResult{ToDouble<T>(o), ToDouble<T>(lse), ToDouble<T>(gq), ToDouble<T>(gk),
                    ToDouble<T>(gv)};
}

// The naive reference, computed in T (sums in T, exp/log in T), materializing every score row
// and normalizing p explicitly; its backward uses D = <grad_o, o> with o as its own forward
// stored it (FlashAttention-2's form, as the op's backward; mathematically D = sum_j p_j dp_j).
// With bf16 = true it is the "naive bf16 implementation" of the tolerance rule: what a plain,
// unfused bf16 implementation computes when each op reads bf16 tensors, accumulates in fp32 and
// writes bf16. Inputs are bf16 (RandomProblem rounded them); the materialized tensors
// p = softmax(s), o = p.v, dp = grad_o.v^T, ds = p*(dp - D) and the three gradients are rounded
// to bf16; the scores s stay fp32 (a softmax fused over fp32 logits; rounding them too, as
// FlashAttention's reference does, would make the baseline noisier and the rule laxer); D is
// accumulated in fp32 from the bf16 o.
template <typename T>
AttnResult NaiveAttention(const AttnProblem& p, bool bf16 = false) {
  const AttnDims& d = p.dims;
  const T scale = static_cast<T>(p.scale);
  AttnResult r;
  r.o.assign(static_cast<size_t>(d.QNumel()), 0.0);
  r.grad_q.assign(static_cast<size_t>(d.QNumel()), 0.0);
  r.lse.assign(static_cast<size_t>(d.batch * d.heads * d.tq), 0.0);
  std::vector<T> gk(static_cast<size_t>(d.KNumel()), T(0)), gv(gk.size(), T(0));
  auto at = [](const std::vector<double>& x, int64_t i) {
    return static_cast<T>(x[static_cast<size_t>(i)]);
  };
  auto operand = [bf16](T x) {
    return bf16 ? static_cast<T>(Bf16ToFloat(FloatToBf16(static_cast<float>(x)))) : x;
  };
  // (b, h) pairs are independent (each owns its grad_k/grad_v rows): parallel, deterministic.
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t bh = 0; bh < d.batch * d.heads; ++bh) {
    const int64_t b = bh / d.heads, h = bh % d.heads;
    std::vector<T> s(static_cast<size_t>(d.tk)), dp(s.size());
    {
      for (int64_t i = 0; i < d.tq; ++i) {
        const int64_t qi = d.QRow(b, i, h);
        T mx = -std::numeric_limits<T>::infinity();
        bool any = false;
        for (int64_t j = 0; j < d.tk; ++j) {
          if (!p.mask.empty() && p.mask[static_cast<size_t>(b * d.tk + j)] == 0) continue;
          const int64_t kj = d.KRow(b, j, h);
          T dot = 0;
          for (int64_t e = 0; e < d.dh; ++e) dot += at(p.q, qi + e) * at(p.k, kj + e);
          s[static_cast<size_t>(j)] = dot * scale;
          mx = std::max(mx, s[static_cast<size_t>(j)]);
          any = true;
        }
        const size_t lse_i = static_cast<size_t>((b * d.heads + h) * d.tq + i);
        if (!any) {
          r.lse[lse_i] = -std::numeric_limits<double>::infinity();
          continue;  // o, grad_q stay 0
        }
        T sum = 0;
        for (int64_t j = 0; j < d.tk; ++j) {
          if (!p.mask.empty() && p.mask[static_cast<size_t>(b * d.tk + j)] == 0) continue;
          s[static_cast<size_t>(j)] = std::exp(s[static_cast<size_t>(j)] - mx);
          sum += s[static_cast<size_t>(j)];
        }
        r.lse[lse_i] = static_cast<double>(mx + std::log(sum));
        // s now holds normalized probabilities.
        for (int64_t j = 0; j < d.tk; ++j) s[static_cast<size_t>(j)] /= sum;
        // Forward output, and dp_j = <grad_o_i, v_j>.
        std::vector<T> o(static_cast<size_t>(d.dh), T(0));
        for (int64_t j = 0; j < d.tk; ++j) {
          if (!p.mask.empty() && p.mask[static_cast<size_t>(b * d.tk + j)] == 0) continue;
          const int64_t vj = d.KRow(b, j, h);
          T dot = 0;
          const T pj = operand(s[static_cast<size_t>(j)]);
          for (int64_t e = 0; e < d.dh; ++e) {
            o[static_cast<size_t>(e)] += pj * at(p.v, vj + e);
            dot += at(p.grad_o, qi + e) * at(p.v, vj + e);
          }
          dp[static_cast<size_t>(j)] = operand(dot);
        }
        // D = <grad_o_i, o_i> from o as the forward stores it (bf16 in bf16 mode), the
        // FlashAttention-2 form every backward here uses.
        T delta = 0;
        for (int64_t e = 0; e < d.dh; ++e) {
          r.o[static_cast<size_t>(qi + e)] = static_cast<double>(o[static_cast<size_t>(e)]);
          delta += at(p.grad_o, qi + e) * operand(o[static_cast<size_t>(e)]);
        }
        std::vector<T> gq(static_cast<size_t>(d.dh), T(0));
        for (int64_t j = 0; j < d.tk; ++j) {
          if (!p.mask.empty() && p.mask[static_cast<size_t>(b * d.tk + j)] == 0) continue;
          const int64_t kj = d.KRow(b, j, h);
          const T pj = operand(s[static_cast<size_t>(j)]);
          const T ds = operand(pj * (dp[static_cast<size_t>(j)] - delta));
          for (int64_t e = 0; e < d.dh; ++e) {
            gq[static_cast<size_t>(e)] += ds * at(p.k, kj + e);
            gk[static_cast<size_t>(kj + e)] += ds * at(p.q, qi + e);
            gv[static_cast<size_t>(kj + e)] += pj * at(p.grad_o, qi + e);
          }
        }
        for (int64_t e = 0; e < d.dh; ++e) {
          r.grad_q[static_cast<size_t>(qi + e)] =
              static_cast<double>(gq[static_cast<size_t>(e)] * scale);
        }
      }
    }
  }
  r.grad_k.resize(gk.size());
  r.grad_v.resize(gv.size());
  for (size_t i = 0; i < gk.size(); ++i) {
    r.grad_k[i] = static_cast<double>(gk[i] * scale);
    r.grad_v[i] = static_cast<double>(gv[i]);
  }
  if (bf16) {
    for (auto* xs : {&r.o, &r.grad_q, &r.grad_k, &r.grad_v}) RoundAll(DType::kBF16, xs);
  }
  return r;
}

// max_i |a_i - b_i| over finite pairs; infinities must match exactly (else returns +inf), NaN
// anywhere returns NaN.
inline double MaxAbsDiff(const std::vector<double>& a, const std::vector<double>& b) {
  if (a.size() != b.size()) return std::numeric_limits<double>::quiet_NaN();
  double m = 0.0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::isnan(a[i]) || std::isnan(b[i])) return std::numeric_limits<double>::quiet_NaN();
    if (std::isinf(a[i]) || std::isinf(b[i])) {
      if (a[i] != b[i]) return std::numeric_limits<double>::infinity();
      continue;
    }
    m = std::max(m, std::fabs(a[i] - b[i]));
  }
  return m;
}

inline double MaxAbs(const std::vector<double>& a) {
  double m = 0.0;
  for (double x : a) {
    if (std::isfinite(x)) m = std::max(m, std::fabs(x));
  }
  return m;
}

// ||a - b||_2 / ||b||_2 over finite entries (1 if b is all zero and a is not).
inline double RelL2(const std::vector<double>& a, const std::vector<double>& b) {
  double num = 0.0, den = 0.0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    if (!std::isfinite(b[i])) continue;
    num += (a[i] - b[i]) * (a[i] - b[i]);
    den += b[i] * b[i];
  }
  if (den == 0.0) return num == 0.0 ? 0.0 : 1.0;
  return std::sqrt(num / den);
}

// The tolerance rule of docs/numerics.md ("Attention") for a CUDA result `got`: for o, grad_q,
// grad_k, grad_v the max error against the f64 reference `ref` is at most kMult times the max
// error of the naive reference `naive` (NaiveAttention<float>(p, dtype == bf16)), plus 1e-7 of
// the reference's magnitude; kMult = 3 for f32, 2 for bf16. f32 also stays within 1e-5
// relative (L2); lse (fp32 for every dtype) within 1e-6 relative, -inf exactly where ref has it.
inline void ExpectWithinToleranceRule(const AttnResult& got, const AttnResult& ref,
                                      const AttnResult& naive, DType dtype,
                                      const std::string& what) {
  const double mult = dtype == DType::kF32 ? 3.0 : 2.0;
  const struct {
    const char* name;
    const std::vector<double>& got;
    const std::vector<double>& ref;
    const std::vector<double>& naive;
  } fields[] = {{"o", got.o, ref.o, naive.o},
                {"grad_q", got.grad_q, ref.grad_q, naive.grad_q},
                {"grad_k", got.grad_k, ref.grad_k, naive.grad_k},
                {"grad_v", got.grad_v, ref.grad_v, naive.grad_v}};
  for (const auto& f : fields) {
    const double err = MaxAbsDiff(f.got, f.ref);
    const double naive_err = MaxAbsDiff(f.naive, f.ref);
    const double floor = 1e-7 * std::max(1.0, MaxAbs(f.ref));
    EXPECT_LE(err, mult * naive_err + floor)
        << what << ": " << f.name << " error " << err << ", naive error " << naive_err;
    if (std::getenv("LOOM_ATTENTION_TEST_VERBOSE") != nullptr) {
      std::printf("%-60s %-7s err %.3e naive %.3e ratio %.2f (limit %.0f)\n", what.c_str(), f.name,
                  err, naive_err, naive_err > 0 ? err / naive_err : 0.0, mult);
    }
    if (dtype == DType::kF32) {
      EXPECT_LE(RelL2(f.got, f.ref), 1e-5) << what << ": " << f.name;
    }
  }
  // lse is an fp32 output for every input dtype (its scores are exact products of the inputs):
  // fp32 accuracy, and -inf exactly where the reference has it.
  EXPECT_LE(MaxAbsDiff(got.lse, ref.lse), 1e-6 * std::max(1.0, MaxAbs(ref.lse))) << what << ": lse";
}

// Closed form for problems where every query sees exactly ONE usable key j(b) (Tk = 1, or a mask
// with one valid key per row): p = 1, so o = v[j] exactly, lse = s[j], grad_v[j] = sum_i
// grad_o[i]; grad_q and grad_k are 0 in exact arithmetic (ds = dp - D with D = <grad_o, v[j]> =
// dp), so a kernel may only leave rounding noise there: at most 1e-5 of the size of the terms
// |grad_o| |v| |k| scale that cancel. (The tolerance rule cannot judge these: the reference and
// the naive error are exactly 0.)
inline void ExpectSingleKeyClosedForm(const AttnResult& got, const AttnProblem& p, DType dtype,
                                      const std::string& what) {
  const AttnDims& d = p.dims;
  const double eps = dtype == DType::kBF16 ? 1.0 / 256 : 1e-6;  // relative, for sums
  for (int64_t b = 0; b < d.batch; ++b) {
    int64_t j = -1;
    for (int64_t c = 0; c < d.tk; ++c) {
      if (p.mask.empty() || p.mask[static_cast<size_t>(b * d.tk + c)] != 0) {
        ASSERT_EQ(j, -1) << what << ": not a single-key problem";
        j = c;
      }
    }
    ASSERT_GE(j, 0) << what;
    for (int64_t h = 0; h < d.heads; ++h) {
      double term = 0.0;  // the size of the products that cancel in grad_q / grad_k
      for (int64_t i = 0; i < d.tq; ++i) {
        double dot = 0.0, go_v = 0.0;
        for (int64_t e = 0; e < d.dh; ++e) {
          EXPECT_EQ(got.o[static_cast<size_t>(d.QRow(b, i, h) + e)],
                    p.v[static_cast<size_t>(d.KRow(b, j, h) + e)])
              << what << ": o";
          dot += p.q[static_cast<size_t>(d.QRow(b, i, h) + e)] *
                 p.k[static_cast<size_t>(d.KRow(b, j, h) + e)];
          go_v += std::fabs(p.grad_o[static_cast<size_t>(d.QRow(b, i, h) + e)] *
                            p.v[static_cast<size_t>(d.KRow(b, j, h) + e)]);
        }
        EXPECT_NEAR(got.lse[static_cast<size_t>((b * d.heads + h) * d.tq + i)], dot * p.scale,
                    1e-6 * std::max(1.0, std::fabs(dot * p.scale)))
            << what << ": lse";
        term = std::max(term, go_v);
      }
      double kmax = 0.0, qmax = 0.0;
      for (int64_t e = 0; e < d.dh; ++e)
        kmax = std::max(kmax, std::fabs(p.k[static_cast<size_t>(d.KRow(b, j, h) + e)]));
      for (int64_t i = 0; i < d.tq; ++i) {
        for (int64_t e = 0; e < d.dh; ++e)
          qmax = std::max(qmax, std::fabs(p.q[static_cast<size_t>(d.QRow(b, i, h) + e)]));
      }
      const double noise =
          1e-5 * std::max(1.0, term) * std::max(kmax, qmax) * p.scale * static_cast<double>(d.tq);
      for (int64_t i = 0; i < d.tq; ++i) {
        for (int64_t e = 0; e < d.dh; ++e) {
          EXPECT_LE(std::fabs(got.grad_q[static_cast<size_t>(d.QRow(b, i, h) + e)]), noise)
              << what << ": grad_q";
        }
      }
      for (int64_t e = 0; e < d.dh; ++e) {
        double sum = 0.0;
        for (int64_t i = 0; i < d.tq; ++i)
          sum += p.grad_o[static_cast<size_t>(d.QRow(b, i, h) + e)];
        EXPECT_NEAR(got.grad_v[static_cast<size_t>(d.KRow(b, j, h) + e)], sum,
                    eps * std::max(1.0, std::fabs(sum)))
            << what << ": grad_v";
        EXPECT_LE(std::fabs(got.grad_k[static_cast<size_t>(d.KRow(b, j, h) + e)]), noise)
            << what << ": grad_k";
      }
    }
  }
}

}  // namespace loom::ops::testing

#endif  // LOOM_TESTS_MODEL_OPS_ATTENTION_TEST_UTIL_H_
