// CUDA token copies: a pitched 2-D memcpy (B rows of count·D elements) for plain copies, a
// grid-stride kernel for accumulation.
#include "csrc/model/ops/tokens.h"

#include "csrc/model/ops/cuda_util.cuh"

namespace loom::ops::internal {
namespace {

using cuda::Load;
using cuda::Store;

template <typename T>
__global__ void AccumulateKernel(const T* src, T* dst, int64_t b, int64_t ns, int64_t nd, int64_t d,
                                 int64_t src_begin, int64_t dst_begin, int64_t count) {
  const int64_t run = count * d, total = b * run;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = idx / run, e = idx % run;
    const int64_t s = (i * ns + src_begin) * d + e, t = (i * nd + dst_begin) * d + e;
    Store(dst, t, Load(dst, t) + Load(src, s));
  }
}

}  // namespace

void CopyTokensCuda(const CopyTokensArgs& args, ConstTensorView src, TensorView dst,
                    Stream stream) {
  const int64_t b = src.dim(0), ns = src.dim(1), nd = dst.dim(1), d = src.dim(2);
  if (args.count == 0 || b == 0 || d == 0) return;
  if (args.accumulate) {
    const int64_t total = b * args.count * d;
    LOOM_OPS_CUDA_SWITCH("CopyTokens", src.dtype(), T, {
      AccumulateKernel<T><<<cuda::GridFor(total), cuda::kBlock, 0, AsCudaStream(stream)>>>(
          src.data<T>(), dst.data<T>(), b, ns, nd, d, args.src_begin, args.dst_begin, args.count);
    });
    LOOM_CUDA_CHECK_LAUNCH();
    return;
  }
  const size_t esize = static_cast<size_t>(DTypeSize(src.dtype()));
  const char* s = static_cast<const char*>(src.raw()) + args.src_begin * d * esize;
  char* t = static_cast<char*>(dst.raw()) + args.dst_begin * d * esize;
  LOOM_CUDA_CHECK(cudaMemcpy2DAsync(t, nd * d * esize, s, ns * d * esize, args.count * d * esize, b,
                                    cudaMemcpyDeviceToDevice, AsCudaStream(stream)));
}

}  // namespace loom::ops::internal
