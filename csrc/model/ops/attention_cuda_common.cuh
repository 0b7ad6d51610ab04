// Shared pieces of the CUDA attention kernels (attention_cuda.cu): the parameter block, index
// helpers, tile loaders, and element conversions. Included only by attention_*.cuh/.cu.
//
// Conventions of every kernel here:
//   * Layout (B, T, H, Dh) token-major; row (b, t, h) starts at ((b * T + t) * H + h) * Dh.
//   * One block = 128 threads; blockIdx.x enumerates (b, h, tile) with the tile fastest, so
//     blocks of one (b, h) run together and share K/V (or Q/dO) through L2.
//   * Scores are in natural units, s = scale * (q . k); a probability is computed as
//     expf(fmaf(q . k, scale, -m)) with m the running max (forward) or lse (backward): the
//     subtraction happens inside one rounding, so the exponent's error is 2^-24 |s - m| rather
//     than 2^-24 (|s| + |m|) as with separately rounded s and m.
//   * A key is usable iff it is in range (j < Tk) and key_mask[b, j] != 0 (mask may be null).
//     Tiles with no usable key are skipped by the whole block (__syncthreads_or).
#ifndef LOOM_MODEL_OPS_ATTENTION_CUDA_COMMON_CUH_
#define LOOM_MODEL_OPS_ATTENTION_CUDA_COMMON_CUH_

// Emulation seam: tests/model/ops/attention_emulation_test.cc compiles these kernels with the
// host compiler after including tests/model/ops/attention_cuda_emulator.h, which defines
// LOOM_ATTENTION_EMULATION and CPU versions of the CUDA names used here (threads are fibers,
// barriers and shuffles are emulated). Only three places differ: these includes,
// DynamicSmem() below and MmaBf16() in attention_mma.cuh.
#if !defined(LOOM_ATTENTION_EMULATION)
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#endif

#include <cstdint>

