// CUDA RoPE: a block per (position, group of outer rows). The block first builds the cos/sin
// table of its position in shared memory (double math, one pair per thread), then rotates
// every (row, head, pair) of its group with it.
#include "csrc/model/ops/rope.h"

#include "csrc/model/ops/cuda_util.cuh"

namespace loom::ops::internal {
namespace {

using cuda::AccT;
using cuda::Load;
using cuda::Store;

constexpr int64_t kOuterPerBlock = 16;

template <typename T, typename S = AccT<T>>
__global__ void RopeKernel(const T* x, T* y, int64_t outer, int64_t tokens, int64_t inner,
                           int64_t head_dim, int64_t blocks_per_t, double base,
                           int64_t position_offset, S sign) {
  __shared__ S cos_t[kRopeMaxHeadDim / 2];
  __shared__ S sin_t[kRopeMaxHeadDim / 2];
  const int64_t t = blockIdx.x / blocks_per_t, block = blockIdx.x % blocks_per_t;
  const int64_t pairs = head_dim / 2;
  const double p = static_cast<double>(position_offset + t);
  for (int64_t i = threadIdx.x; i < pairs; i += blockDim.x) {
    const double inv_freq =
        pow(base, -2.0 * static_cast<double>(i) / static_cast<double>(head_dim));
    double s, c;
    sincos(p * inv_freq, &s, &c);
    cos_t[i] = static_cast<S>(c);
    sin_t[i] = sign * static_cast<S>(s);
  }
  __syncthreads();
  const int64_t o0 = block * kOuterPerBlock;
  const int64_t o_count = (outer - o0) < kOuterPerBlock ? (outer - o0) : kOuterPerBlock;
  const int64_t per_row = inner * pairs;
  for (int64_t idx = threadIdx.x; idx < o_count * per_row; idx += blockDim.x) {
    const int64_t o = o0 + idx / per_row, rest = idx % per_row;
    const int64_t h = rest / pairs, i = rest % pairs;
    const int64_t at = ((o * tokens + t) * inner + h) * head_dim + 2 * i;
    const S x0 = Load(x, at), x1 = Load(x, at + 1);
    Store(y, at, x0 * cos_t[i] - x1 * sin_t[i]);
    Store(y, at + 1, x0 * sin_t[i] + x1 * cos_t[i]);
  }
}

}  // namespace

void RopeCuda(const RopeArgs& args, const RopeGeometry& g, bool inverse, ConstTensorView x,
              TensorView y, Stream stream) {
  if (g.outer == 0 || g.tokens == 0 || g.inner == 0 || g.head_dim == 0) return;
  const int64_t blocks_per_t = (g.outer + kOuterPerBlock - 1) / kOuterPerBlock;
  const int64_t grid = g.tokens * blocks_per_t;
  CHECK_LE(grid, (int64_t{1} << 31) - 1) << "Rope: too many (position, row group) blocks";
  LOOM_OPS_CUDA_SWITCH("Rope", x.dtype(), T, {
    using S = AccT<T>;
    RopeKernel<T><<<static_cast<unsigned>(grid), cuda::kBlock, 0, AsCudaStream(stream)>>>(
        x.data<T>(), y.data<T>(), g.outer, g.tokens, g.inner, g.head_dim, blocks_per_t, args.base,
        args.position_offset, inverse ? S(-1) : S(1));
  });
  LOOM_CUDA_CHECK_LAUNCH();
}

}  // namespace loom::ops::internal
