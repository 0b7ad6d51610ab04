// CUDA twin of dense_optimizer_cpu.cc: the whole update is ONE multi-tensor kernel launch over
// the chunk table (one block per chunk, grid-stride), and clipping adds two small kernels
// (per-chunk partial sums, then one block for the total). The per-element math is the shared
// code of fused_update.h; this file is compiled with -fmad=false (csrc/optim/CMakeLists.txt)
// so nvcc does not contract a*b+c into fma and every operation rounds as written, as on the
// CPU (-ffp-contract=off). The norm follows the canonical order of fused_update.h exactly:
// lane = threadIdx.x, then the same shared-memory tree, so it is bit-identical to the CPU.
// The clipping coefficient is computed on the device from norm_sq: no host synchronization.
#include "csrc/core/cuda_check.cuh"
#include "csrc/optim/fused_update.h"

namespace loom::optim::internal {
namespace {

static_assert(kLanes == 256, "kernels launch kLanes threads per block");

int GridFor(int64_t blocks) {
  return static_cast<int>(blocks < (1 << 20) ? (blocks > 0 ? blocks : 1) : (1 << 20));
}

__device__ double BlockTree(double* lanes) {
  for (int s = kLanes / 2; s > 0; s /= 2) {
    __syncthreads();
    if (threadIdx.x < s) lanes[threadIdx.x] += lanes[threadIdx.x + s];
  }
  __syncthreads();
  return lanes[0];
}

template <typename T>
__global__ void __launch_bounds__(kLanes) ChunkSumSqKernel(FusedPlan plan) {
  __shared__ double lanes[kLanes];
  for (int64_t c = blockIdx.x; c < plan.num_chunks; c += gridDim.x) {
    const Chunk ch = plan.chunks[c];
    const T* g = static_cast<const T*>(plan.slots[ch.tensor].grad) + ch.begin;
    double acc = 0.0;
    for (int i = threadIdx.x; i < ch.length; i += kLanes) acc += SquareF64(g[i]);
    lanes[threadIdx.x] = acc;
    const double total = BlockTree(lanes);
    if (threadIdx.x == 0) plan.partials[c] = total;
    __syncthreads();  // lanes[0] is read before the next chunk overwrites it
  }
}

__global__ void __launch_bounds__(kLanes) SumPartialsKernel(FusedPlan plan) {
  __shared__ double lanes[kLanes];
  double acc = 0.0;
  for (int64_t i = threadIdx.x; i < plan.num_chunks; i += kLanes) acc += plan.partials[i];
  lanes[threadIdx.x] = acc;
  const double total = BlockTree(lanes);
  if (threadIdx.x == 0) *plan.norm_sq = total;
}

template <typename T, UpdateKind kKind, bool kMomentum>
__global__ void __launch_bounds__(kLanes) FusedUpdateKernel(FusedPlan plan, UpdateScalars s) {
  const double norm_sq = s.max_grad_norm > 0.0 ? *plan.norm_sq : 0.0;
  const ElementScalars<T> with_wd = MakeElementScalars<T>(s, norm_sq, true);
  const ElementScalars<T> without_wd = MakeElementScalars<T>(s, norm_sq, false);
  for (int64_t c = blockIdx.x; c < plan.num_chunks; c += gridDim.x) {
    const Chunk ch = plan.chunks[c];
    const TensorSlot& slot = plan.slots[ch.tensor];
    const ElementScalars<T>& e = slot.apply_weight_decay ? with_wd : without_wd;
    T* w = static_cast<T*>(slot.value) + ch.begin;
    const T* g = static_cast<const T*>(slot.grad) + ch.begin;
    if constexpr (kKind == UpdateKind::kSgd) {
      T* buf = kMomentum ? static_cast<T*>(slot.state0) + ch.begin : nullptr;
      for (int i = threadIdx.x; i < ch.length; i += kLanes) {
        T wi = w[i];
        SgdElement<T, kMomentum>(e, wi, g[i], kMomentum ? buf + i : nullptr);
        w[i] = wi;
      }
    } else {
      T* m = static_cast<T*>(slot.state0) + ch.begin;
      T* v = static_cast<T*>(slot.state1) + ch.begin;
      for (int i = threadIdx.x; i < ch.length; i += kLanes) {
        T wi = w[i], mi = m[i], vi = v[i];
        AdamElement<T, kKind == UpdateKind::kAdamW>(e, wi, g[i], mi, vi);
        w[i] = wi;
        m[i] = mi;
        v[i] = vi;
      }
    }
  }
}

template <typename T>
void GradNormSqTyped(const FusedPlan& plan, cudaStream_t stream) {
  if (plan.num_chunks > 0) {
    ChunkSumSqKernel<T><<<GridFor(plan.num_chunks), kLanes, 0, stream>>>(plan);
    LOOM_CUDA_CHECK_LAUNCH();
  }
  SumPartialsKernel<<<1, kLanes, 0, stream>>>(plan);
  LOOM_CUDA_CHECK_LAUNCH();
}

template <typename T, UpdateKind kKind, bool kMomentum>
void Launch(const FusedPlan& plan, const UpdateScalars& s, cudaStream_t stream) {
  FusedUpdateKernel<T, kKind, kMomentum><<<GridFor(plan.num_chunks), kLanes, 0, stream>>>(plan, s);
  LOOM_CUDA_CHECK_LAUNCH();
}

template <typename T>
void FusedUpdateTyped(const FusedPlan& plan, const UpdateScalars& s, cudaStream_t stream) {
  if (plan.num_chunks == 0) return;
  switch (s.kind) {
    case UpdateKind::kAdam:
      Launch<T, UpdateKind::kAdam, false>(plan, s, stream);
      break;
    case UpdateKind::kAdamW:
      Launch<T, UpdateKind::kAdamW, false>(plan, s, stream);
      break;
    case UpdateKind::kSgd:
      if (s.momentum != 0.0) {
        Launch<T, UpdateKind::kSgd, true>(plan, s, stream);
      } else {
        Launch<T, UpdateKind::kSgd, false>(plan, s, stream);
      }
      break;
  }
}

}  // namespace

void GradNormSqCuda(const FusedPlan& plan, Stream stream) {
  if (plan.dtype == DType::kF32) {
    GradNormSqTyped<float>(plan, AsCudaStream(stream));
  } else {
    GradNormSqTyped<double>(plan, AsCudaStream(stream));
  }
}

void FusedUpdateCuda(const FusedPlan& plan, const UpdateScalars& s, Stream stream) {
  if (plan.dtype == DType::kF32) {
    FusedUpdateTyped<float>(plan, s, AsCudaStream(stream));
  } else {
    FusedUpdateTyped<double>(plan, s, AsCudaStream(stream));
  }
}

}  // namespace loom::optim::internal
