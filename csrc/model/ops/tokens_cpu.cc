// CPU token copies: one contiguous run of count·D elements per batch row.
#include "csrc/model/ops/tokens.h"

#include <cstring>

#include "csrc/model/ops/cpu_util.h"
#include "csrc/model/ops/op_util.h"

namespace loom::ops::internal {
namespace {

template <typename T>
void Accumulate(const T* src, T* dst, int64_t b, int64_t ns, int64_t nd, int64_t d,
                const CopyTokensArgs& args) {
  const int64_t run = args.count * d;
#pragma omp parallel for schedule(static) if (b * run > cpu::kParallelGrain)
  for (int64_t i = 0; i < b; ++i) {
    const T* s = src + (i * ns + args.src_begin) * d;
    T* t = dst + (i * nd + args.dst_begin) * d;
#pragma omp simd
    for (int64_t e = 0; e < run; ++e) t[e] += s[e];
  }
}

}  // namespace

void CopyTokensCpu(const CopyTokensArgs& args, ConstTensorView src, TensorView dst) {
  const int64_t b = src.dim(0), ns = src.dim(1), nd = dst.dim(1), d = src.dim(2);
  if (args.count == 0 || b == 0 || d == 0) return;
  if (args.accumulate) {
    LOOM_OPS_CPU_SWITCH("CopyTokens", src.dtype(), T,
                        Accumulate(src.data<T>(), dst.data<T>(), b, ns, nd, d, args));
    return;
  }
  const int64_t esize = DTypeSize(src.dtype());
  const size_t run = static_cast<size_t>(args.count * d * esize);
  const char* s = static_cast<const char*>(src.raw());
  char* t = static_cast<char*>(dst.raw());
#pragma omp parallel for schedule(static) if (b * static_cast <int64_t>(run) > \
                                              4 * cpu::kParallelGrain)
  for (int64_t i = 0; i < b; ++i) {
    std::memcpy(t + (i * nd + args.dst_begin) * d * esize,
                s + (i * ns + args.src_begin) * d * esize, run);
  }
}

}  // namespace loom::ops::internal
