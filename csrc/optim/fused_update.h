// Internals of DenseOptimizer shared by the CPU reference and the CUDA kernels: the chunk
// table both backends walk, the scalars of one update, the per-element update formulas (one
// definition compiled for host and device, so both backends do the same operations in the
// same order), and the canonical summation order of the clipping norm.
// Only dense_optimizer*.{cc,cu} and tests include this header.
//
// Work decomposition: every parameter tensor is cut into chunks of at most kChunk elements;
// the chunk table lists them in parameter order. The CPU runs one OpenMP loop over the table;
// CUDA runs one block per chunk (grid-stride), kLanes threads per block.
//
// Canonical norm order (bit-identical on CPU and CUDA, independent of thread counts):
//   partial[c] = Tree(lane sums) where lane j (0 <= j < kLanes) sums g[i]^2 for
//                i = j, j + kLanes, j + 2 kLanes, ... < chunk length, in that order (fp64);
//   norm_sq    = Tree(lane sums) of the partials the same way (lane j sums partial[j],
//                partial[j + kLanes], ...);
//   Tree(a)    = for s = kLanes/2, ..., 1: a[i] += a[i + s] for i < s; result a[0].
// For f32 gradients each square is exact in fp64, so only the additions round, in this order.
#ifndef LOOM_OPTIM_FUSED_UPDATE_H_
#define LOOM_OPTIM_FUSED_UPDATE_H_

#include <cmath>
#include <cstdint>

#include "csrc/core/device.h"
#include "csrc/core/dtype.h"
#include "csrc/core/macros.h"

