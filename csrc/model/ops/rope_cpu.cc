// CPU RoPE. The cos/sin table of one position (hd/2 pairs, double math) is built once per
// task and reused for every row and head at that position; tasks are (position, block of
// outer rows), so the table cost is negligible and the loop is OpenMP-parallel.
#include "csrc/model/ops/rope.h"

#include <cmath>

#include "csrc/model/ops/cpu_util.h"
#include "csrc/model/ops/op_util.h"

namespace loom::ops::internal {
namespace {

constexpr int64_t kOuterPerTask = 64;

template <typename T>
void RopeT(const RopeArgs& args, const RopeGeometry& g, bool inverse, const T* x, T* y) {
  const int64_t pairs = g.head_dim / 2;
  const int64_t blocks = (g.outer + kOuterPerTask - 1) / kOuterPerTask;
  const int64_t tasks = g.tokens * blocks;
  const int64_t row = g.inner * g.head_dim;  // elements of one (outer, t)
  const T sign = inverse ? T(-1) : T(1);
#pragma omp parallel for schedule(static) if (g.outer * g.tokens * row > cpu::kParallelGrain)
  for (int64_t task = 0; task < tasks; ++task) {
    const int64_t t = task / blocks, block = task % blocks;
    T cos_t[kRopeMaxHeadDim / 2], sin_t[kRopeMaxHeadDim / 2];
    const double p = static_cast<double>(args.position_offset + t);
    for (int64_t i = 0; i < pairs; ++i) {
      const double inv_freq =
          std::pow(args.base, -2.0 * static_cast<double>(i) / static_cast<double>(g.head_dim));
      const double theta = p * inv_freq;
      cos_t[i] = static_cast<T>(std::cos(theta));
      sin_t[i] = sign * static_cast<T>(std::sin(theta));
    }
    const int64_t o1 = std::min(g.outer, (block + 1) * kOuterPerTask);
    for (int64_t o = block * kOuterPerTask; o < o1; ++o) {
      const int64_t base = (o * g.tokens + t) * row;
      for (int64_t h = 0; h < g.inner; ++h) {
        const T* xh = x + base + h * g.head_dim;
        T* yh = y + base + h * g.head_dim;
#pragma omp simd
        for (int64_t i = 0; i < pairs; ++i) {
          const T x0 = xh[2 * i], x1 = xh[2 * i + 1];
          yh[2 * i] = x0 * cos_t[i] - x1 * sin_t[i];
          yh[2 * i + 1] = x0 * sin_t[i] + x1 * cos_t[i];
        }
      }
    }
  }
}

}  // namespace

void RopeCpu(const RopeArgs& args, const RopeGeometry& g, bool inverse, ConstTensorView x,
             TensorView y) {
  LOOM_OPS_CPU_SWITCH("Rope", x.dtype(), T, RopeT(args, g, inverse, x.data<T>(), y.data<T>()));
}

}  // namespace loom::ops::internal
