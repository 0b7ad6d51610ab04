// CPU reference of the fused dense-optimizer step (fused_update.h): one OpenMP loop over the
// chunk table, a vectorizable loop inside each chunk. Every element is independent, so the
// update does not depend on the number of threads; the norm follows the canonical order of
// fused_update.h (fixed lanes, fixed tree), which the CUDA kernels reproduce bit for bit.
#include <algorithm>
#include <cmath>

#include <glog/logging.h>

#include "csrc/optim/fused_update.h"

namespace loom::optim::internal {
namespace {

// Tree(a) of fused_update.h on kLanes doubles.
double LaneTree(double* lanes) {
  for (int s = kLanes / 2; s > 0; s /= 2) {
    for (int i = 0; i < s; ++i) lanes[i] += lanes[i + s];
  }
  return lanes[0];
}

template <typename T>
double ChunkSumSq(const T* __restrict g, int64_t length) {
  double lanes[kLanes] = {};
  for (int64_t base = 0; base < length; base += kLanes) {
    const int64_t n = std::min<int64_t>(kLanes, length - base);
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) lanes[j] += SquareF64(g[base + j]);
  }
  return LaneTree(lanes);
}

template <typename T>
void GradNormSqTyped(const FusedPlan& plan) {
  const int64_t num_chunks = plan.num_chunks;
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < num_chunks; ++c) {
    const Chunk& ch = plan.chunks[c];
    const T* g = static_cast<const T*>(plan.slots[ch.tensor].grad) + ch.begin;
    plan.partials[c] = ChunkSumSq(g, ch.length);
  }
  double lanes[kLanes] = {};
  for (int64_t base = 0; base < num_chunks; base += kLanes) {
    const int64_t n = std::min<int64_t>(kLanes, num_chunks - base);
    for (int64_t j = 0; j < n; ++j) lanes[j] += plan.partials[base + j];
  }
  *plan.norm_sq = LaneTree(lanes);
}

template <typename T, UpdateKind kKind, bool kMomentum>
void UpdateChunks(const FusedPlan& plan, const UpdateScalars& s, double norm_sq) {
  const ElementScalars<T> with_wd = MakeElementScalars<T>(s, norm_sq, true);
  const ElementScalars<T> without_wd = MakeElementScalars<T>(s, norm_sq, false);
  const int64_t num_chunks = plan.num_chunks;
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < num_chunks; ++c) {
    const Chunk& ch = plan.chunks[c];
    const TensorSlot& slot = plan.slots[ch.tensor];
    const ElementScalars<T> e = slot.apply_weight_decay ? with_wd : without_wd;
    T* __restrict w = static_cast<T*>(slot.value) + ch.begin;
    const T* __restrict g = static_cast<const T*>(slot.grad) + ch.begin;
    const int n = ch.length;
    if constexpr (kKind == UpdateKind::kSgd) {
      T* __restrict buf = kMomentum ? static_cast<T*>(slot.state0) + ch.begin : nullptr;
#pragma omp simd
      for (int i = 0; i < n; ++i)
        SgdElement<T, kMomentum>(e, w[i], g[i], kMomentum ? buf + i : nullptr);
    } else {
      T* __restrict m = static_cast<T*>(slot.state0) + ch.begin;
      T* __restrict v = static_cast<T*>(slot.state1) + ch.begin;
#pragma omp simd
      for (int i = 0; i < n; ++i) {
        AdamElement<T, kKind == UpdateKind::kAdamW>(e, w[i], g[i], m[i], v[i]);
      }
    }
  }
}

template <typename T>
void FusedUpdateTyped(const FusedPlan& plan, const UpdateScalars& s) {
  const double norm_sq = s.max_grad_norm > 0.0 ? *plan.norm_sq : 0.0;
  switch (s.kind) {
    case UpdateKind::kAdam:
      UpdateChunks<T, UpdateKind::kAdam, false>(plan, s, norm_sq);
      break;
    case UpdateKind::kAdamW:
      UpdateChunks<T, UpdateKind::kAdamW, false>(plan, s, norm_sq);
      break;
    case UpdateKind::kSgd:
      if (s.momentum != 0.0) {
        UpdateChunks<T, UpdateKind::kSgd, true>(plan, s, norm_sq);
      } else {
        UpdateChunks<T, UpdateKind::kSgd, false>(plan, s, norm_sq);
      }
      break;
  }
}

}  // namespace

void GradNormSqCpu(const FusedPlan& plan) {
  if (plan.dtype == DType::kF32) {
    GradNormSqTyped<float>(plan);
  } else {
    CHECK(plan.dtype == DType::kF64) << DTypeName(plan.dtype);
    GradNormSqTyped<double>(plan);
  }
}

void FusedUpdateCpu(const FusedPlan& plan, const UpdateScalars& s) {
  if (plan.dtype == DType::kF32) {
    FusedUpdateTyped<float>(plan, s);
  } else {
    CHECK(plan.dtype == DType::kF64) << DTypeName(plan.dtype);
    FusedUpdateTyped<double>(plan, s);
  }
}

}  // namespace loom::optim::internal
