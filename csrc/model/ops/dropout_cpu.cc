// CPU dropout: one Philox block serves four consecutive elements (lanes 0..3), exactly as
// PhiloxUniform(seed, stream, i) defines them; OpenMP over blocks.
#include "csrc/model/ops/dropout.h"

#include <cstring>
#include <type_traits>

#include "csrc/core/philox.h"
#include "csrc/model/ops/cpu_util.h"
#include "csrc/model/ops/op_util.h"

namespace loom::ops::internal {
namespace {

// f(i, keep) for every element i < n.
template <typename F>
void ForEachKeep(const DropoutArgs& args, int64_t n, F f) {
  const int64_t blocks = (n + 3) / 4;
#pragma omp parallel for schedule(static) if (n > cpu::kParallelGrain / 4)
  for (int64_t b = 0; b < blocks; ++b) {
    const Philox4x32Result r = PhiloxBlock(args.seed, args.stream, static_cast<uint64_t>(b));
    const int64_t i0 = 4 * b;
    for (int lane = 0; lane < 4 && i0 + lane < n; ++lane) {
      f(i0 + lane, !(UintToUniform(r.v[lane]) < args.p));
    }
  }
}

// keep ? v : +0, without a data-dependent branch (a dropout mask is random: a branch would
// mispredict on a fraction p·(1 − p) of the elements). Same bits as the CUDA select.
template <typename T>
T KeepOrZero(T v, bool keep) {
  using Bits = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
  Bits b;
  std::memcpy(&b, &v, sizeof(b));
  b &= Bits{0} - static_cast<Bits>(keep);
  std::memcpy(&v, &b, sizeof(b));
  return v;
}

template <typename T>
void DropoutT(const DropoutArgs& args, const T* x, T* y, int64_t n) {
  if (args.p == 0.0f) {
    if (x != y) std::memcpy(y, x, sizeof(T) * n);
    return;
  }
  const T scale = static_cast<T>(1.0 / (1.0 - static_cast<double>(args.p)));
  ForEachKeep(args, n, [&](int64_t i, bool keep) { y[i] = KeepOrZero(x[i] * scale, keep); });
}

}  // namespace

void DropoutCpu(const DropoutArgs& args, ConstTensorView x, TensorView y) {
  LOOM_OPS_CPU_SWITCH("Dropout", x.dtype(), T, DropoutT(args, x.data<T>(), y.data<T>(), x.numel()));
}

void DropoutMaskCpu(const DropoutArgs& args, TensorView keep) {
  uint8_t* k = keep.data<uint8_t>();
  ForEachKeep(args, keep.numel(), [&](int64_t i, bool kept) { k[i] = kept ? 1 : 0; });
}

}  // namespace loom::ops::internal
