// The CUDA attention kernels (csrc/model/ops/attention_*.cuh), run on the CPU by the emulator of
// attention_cuda_emulator.h through the same launch plan as attention_cuda.cu
// (attention_kernels.cuh), and checked like attention_cuda_test.cc checks the GPU: against the
// CPU op in f64 under the tolerance rule of docs/numerics.md. This is what verifies the kernels'
// index math, masking, online softmax, barriers and tile bounds where no GPU exists; what it
// cannot verify is listed at the top of the emulator.
// clang-format off
// The emulator must come first: it defines the CUDA vocabulary the kernel headers use.
#include "tests/model/ops/attention_cuda_emulator.h"
#include "csrc/model/ops/attention_kernels.cuh"
// clang-format on

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "csrc/model/ops/attention.h"
#include "tests/model/ops/attention_test_util.h"

namespace loom::ops {
namespace {

namespace attn = internal::attn;
using testing::AttnDims;
using testing::AttnProblem;
using testing::AttnResult;
using testing::MaxAbsDiff;
using testing::NaiveAttention;
using testing::PrePaddedMask;
using testing::RandomProblem;
using testing::RunAttentionCpu;

// Runs every block of a launch, one after another, in the given fiber order.
struct EmulatedLauncher {
  bool reverse = false;
  size_t* max_smem = nullptr;
  void operator()(attn::KernelFn kernel, int64_t blocks, size_t smem_bytes,
                  const attn::Params& p) const {
    if (max_smem != nullptr && smem_bytes > *max_smem) *max_smem = smem_bytes;
    for (int64_t b = 0; b < blocks; ++b) {
      emu::RunBlock(
          static_cast<unsigned>(b), smem_bytes, [&] { kernel(p); }, reverse);
    }
  }
};

// A host buffer of `dtype` elements (f32 or bf16).
class Buffer {
 public:
  Buffer(const std::vector<double>& values, DType dtype) : dtype_(dtype), n_(values.size()) {
    Allocate();
    for (size_t i = 0; i < n_; ++i) Set(i, values[i]);
  }
  Buffer(size_t n, DType dtype) : dtype_(dtype), n_(n) {
    Allocate();
    std::memset(data_.get(), 0xff, Bytes());  // NaN poison: every element must be written
  }
  void* data() { return data_.get(); }
  std::vector<double> Values() const {
    std::vector<double> out(n_);
    for (size_t i = 0; i < n_; ++i) {
      if (dtype_ == DType::kF32) {
        float f;
        std::memcpy(&f, data_.get() + 4 * i, 4);
        out[i] = f;
      } else {
        uint16_t h;
        std::memcpy(&h, data_.get() + 2 * i, 2);
        out[i] = Bf16ToFloat(bf16{h});
      }
    }
    return out;
  }