namespace loom::ops::internal::attn {

constexpr int kThreads = 128;

// Everything a kernel needs; passed by value (in the kernel parameter space).
struct Params {
  // Forward inputs (and backward inputs).
  const void* q = nullptr;        // (B, Tq, H, Dh)
  const void* k = nullptr;        // (B, Tk, H, Dh)
  const void* v = nullptr;        // (B, Tk, H, Dh)
  const uint8_t* mask = nullptr;  // (B, Tk) or null (all valid)
  // Forward outputs / backward inputs.
  void* o = nullptr;     // (B, Tq, H, Dh)
  float* lse = nullptr;  // (B, H, Tq)
  // Backward.
  const void* grad_o = nullptr;  // (B, Tq, H, Dh)
  void* grad_q = nullptr;
  void* grad_k = nullptr;
  void* grad_v = nullptr;
  int batch = 0, tq = 0, tk = 0, heads = 0;
  int num_tiles = 0;   // tiles per (b, h) along the dimension the grid runs over
  float scale = 1.0f;  // softmax scale
};

// The block's dynamic shared memory (16-byte aligned).
__device__ __forceinline__ uint4* DynamicSmem() {
#if defined(LOOM_ATTENTION_EMULATION)
  return emu::DynamicSmem();
#else
  extern __shared__ uint4 loom_attention_smem[];
  return loom_attention_smem;
#endif
}

// Element offset of row (b, t, h) of a (B, T, H, kDh) tensor.
template <int kDh>
__device__ __forceinline__ int64_t RowOffset(int b, int t, int h, int rows, int heads) {
  return ((static_cast<int64_t>(b) * rows + t) * heads + h) * kDh;
}

// Decodes blockIdx.x into (tile, h, b).
struct BlockCoords {
  int tile, h, b;
};
__device__ __forceinline__ BlockCoords DecodeBlock(const Params& p) {
  const int x = static_cast<int>(blockIdx.x);
  BlockCoords c;
  c.tile = x % p.num_tiles;
  const int bh = x / p.num_tiles;
  c.h = bh % p.heads;
  c.b = bh / p.heads;
  return c;
}

__device__ __forceinline__ bool KeyUsable(const Params& p, int b, int j) {
  return j < p.tk && (p.mask == nullptr || p.mask[static_cast<int64_t>(b) * p.tk + j] != 0);
}

// ---- element conversions --------------------------------------------------------------------

__device__ __forceinline__ float ToFloat(float x) { return x; }
__device__ __forceinline__ float ToFloat(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename Elem>
__device__ __forceinline__ Elem FromFloat(float x);
template <>
__device__ __forceinline__ float FromFloat<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ __nv_bfloat16 FromFloat<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

// Loads 16 bytes of `Elem` from global memory and widens them to floats.
template <typename Elem>
struct Vec16;
template <>
struct Vec16<float> {
  static constexpr int kElems = 4;
  __device__ __forceinline__ static void Load(const float* src, float* dst) {
    const float4 v = *reinterpret_cast<const float4*>(src);
    dst[0] = v.x;
    dst[1] = v.y;
    dst[2] = v.z;
    dst[3] = v.w;
  }
};
template <>
struct Vec16<__nv_bfloat16> {
  static constexpr int kElems = 8;
  __device__ __forceinline__ static void Load(const __nv_bfloat16* src, float* dst) {
    const uint4 raw = *reinterpret_cast<const uint4*>(src);
    const uint32_t words[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      dst[2 * i] = __uint_as_float(words[i] << 16);
      dst[2 * i + 1] = __uint_as_float(words[i] & 0xffff0000u);
    }
  }
};

// Loads rows [row0, row0 + kRows) of (b, h) of a (B, T, H, kDh) tensor into shared memory as
// fp32, row stride kStride floats; rows >= rows_total are zero. All kThreads threads call it.
template <typename Elem, int kRows, int kDh, int kStride>
__device__ __forceinline__ void LoadTileF32(float* dst, const Elem* src, int b, int h, int row0,
                                            int rows_total, int heads) {
  constexpr int kVec = Vec16<Elem>::kElems;
  static_assert(kDh % kVec == 0, "head dim must be a multiple of the 16-byte vector");
  static_assert(kStride % 4 == 0, "rows must stay 16-byte aligned");
  constexpr int kVecsPerRow = kDh / kVec;
  constexpr int kVecs = kRows * kVecsPerRow;
  for (int i = static_cast<int>(threadIdx.x); i < kVecs; i += kThreads) {
    const int r = i / kVecsPerRow;
    const int c = (i % kVecsPerRow) * kVec;
    float vals[kVec];
    const int t = row0 + r;
    if (t < rows_total) {
      Vec16<Elem>::Load(src + RowOffset<kDh>(b, t, h, rows_total, heads) + c, vals);
    } else {
#pragma unroll
      for (int e = 0; e < kVec; ++e) vals[e] = 0.0f;
    }
    float* d = dst + r * kStride + c;
#pragma unroll
    for (int e = 0; e < kVec; e += 4) {
      *reinterpret_cast<float4*>(d + e) =
          make_float4(vals[e], vals[e + 1], vals[e + 2], vals[e + 3]);
    }
  }
}

// Same for bf16 kept as bf16 (raw 16-bit words) in shared memory, row stride kStride elements.
template <int kRows, int kDh, int kStride>
__device__ __forceinline__ void LoadTileBf16(uint16_t* dst, const __nv_bfloat16* src, int b, int h,
                                             int row0, int rows_total, int heads) {
  static_assert(kDh % 8 == 0 && kStride % 8 == 0, "rows must stay 16-byte aligned");
  constexpr int kVecsPerRow = kDh / 8;
  constexpr int kVecs = kRows * kVecsPerRow;
  for (int i = static_cast<int>(threadIdx.x); i < kVecs; i += kThreads) {
    const int r = i / kVecsPerRow;
    const int c = (i % kVecsPerRow) * 8;
    const int t = row0 + r;
    uint4 v = make_uint4(0u, 0u, 0u, 0u);
    if (t < rows_total) {
      v = *reinterpret_cast<const uint4*>(src + RowOffset<kDh>(b, t, h, rows_total, heads) + c);
    }
    *reinterpret_cast<uint4*>(dst + r * kStride + c) = v;
  }
}

// Marks the usable keys of tile [k0, k0 + kKeys) in `usable` (1.0 / 0.0) and returns, to every
// thread, whether any is usable. Contains a __syncthreads_or, so it also orders the preceding
// shared-memory tile stores before any later read.
template <int kKeys>
__device__ __forceinline__ bool MarkUsableKeys(const Params& p, int b, int k0, float* usable) {
  int any = 0;
  for (int c = static_cast<int>(threadIdx.x); c < kKeys; c += kThreads) {
    const bool ok = KeyUsable(p, b, k0 + c);
    usable[c] = ok ? 1.0f : 0.0f;
    any |= ok ? 1 : 0;
  }
  return __syncthreads_or(any) != 0;
}

// Butterfly reductions over aligned groups of kWidth consecutive lanes.
template <int kWidth>
__device__ __forceinline__ float GroupMax(float x) {
#pragma unroll
  for (int off = kWidth / 2; off >= 1; off /= 2) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, off));
  return x;
}
template <int kWidth>
__device__ __forceinline__ float GroupSum(float x) {
#pragma unroll
  for (int off = kWidth / 2; off >= 1; off /= 2) x += __shfl_xor_sync(0xffffffffu, x, off);
  return x;
}

// exp(acc * scale - m), the probability of a raw dot product `acc` given a max or lse `m`.
// expf, not exp2f(x * log2(e)): the extra rounding of x * log2(e) would add 2^-24 |x| to the
// exponent's error, about doubling the error of small probabilities.
__device__ __forceinline__ float ExpShifted(float acc, float scale, float m) {
  return expf(fmaf(acc, scale, -m));
}

// lse from the running max m and the sum l (of exp(s - m)); -inf when l == 0.
__device__ __forceinline__ float LseFromRunning(float m, float l) {
  return l > 0.0f ? m + logf(l) : -INFINITY;
}

// The lse of a query row as backward uses it: +inf for rows out of range and rows with no
// usable key (lse = -inf), so that ExpShifted(., ., lse) = 0 for them.
__device__ __forceinline__ float BackwardLse(const Params& p, int b, int h, int i) {
  if (i >= p.tq) return INFINITY;
  const float lse = p.lse[(static_cast<int64_t>(b) * p.heads + h) * p.tq + i];
  return lse == -INFINITY ? INFINITY : lse;
}

}  // namespace loom::ops::internal::attn

#endif  // LOOM_MODEL_OPS_ATTENTION_CUDA_COMMON_CUH_