namespace loom::optim::internal {

constexpr int kChunk = 2048;  // elements per chunk
constexpr int kLanes = 256;   // lanes of the canonical norm order = CUDA threads per block

enum class UpdateKind : int32_t { kAdam = 0, kAdamW = 1, kSgd = 2 };

// One parameter tensor. Pointers are to elements of the plan's dtype on the plan's device.
struct TensorSlot {
  void* value = nullptr;
  const void* grad = nullptr;
  void* state0 = nullptr;  // Adam/AdamW: exp_avg; SGD: momentum buffer (nullptr if mu == 0)
  void* state1 = nullptr;  // Adam/AdamW: exp_avg_sq
  int64_t numel = 0;
  int32_t apply_weight_decay = 1;
  int32_t pad = 0;
};

struct Chunk {
  int32_t tensor = 0;  // index into the slot table
  int32_t length = 0;  // (0, kChunk]
  int64_t begin = 0;   // first element within the tensor
};

// What one step's kernels see. All pointers are on the plan's device.
struct FusedPlan {
  DType dtype = DType::kF32;  // f32 or f64
  int64_t num_chunks = 0;
  const TensorSlot* slots = nullptr;
  const Chunk* chunks = nullptr;
  double* partials = nullptr;  // (num_chunks) scratch
  double* norm_sq = nullptr;   // (1) sum of squares of every gradient element
};

// Scalars of update t (computed on the host in double; kernels round them to the dtype once).
struct UpdateScalars {
  UpdateKind kind = UpdateKind::kAdam;
  double lr = 0.0;  // lr_t
  double beta1 = 0.0, beta2 = 0.0, eps = 0.0;
  double weight_decay = 0.0;
  double bias_correction1 = 1.0;       // 1 - beta1^(t+1)
  double bias_correction2_sqrt = 1.0;  // sqrt(1 - beta2^(t+1))
  double momentum = 0.0, dampening = 0.0;
  int32_t nesterov = 0;
  int32_t first_step = 0;      // t == 0 (SGD initializes the momentum buffer with g)
  double max_grad_norm = 0.0;  // > 0: scale gradients by the clipping coefficient
};

// The gradient multiplier of clipping, from the global sum of squares (torch's
// clip_grad_norm_: max_norm / (norm + 1e-6), applied only when below 1). Returns 1 when off.
LOOM_HOST_DEVICE LOOM_INLINE double ClipCoefficient(double max_grad_norm, double norm_sq) {
  if (!(max_grad_norm > 0.0)) return 1.0;
  const double coef = max_grad_norm / (sqrt(norm_sq) + 1e-6);
  return coef < 1.0 ? coef : 1.0;
}

// UpdateScalars rounded to the parameter dtype, as torch rounds Python scalars to the tensor
// type before the elementwise kernel.
template <typename T>
struct ElementScalars {
  T clip;  // gradient multiplier (1 when not clipping)
  bool do_clip;
  T wd;         // L2 term (ADAM, SGD)
  T decay_mul;  // ADAMW: 1 - lr * wd
  T beta1, one_minus_beta1, beta2, one_minus_beta2, eps;
  T step_size;  // lr / bias_correction1
  T bc2_sqrt;
  T lr, momentum, one_minus_dampening;
  bool nesterov, first_step;
};

template <typename T>
LOOM_HOST_DEVICE LOOM_INLINE ElementScalars<T> MakeElementScalars(const UpdateScalars& s,
                                                                  double norm_sq,
                                                                  bool apply_weight_decay) {
  ElementScalars<T> e;
  const double coef = ClipCoefficient(s.max_grad_norm, norm_sq);
  e.do_clip = coef < 1.0;
  e.clip = static_cast<T>(coef);
  const double wd = apply_weight_decay ? s.weight_decay : 0.0;
  e.wd = static_cast<T>(wd);
  e.decay_mul = static_cast<T>(1.0 - s.lr * wd);
  e.beta1 = static_cast<T>(s.beta1);
  e.one_minus_beta1 = static_cast<T>(1.0 - s.beta1);
  e.beta2 = static_cast<T>(s.beta2);
  e.one_minus_beta2 = static_cast<T>(1.0 - s.beta2);
  e.eps = static_cast<T>(s.eps);
  e.step_size = static_cast<T>(s.lr / s.bias_correction1);
  e.bc2_sqrt = static_cast<T>(s.bias_correction2_sqrt);
  e.lr = static_cast<T>(s.lr);
  e.momentum = static_cast<T>(s.momentum);
  e.one_minus_dampening = static_cast<T>(1.0 - s.dampening);
  e.nesterov = s.nesterov != 0;
  e.first_step = s.first_step != 0;
  return e;
}

LOOM_HOST_DEVICE LOOM_INLINE float SqrtT(float x) { return sqrtf(x); }
LOOM_HOST_DEVICE LOOM_INLINE double SqrtT(double x) { return sqrt(x); }

// Adam (kDecoupled = false) and AdamW (true) on one element; the order of operations is
// torch 1.13's _single_tensor_adam(w).
template <typename T, bool kDecoupled>
LOOM_HOST_DEVICE LOOM_INLINE void AdamElement(const ElementScalars<T>& e, T& w, T g, T& m, T& v) {
  if (e.do_clip) g = g * e.clip;
  if (kDecoupled) {
    w = w * e.decay_mul;
  } else {
    g = g + e.wd * w;
  }
  m = m * e.beta1 + e.one_minus_beta1 * g;
  v = v * e.beta2 + e.one_minus_beta2 * (g * g);
  const T denom = SqrtT(v) / e.bc2_sqrt + e.eps;
  w = w - e.step_size * (m / denom);
}

// SGD on one element; buf is ignored when momentum == 0 (kMomentum = false).
template <typename T, bool kMomentum>
LOOM_HOST_DEVICE LOOM_INLINE void SgdElement(const ElementScalars<T>& e, T& w, T g, T* buf) {
  if (e.do_clip) g = g * e.clip;
  g = g + e.wd * w;
  if (kMomentum) {
    T b = e.first_step ? g : (*buf) * e.momentum + e.one_minus_dampening * g;
    *buf = b;
    g = e.nesterov ? g + e.momentum * b : b;
  }
  w = w - e.lr * g;
}

// Square of one gradient element in fp64 (exact for f32).
LOOM_HOST_DEVICE LOOM_INLINE double SquareF64(float g) {
  const double d = static_cast<double>(g);
  return d * d;
}
LOOM_HOST_DEVICE LOOM_INLINE double SquareF64(double g) { return g * g; }

// The backends (dense_optimizer_cpu.cc, dense_optimizer_cuda.cu). GradNormSq writes
// *plan.norm_sq (and plan.partials); FusedUpdate reads *plan.norm_sq when
// s.max_grad_norm > 0. Called through LOOM_DISPATCH from dense_optimizer.cc.
void GradNormSqCpu(const FusedPlan& plan);
void FusedUpdateCpu(const FusedPlan& plan, const UpdateScalars& s);
void GradNormSqCuda(const FusedPlan& plan, Stream stream);
void FusedUpdateCuda(const FusedPlan& plan, const UpdateScalars& s, Stream stream);

}  // namespace loom::optim::internal

#endif  // LOOM_OPTIM_FUSED_UPDATE_H_
