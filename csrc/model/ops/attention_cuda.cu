// CUDA backend of attention.h: fused FlashAttention-style kernels that never store the (Tq, Tk)
// scores. Kernel families (attention_simt.cuh, attention_mma.cuh):
//   forward  one block per (b, h, 64 queries): sweeps K/V tiles with an online softmax, writes o
//            and lse.
//   backward two deterministic passes, no atomics: (1) one block per (b, h, key tile) sweeps the
//            query tiles and writes grad_k, grad_v; (2) one block per (b, h, 64 queries) sweeps
//            the key tiles and writes grad_q. Each recomputes p from the saved lse, and
//            D = rowsum(grad_o * o) from o (cheaper than a workspace for these lengths).
// Tile sizes and the launch plan: attention_kernels.cuh.
#include "csrc/model/ops/attention.h"

#include <cmath>
#include <cstdint>
#include <limits>

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <glog/logging.h>

#include "csrc/core/cuda_check.cuh"
#include "csrc/model/ops/attention_kernels.cuh"

namespace loom::ops::internal {
namespace {

using attn::kThreads;
using attn::Params;

constexpr size_t kDefaultSmemLimit = 48 * 1024;

template <typename Kernel>
void Launch(Kernel kernel, int64_t blocks, size_t smem_bytes, const Params& p,
            cudaStream_t stream) {
  if (blocks == 0) return;
  CHECK_LE(blocks, static_cast<int64_t>(std::numeric_limits<int>::max()))
      << "attention: grid of " << blocks << " blocks is too large";
  if (smem_bytes > kDefaultSmemLimit) {
    // Opt in to more than 48 KB of dynamic shared memory (per kernel, per device). Cheap enough
    // to repeat on every launch, and correct when a process uses several devices.
    LOOM_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(smem_bytes)));
  }
  kernel<<<static_cast<unsigned>(blocks), kThreads, smem_bytes, stream>>>(p);
  LOOM_CUDA_CHECK_LAUNCH();
}

void CheckAligned(const char* what, const void* ptr) {
  CHECK_EQ(reinterpret_cast<uintptr_t>(ptr) % 16, 0u)
      << "attention (cuda): " << what << " must be 16-byte aligned";
}

Params MakeParams(const AttentionArgs& args, ConstTensorView q, ConstTensorView k,
                  ConstTensorView v, ConstTensorView key_mask) {
  Params p;
  p.q = q.raw();
  p.k = k.raw();
  p.v = v.raw();
  p.mask = key_mask.rank() == 0 ? nullptr : key_mask.data<uint8_t>();
  CHECK_LE(q.numel(), std::numeric_limits<int64_t>::max() / 2);
  CHECK_LE(q.dim(1), std::numeric_limits<int>::max());
  CHECK_LE(k.dim(1), std::numeric_limits<int>::max());
  p.batch = static_cast<int>(q.dim(0));
  p.tq = static_cast<int>(q.dim(1));
  p.heads = static_cast<int>(q.dim(2));
  p.tk = static_cast<int>(k.dim(1));
  const double scale = AttentionScale(args, q.dim(3));
  p.scale = static_cast<float>(scale);
  for (auto [name, t] : {std::pair<const char*, ConstTensorView>{"q", q}, {"k", k}, {"v", v}}) {
    if (!t.empty()) CheckAligned(name, t.raw());
  }
  return p;
}

bool UseTensorCores(const AttentionArgs& args, DType dtype) {
  switch (args.cuda_kernel) {
    case AttentionCudaKernel::kSimt:
      return false;
    case AttentionCudaKernel::kTensorCore:
      return true;
    case AttentionCudaKernel::kAuto:
      break;
  }
  return dtype == DType::kBF16;
}

// The launcher of attention_kernels.cuh's plans: a real launch on `stream`.
struct CudaLauncher {
  cudaStream_t stream;
  void operator()(attn::KernelFn kernel, int64_t blocks, size_t smem_bytes, const Params& p) const {
    Launch(kernel, blocks, smem_bytes, p, stream);
  }
};

attn::Family FamilyFor(const AttentionArgs& args, DType dtype) {
  if (dtype == DType::kF32) return attn::Family::kSimtF32;
  return UseTensorCores(args, dtype) ? attn::Family::kMmaBf16 : attn::Family::kSimtBf16;
}

}  // namespace

void AttentionForwardCuda(const AttentionArgs& args, ConstTensorView q, ConstTensorView k,
                          ConstTensorView v, ConstTensorView key_mask, TensorView o, TensorView lse,
                          Stream stream) {
  Params p = MakeParams(args, q, k, v, key_mask);
  p.o = o.raw();
  p.lse = lse.data<float>();
  if (!o.empty()) CheckAligned("o", o.raw());
  attn::PlanForward(CudaLauncher{AsCudaStream(stream)}, p, FamilyFor(args, q.dtype()),
                    static_cast<int>(q.dim(3)));
}

void AttentionBackwardCuda(const AttentionArgs& args, ConstTensorView q, ConstTensorView k,
                           ConstTensorView v, ConstTensorView key_mask, ConstTensorView o,
                           ConstTensorView lse, ConstTensorView grad_o, TensorView grad_q,
                           TensorView grad_k, TensorView grad_v, Stream stream) {
  Params p = MakeParams(args, q, k, v, key_mask);
  p.o = const_cast<void*>(o.raw());  // read only in backward
  p.lse = const_cast<float*>(lse.data<float>());
  p.grad_o = grad_o.raw();
  p.grad_q = grad_q.raw();
  p.grad_k = grad_k.raw();
  p.grad_v = grad_v.raw();
  for (auto [name, t] : {std::pair<const char*, ConstTensorView>{"o", o},
                         {"grad_o", grad_o},
                         {"grad_q", grad_q},
                         {"grad_k", grad_k},
                         {"grad_v", grad_v}}) {
    if (!t.empty()) CheckAligned(name, t.raw());
  }
  attn::PlanBackward(CudaLauncher{AsCudaStream(stream)}, p, FamilyFor(args, q.dtype()),
                     static_cast<int>(q.dim(3)));
}

}  // namespace loom::ops::internal
