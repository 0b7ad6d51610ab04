// Multi-head scaled-dot-product attention with a key-padding mask (no causal mask): the Sequence
// Arch self-attention (Tq = Tk = T') and PMA (Tq = 2 learned queries, Tk = T'); spec §3.2, §3.4.
//
// Math, for every batch row b, head h and query i (j runs over the VALID keys only,
// key_mask[b, j] = 1):
//   s[b,h,i,j] = scale * <q[b,i,h,:], k[b,j,h,:]>          scale defaults to 1/sqrt(Dh)
//   p[b,h,i,j] = exp(s[b,h,i,j] - lse[b,h,i])              (softmax over the valid keys)
//   lse[b,h,i] = log(sum_j exp(s[b,h,i,j]))                (natural log)
//   o[b,i,h,:] = sum_j p[b,h,i,j] * v[b,j,h,:]
// A query whose keys are ALL masked (or Tk = 0) gets o = 0, lse = -inf, and contributes no
// gradient. Masked keys get grad_k = grad_v = 0. The k and v rows of masked keys must be finite
// (any finite values give bit-identical results): the CPU never reads them, the CUDA kernels
// multiply them by exact zeros (0 * NaN would be NaN).
//
// Backward (FlashAttention-2 form, with D = rowsum(grad_o * o)):
//   D[b,h,i]      = <grad_o[b,i,h,:], o[b,i,h,:]>
//   ds[b,h,i,j]   = p[b,h,i,j] * (<grad_o[b,i,h,:], v[b,j,h,:]> - D[b,h,i])
//   grad_q[b,i,h,:] = scale * sum_j ds[b,h,i,j] * k[b,j,h,:]
//   grad_k[b,j,h,:] = scale * sum_i ds[b,h,i,j] * q[b,i,h,:]
//   grad_v[b,j,h,:] = sum_i p[b,h,i,j] * grad_o[b,i,h,:]
// The (Tq, Tk) scores are never stored: backward recomputes p from q, k and the saved lse.
//
// Shapes (B batch, Tq queries, Tk keys, H heads, Dh = D / H head dim). Layout is token-major,
// (B, T, H, Dh): exactly the (B, T, D) output of a q/k/v projection viewed as (B, T, H, Dh),
// so no transpose is needed before or after (o feeds the output projection as (B, Tq, D)).
//   q, o, grad_q, grad_o : (B, Tq, H, Dh)
//   k, v, grad_k, grad_v : (B, Tk, H, Dh)
//   key_mask             : (B, Tk) u8, 1 = valid key, 0 = padding; an EMPTY view = all valid
//   lse                  : (B, H, Tq) f32 (f64 when the inputs are f64), written by Forward,
//                          read by Backward
// q, k, v, o and all gradients share one dtype: f32 or f64 on the CPU; f32 or bf16 on CUDA
// (bf16 is a storage format there: products and sums are fp32, outputs are rounded once).
// Head dim: 1..256 on the CPU; 16, 32, 64 or 128 on CUDA. Views are contiguous; on CUDA every
// data pointer must be 16-byte aligned (the allocator's are).
//
// Gradient convention: there are no parameters; the input gradients grad_q, grad_k, grad_v are
// OVERWRITTEN (=). Backward needs o and lse exactly as Forward wrote them.
//
// Determinism: both backends are deterministic run to run (fixed summation order, no float
// atomics). Backends: attention_cpu.cc (reference and CPU production path: blocked online
// softmax, OpenMP over (b, h)), attention_cuda.cu (fused FlashAttention-style kernels).
// Error bounds and the test tolerance rule: docs/numerics.md, section "Attention".
#ifndef LOOM_MODEL_OPS_ATTENTION_H_
#define LOOM_MODEL_OPS_ATTENTION_H_

#include "csrc/core/device.h"
#include "csrc/core/status.h"
#include "csrc/core/tensor.h"

namespace loom::ops {

// Which CUDA kernel family runs (ignored on the CPU).
enum class AttentionCudaKernel {
  kAuto = 0,        // bf16 -> kTensorCore, f32 -> kSimt
  kSimt = 1,        // fp32 CUDA-core kernels (f32 and bf16 inputs)
  kTensorCore = 2,  // bf16 mma.sync (m16n8k16, fp32 accumulation); bf16 inputs only
};

struct AttentionArgs {
  // Multiplies q.k before the softmax. 0 means the default 1 / sqrt(Dh). Must be finite.
  double scale = 0.0;
  AttentionCudaKernel cuda_kernel = AttentionCudaKernel::kAuto;
};

// Largest head dim the CPU backend takes; the CUDA backend takes exactly 16, 32, 64, 128.
inline constexpr int kAttentionMaxHeadDimCpu = 256;

// The scale actually used: args.scale, or 1 / sqrt(head_dim) when args.scale == 0.
double AttentionScale(const AttentionArgs& args, int64_t head_dim);

// The spec of lse for a given q spec: (B, H, Tq), f32 (f64 for f64 inputs).
TensorSpec AttentionLseSpec(const TensorSpec& q);

// InvalidArgument (naming the tensor and the value at fault) unless q, k, v, key_mask have the
// shapes and dtypes in the table above for `device`, and args is valid. key_mask may have an
// empty shape (rank 0) to mean "all keys valid". Layers call this at plan time; the step
// functions CHECK the same conditions.
Status ValidateAttention(const AttentionArgs& args, Device device, const TensorSpec& q,
                         const TensorSpec& k, const TensorSpec& v, const TensorSpec& key_mask);

// Writes o (B, Tq, H, Dh) and lse (B, H, Tq). Never allocates device memory.
void AttentionForward(const ExecContext& ctx, const AttentionArgs& args, ConstTensorView q,
                      ConstTensorView k, ConstTensorView v, ConstTensorView key_mask, TensorView o,
                      TensorView lse);

// Overwrites grad_q, grad_k, grad_v from grad_o and the forward's q, k, v, key_mask, o, lse.
void AttentionBackward(const ExecContext& ctx, const AttentionArgs& args, ConstTensorView q,
                       ConstTensorView k, ConstTensorView v, ConstTensorView key_mask,
                       ConstTensorView o, ConstTensorView lse, ConstTensorView grad_o,
                       TensorView grad_q, TensorView grad_k, TensorView grad_v);

namespace internal {  // Same semantics; called only from attention.cc after validation.
void AttentionForwardCpu(const AttentionArgs& args, ConstTensorView q, ConstTensorView k,
                         ConstTensorView v, ConstTensorView key_mask, TensorView o, TensorView lse);
void AttentionForwardCuda(const AttentionArgs& args, ConstTensorView q, ConstTensorView k,
                          ConstTensorView v, ConstTensorView key_mask, TensorView o, TensorView lse,
                          Stream stream);
void AttentionBackwardCpu(const AttentionArgs& args, ConstTensorView q, ConstTensorView k,
                          ConstTensorView v, ConstTensorView key_mask, ConstTensorView o,
                          ConstTensorView lse, ConstTensorView grad_o, TensorView grad_q,
                          TensorView grad_k, TensorView grad_v);
void AttentionBackwardCuda(const AttentionArgs& args, ConstTensorView q, ConstTensorView k,
                           ConstTensorView v, ConstTensorView key_mask, ConstTensorView o,
                           ConstTensorView lse, ConstTensorView grad_o, TensorView grad_q,
                           TensorView grad_k, TensorView grad_v, Stream stream);
}  // namespace internal

}  // namespace loom::ops

#endif  // LOOM_MODEL_OPS_ATTENTION_H_
