// CUDA twins of sparse_optimizer_cpu.cc: one warp per touched row. The fold of a row's
// contributions runs in the same order as on the CPU (entries in merged order, contributions
// in canonical order), each lane owning a set of columns, with _rn intrinsics so no FMA
// changes the bits: ReduceRows gives the CPU's bits. UpdateRows runs the shared per-row math
// of sparse_optimizer.h (lane 0 prepares the row scalars, every lane updates its columns);
// this file is compiled with --fmad=false so that math rounds as on the CPU.
#include "csrc/embedding/sparse_optimizer.h"

#include "csrc/core/cuda_check.cuh"

namespace loom::embedding::internal {
namespace {

constexpr int kWarp = 32;
constexpr int kBlock = 256;

int Blocks(int64_t threads) { return static_cast<int>((threads + kBlock - 1) / kBlock); }

__global__ void ReduceRowsKernel(ReduceArgs a) {
  const int64_t u = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (u >= a.num_rows) return;
  const int shard = static_cast<int>(a.keys[u] >> a.row_bits);
  const int64_t row = static_cast<int64_t>(a.keys[u] & ((uint64_t{1} << a.row_bits) - 1));
  const ShardView& s = a.shards[shard];
  const int w = s.width;
  float* g = a.reduced + a.reduced_off[u];
  const OptimizerParams& p = a.params[shard];
  const bool l2 = p.weight_decay != 0.0f && !p.decoupled;
  const float* wr = s.weights + row * w;
  for (int c = lane; c < w; c += kWarp) {
    float acc = 0.0f;
    for (int32_t e = a.begin[u]; e < a.begin[u + 1]; ++e) {
      const int32_t entry = a.entry_perm[e];
      const int32_t local = a.entry_local != nullptr ? a.entry_local[entry] : -1;
      if (local >= 0) {  // this rank's own items: scale * output gradient, as packing would
        for (int32_t j = a.local_unique_begin[local]; j < a.local_unique_begin[local + 1]; ++j) {
          const int32_t i = a.local_perm[j];
          const RoutePart& rp = a.local_parts[a.local_item_part[i]];
          const float* x = a.local_feature_grad[rp.feature] + a.local_item_out[i];
          acc = __fadd_rn(acc, __fmul_rn(a.local_item_scale[i], x[c]));
        }
        continue;
      }
      const float* x = a.entry_contrib[entry];
      const int32_t count = a.entry_count[entry];
      for (int32_t j = 0; j < count; ++j)
        acc = __fadd_rn(acc, __ldg(x + j * static_cast<int64_t>(w) + c));
    }
    if (l2) acc = __fadd_rn(acc, __fmul_rn(p.weight_decay, wr[c]));
    g[c] = acc;
  }
}

__global__ void UpdateRowsKernel(UpdateArgs a) {
  const int64_t u = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (u >= a.num_rows) return;
  const int shard = static_cast<int>(a.keys[u] >> a.row_bits);
  const int64_t row = static_cast<int64_t>(a.keys[u] & ((uint64_t{1} << a.row_bits) - 1));
  const ShardView& s = a.shards[shard];
  const OptimizerParams& p = a.params[shard];
  const int w = s.width;
  const float* g = a.reduced + a.reduced_off[u];
  RowScalars r;
  if (lane == 0) {
    float row_sq = 0.0f;
    if (p.type == 2) row_sq = p.external_row_sq ? a.row_sq[u] : RowSquareSum(g, w);
    r = PrepareRow(p, p.type == 2 ? s.state0 + row : nullptr, p.type == 3 ? s.steps + row : nullptr,
                   row_sq);
  }
  r.denom = __shfl_sync(0xffffffffu, r.denom, 0);
  r.bc1 = __shfl_sync(0xffffffffu, r.bc1, 0);
  r.bc2 = __shfl_sync(0xffffffffu, r.bc2, 0);
  const float lr = p.lr * a.lr_scale;
  float* wr = s.weights + row * w;
  for (int c = lane; c < w; c += kWarp) {
    float* s0 = (p.type == 1 || p.type == 3) ? s.state0 + row * w + c : nullptr;
    float* s1 = p.type == 3 ? s.state1 + row * w + c : nullptr;
    UpdateElement(p, lr, r, wr + c, s0, s1, g[c]);
  }
}

// Non-lazy Adam: one warp per row, grid-stride over the rows of every dense_update shard held
// here; lane 0 looks the row up in the shard's touched keys (binary search) and, when it is
// untouched, prepares the step (k += 1, bias corrections); every lane then updates its columns
// with g = 0 (0 + wd * w under L2), the expressions of StepUntouchedRowsCpu.
__global__ void StepUntouchedRowsKernel(UntouchedArgs a) {
  const int64_t warp = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / kWarp;
  const int64_t num_warps = static_cast<int64_t>(gridDim.x) * blockDim.x / kWarp;
  const int lane = threadIdx.x % kWarp;
  for (int shard = 0; shard < a.num_shards; ++shard) {
    const ShardView& s = a.shards[shard];
    const OptimizerParams& p = a.params[shard];
    if (!p.dense_update || s.weights == nullptr) continue;
    const uint64_t base = static_cast<uint64_t>(shard) << a.row_bits;
    const float lr = p.lr * a.lr_scale;
    const bool l2 = p.weight_decay != 0.0f && !p.decoupled;
    const int w = s.width;
    for (int64_t row = warp; row < s.num_rows; row += num_warps) {
      int touched = 0;
      RowScalars r;
      if (lane == 0) {
        const uint64_t key = base + static_cast<uint64_t>(row);
        int64_t lo = 0, hi = a.num_touched;  // first index with touched_keys[i] >= key
        while (lo < hi) {
          const int64_t mid = lo + (hi - lo) / 2;
          if (a.touched_keys[mid] < key) {
            lo = mid + 1;
          } else {
            hi = mid;
          }
        }
        touched = lo < a.num_touched && a.touched_keys[lo] == key ? 1 : 0;
        if (!touched) r = PrepareRow(p, nullptr, s.steps + row, 0.0f);
      }
      touched = __shfl_sync(0xffffffffu, touched, 0);
      if (touched) continue;
      r.bc1 = __shfl_sync(0xffffffffu, r.bc1, 0);
      r.bc2 = __shfl_sync(0xffffffffu, r.bc2, 0);
      float* wr = s.weights + row * w;
      for (int c = lane; c < w; c += kWarp) {
        const float g = l2 ? 0.0f + p.weight_decay * wr[c] : 0.0f;
        UpdateElement(p, lr, r, wr + c, s.state0 + row * w + c, s.state1 + row * w + c, g);
      }
    }
  }
}

}  // namespace

void StepUntouchedRowsCuda(const UntouchedArgs& a, Stream stream) {
  constexpr int kBlocks = 512;  // grid-stride: 4096 warps cover any shard
  StepUntouchedRowsKernel<<<kBlocks, kBlock, 0, AsCudaStream(stream)>>>(a);
  LOOM_CUDA_CHECK_LAUNCH();
}

void ReduceRowsCuda(const ReduceArgs& a, Stream stream) {
  ReduceRowsKernel<<<Blocks(a.num_rows * kWarp), kBlock, 0, AsCudaStream(stream)>>>(a);
  LOOM_CUDA_CHECK_LAUNCH();
}

void UpdateRowsCuda(const UpdateArgs& a, Stream stream) {
  UpdateRowsKernel<<<Blocks(a.num_rows * kWarp), kBlock, 0, AsCudaStream(stream)>>>(a);
  LOOM_CUDA_CHECK_LAUNCH();
}

}  // namespace loom::embedding::internal