 private:
  size_t Bytes() const { return n_ * (dtype_ == DType::kF32 ? 4 : 2); }
  void Allocate() {
    // 16-byte aligned (the kernels' widest access) and at most 15 bytes of slack, so an
    // AddressSanitizer build sees any access past the end.
    data_.reset(
        static_cast<char*>(std::aligned_alloc(16, std::max<size_t>(16, (Bytes() + 15) / 16 * 16))));
  }
  void Set(size_t i, double x) {
    if (dtype_ == DType::kF32) {
      const float f = static_cast<float>(x);
      std::memcpy(data_.get() + 4 * i, &f, 4);
    } else {
      const uint16_t h = FloatToBf16(static_cast<float>(x)).bits;
      std::memcpy(data_.get() + 2 * i, &h, 2);
    }
  }
  struct Free {
    void operator()(char* p) const { std::free(p); }
  };
  DType dtype_;
  size_t n_;
  std::unique_ptr<char, Free> data_;
};

DType DtypeOf(attn::Family f) { return f == attn::Family::kSimtF32 ? DType::kF32 : DType::kBF16; }

const char* Name(attn::Family f) {
  switch (f) {
    case attn::Family::kSimtF32:
      return "f32 simt";
    case attn::Family::kSimtBf16:
      return "bf16 simt";
    case attn::Family::kMmaBf16:
      return "bf16 tensor-core";
  }
  return "?";
}

AttnResult RunEmulated(const AttnProblem& pr, attn::Family family, bool reverse,
                       size_t* max_smem = nullptr) {
  const AttnDims& d = pr.dims;
  const DType dtype = DtypeOf(family);
  Buffer q(pr.q, dtype), k(pr.k, dtype), v(pr.v, dtype), go(pr.grad_o, dtype);
  Buffer o(static_cast<size_t>(d.QNumel()), dtype), gq(static_cast<size_t>(d.QNumel()), dtype);
  Buffer gk(static_cast<size_t>(d.KNumel()), dtype), gv(static_cast<size_t>(d.KNumel()), dtype);
  Buffer lse(static_cast<size_t>(d.batch * d.heads * d.tq), DType::kF32);
  attn::Params p;
  p.q = q.data();
  p.k = k.data();
  p.v = v.data();
  p.mask = pr.mask.empty() ? nullptr : pr.mask.data();
  p.o = o.data();
  p.lse = static_cast<float*>(lse.data());
  p.grad_o = go.data();
  p.grad_q = gq.data();
  p.grad_k = gk.data();
  p.grad_v = gv.data();
  p.batch = static_cast<int>(d.batch);
  p.tq = static_cast<int>(d.tq);
  p.tk = static_cast<int>(d.tk);
  p.heads = static_cast<int>(d.heads);
  p.scale = static_cast<float>(pr.scale);
  const EmulatedLauncher launch{reverse, max_smem};
  attn::PlanForward(launch, p, family, static_cast<int>(d.dh));
  attn::PlanBackward(launch, p, family, static_cast<int>(d.dh));
  return AttnResult{o.Values(), lse.Values(), gq.Values(), gk.Values(), gv.Values()};
}

std::string Describe(const AttnDims& d, attn::Family f) {
  return std::string(Name(f)) + " B=" + std::to_string(d.batch) + " Tq=" + std::to_string(d.tq) +
         " Tk=" + std::to_string(d.tk) + " H=" + std::to_string(d.heads) +
         " Dh=" + std::to_string(d.dh);
}

void ExpectSame(const AttnResult& a, const AttnResult& b, const std::string& what) {
  EXPECT_EQ(MaxAbsDiff(a.o, b.o), 0.0) << what << ": o";
  EXPECT_EQ(MaxAbsDiff(a.lse, b.lse), 0.0) << what << ": lse";
  EXPECT_EQ(MaxAbsDiff(a.grad_q, b.grad_q), 0.0) << what << ": grad_q";
  EXPECT_EQ(MaxAbsDiff(a.grad_k, b.grad_k), 0.0) << what << ": grad_k";
  EXPECT_EQ(MaxAbsDiff(a.grad_v, b.grad_v), 0.0) << what << ": grad_v";
}

// Checks one problem: the tolerance rule against the f64 CPU op, and the same bits in both fiber
// orders (no unordered shared-memory access).
void Check(const AttnProblem& p, attn::Family family) {
  const DType dtype = DtypeOf(family);
  const std::string what = Describe(p.dims, family);
  const AttnResult ref = RunAttentionCpu<double>(p, AttentionArgs{p.scale});
  const AttnResult naive = NaiveAttention<float>(p, dtype == DType::kBF16);
  const AttnResult fwd = RunEmulated(p, family, false);
  testing::ExpectWithinToleranceRule(fwd, ref, naive, dtype, what);
  ExpectSame(fwd, RunEmulated(p, family, true), what + " (reverse fiber order)");
}

constexpr attn::Family kFamilies[] = {attn::Family::kSimtF32, attn::Family::kMmaBf16,
                                      attn::Family::kSimtBf16};

// Self-attention over two key tiles (the second partial), pre-padded mixed lengths: every head
// dim and family.
TEST(AttentionEmulationTest, SelfAttentionEveryHeadDim) {
  uint64_t seed = 500;
  for (int64_t dh : {16, 32, 64, 128}) {
    const AttnDims d{2, 70, 70, 1, dh};
    const std::vector<uint8_t> mask = PrePaddedMask(d.batch, d.tk, 4, {70, 30});
    for (attn::Family f : kFamilies) Check(RandomProblem(d, seed, DtypeOf(f), mask), f);
    ++seed;
  }
}

// PMA (2 queries) over three key tiles, and a query count that leaves a partial query tile and
// a partial warp (Tq = 21).
TEST(AttentionEmulationTest, PmaAndPartialQueryTiles) {
  for (attn::Family f : kFamilies) {
    const AttnDims pma{6, 2, 150, 2, 32};
    Check(RandomProblem(pma, 601, DtypeOf(f), PrePaddedMask(6, 150, 4, {150, 9, 70})), f);
    const AttnDims odd{1, 21, 37, 2, 16};
    Check(RandomProblem(odd, 602, DtypeOf(f), PrePaddedMask(1, 37, 4, {20})), f);
  }
}

// Masks: a whole key tile masked (skipped), scattered keys, a batch row with no valid key (o = 0,
// lse = -inf, zero gradients, and grad_k/grad_v blocks that write zeros), no mask, explicit
// scale; a single query; one usable key per row (closed form).
TEST(AttentionEmulationTest, MaskPatternsAndEdgeCases) {
  const AttnDims d{2, 40, 140, 1, 32};
  std::vector<double> u = testing::RandomValues(d.batch * d.tk, 5, 9, false, 0.0, 1.0);
  std::vector<uint8_t> mask(u.size());
  for (size_t i = 0; i < u.size(); ++i) {
    const bool in_empty_tile = i >= 64 && i < 128;             // row 0, keys [64, 128)
    const bool in_empty_row = i >= static_cast<size_t>(d.tk);  // row 1: nothing valid
    mask[i] = (u[i] < 0.4 && !in_empty_tile && !in_empty_row) ? 1 : 0;
  }
  for (attn::Family f : kFamilies) {
    AttnProblem p = RandomProblem(d, 701, DtypeOf(f), mask);
    p.scale = 0.3;
    Check(p, f);
    Check(RandomProblem(AttnDims{1, 1, 2, 1, 64}, 702, DtypeOf(f)), f);
    Check(RandomProblem(AttnDims{1, 3, 5, 2, 128}, 703, DtypeOf(f)), f);
    // One usable key per row (Tk = 1; a mask with one valid key): the closed form.
    const AttnProblem one = RandomProblem(AttnDims{2, 1, 1, 2, 64}, 704, DtypeOf(f));
    testing::ExpectSingleKeyClosedForm(RunEmulated(one, f, false), one, DtypeOf(f),
                                       Describe(one.dims, f));
    std::vector<uint8_t> single(2 * 90, 0);
    single[17] = single[90 + 80] = 1;
    const AttnProblem masked = RandomProblem(AttnDims{2, 30, 90, 1, 16}, 705, DtypeOf(f), single);
    testing::ExpectSingleKeyClosedForm(RunEmulated(masked, f, false), masked, DtypeOf(f),
                                       Describe(masked.dims, f));
  }
}

// No keys at all, and no queries at all.
TEST(AttentionEmulationTest, EmptyDimensions) {
  for (attn::Family f : kFamilies) {
    const AttnProblem no_keys = RandomProblem(AttnDims{2, 5, 0, 1, 16}, 801, DtypeOf(f));
    const AttnResult r = RunEmulated(no_keys, f, false);
    for (double x : r.o) EXPECT_EQ(x, 0.0) << Name(f);
    for (double x : r.grad_q) EXPECT_EQ(x, 0.0) << Name(f);
    for (double x : r.lse) EXPECT_EQ(x, -std::numeric_limits<double>::infinity()) << Name(f);
    const AttnProblem no_queries = RandomProblem(AttnDims{2, 0, 9, 1, 16}, 802, DtypeOf(f));
    const AttnResult z = RunEmulated(no_queries, f, false);
    for (double x : z.grad_k) EXPECT_EQ(x, 0.0) << Name(f);
    for (double x : z.grad_v) EXPECT_EQ(x, 0.0) << Name(f);
  }
}

// The plan never asks for more shared memory than an sm_80 block can have (the emulator CHECKs
// each launch against 163 KB); this records the largest request.
TEST(AttentionEmulationTest, SharedMemoryFitsSm80) {
  size_t max_smem = 0;
  for (int64_t dh : {16, 32, 64, 128}) {
    for (attn::Family f : kFamilies) {
      RunEmulated(RandomProblem(AttnDims{1, 1, 1, 1, dh}, 900, DtypeOf(f)), f, false, &max_smem);
    }
  }
  EXPECT_GT(max_smem, 0u);
  EXPECT_LE(max_smem, emu::kMaxSmemBytes);
  RecordProperty("max_dynamic_smem_bytes", static_cast<int>(max_smem));
}

}  // namespace
}  // namespace loom::ops
