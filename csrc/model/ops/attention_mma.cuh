// Tensor-core attention kernels for bf16 inputs: mma.sync.m16n8k16 (bf16 x bf16 -> fp32), the
// FlashAttention-2 structure with one warp per 16 rows. The bf16 path of attention_cuda.cu.
//
// Fragment layouts (PTX ISA, "Matrix Fragments for mma.m16n8k16 with floating point type";
// g = lane / 4, t = lane % 4):
//   A (16 x 16, row-major), 4 regs of bf16x2: reg0 = A[g][2t, 2t+1], reg1 = A[g+8][2t, 2t+1],
//       reg2 = A[g][2t+8, 2t+9], reg3 = A[g+8][2t+8, 2t+9]   (lower column in the low half)
//   B (16 x 8, "col"), 2 regs: reg0 = B[2t, 2t+1][g], reg1 = B[2t+8, 2t+9][g]
//   C (16 x 8, fp32), 4 regs: c0, c1 = C[g][2t, 2t+1], c2, c3 = C[g+8][2t, 2t+1]
// Consequences used below:
//   * X . Y^T with X, Y row-major [row][d] in shared memory: A regs and B regs are single 32-bit
//     loads (B = Y^T "col" means B[k = d][n = row] = Y[row][d], contiguous in d).
//   * P . Y with Y row-major [key][d]: B needs Y[2t][n], Y[2t+1][n] (two rows), so it is two
//     16-bit loads packed into one register.
//   * The C fragments of two adjacent 8-column tiles (2kc, 2kc+1) are exactly the A fragment of
//     the 16 x 16 block kc: A = {C[2kc].c01, C[2kc].c23, C[2kc+1].c01, C[2kc+1].c23}, so
//     probabilities go from one product to the next without shared memory.
// Shared rows hold Dh + 8 bf16 (a 16-byte pad): the 32-bit loads of 8 rows x 4 lanes then hit
// 32 distinct banks, and the paired 16-bit loads (rows 2t, lanes g) hit distinct words.
#ifndef LOOM_MODEL_OPS_ATTENTION_MMA_CUH_
#define LOOM_MODEL_OPS_ATTENTION_MMA_CUH_

#include "csrc/model/ops/attention_cuda_common.cuh"

namespace loom::ops::internal::attn {

// c += a * b (m16n8k16, bf16 inputs, fp32 accumulators).
__device__ __forceinline__ void MmaBf16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                        uint32_t b1) {
#if defined(LOOM_ATTENTION_EMULATION)
  emu::MmaM16N8K16Bf16(c, a, b0, b1);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, "
      "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#else
  __trap();  // never launched below sm_80 (attention_cuda.cu builds for 80 and 90)
#endif
}

__device__ __forceinline__ uint32_t PackBf16(float lo, float hi) {
  return static_cast<uint32_t>(__bfloat16_as_ushort(__float2bfloat16_rn(lo))) |
         (static_cast<uint32_t>(__bfloat16_as_ushort(__float2bfloat16_rn(hi))) << 16);
}

__device__ __forceinline__ float LowBf16(uint32_t w) { return __uint_as_float(w << 16); }
__device__ __forceinline__ float HighBf16(uint32_t w) { return __uint_as_float(w & 0xffff0000u); }

// A 32-bit (two bf16) shared-memory load; `p` is 4-byte aligned (even element index).
__device__ __forceinline__ uint32_t Lds32(const uint16_t* p) {
  return *reinterpret_cast<const uint32_t*>(p);
}
// Two bf16 from rows r and r + 1 of a shared tile with row stride kS, packed (row r low).
template <int kS>
__device__ __forceinline__ uint32_t LdsPair(const uint16_t* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[kS]) << 16);
}

// Two consecutive bf16 of row t (0 if t >= rows_total) from global memory.
template <int kDh>
__device__ __forceinline__ uint32_t LdgPair(const __nv_bfloat16* base, int b, int t, int h, int d,
                                            int rows_total, int heads) {
  if (t >= rows_total) return 0u;
  return *reinterpret_cast<const uint32_t*>(base + RowOffset<kDh>(b, t, h, rows_total, heads) + d);
}

// The A fragments (16 rows starting at row0, all of kDh) of a row-major global tensor.
template <int kDh>
__device__ __forceinline__ void LoadRowFragments(uint32_t (&f)[kDh / 16][4],
                                                 const __nv_bfloat16* base, int b, int h, int row0,
                                                 int rows_total, int heads, int g, int t4) {
#pragma unroll
  for (int kk = 0; kk < kDh / 16; ++kk) {
    const int d = kk * 16 + 2 * t4;
    f[kk][0] = LdgPair<kDh>(base, b, row0 + g, h, d, rows_total, heads);
    f[kk][1] = LdgPair<kDh>(base, b, row0 + g + 8, h, d, rows_total, heads);
    f[kk][2] = LdgPair<kDh>(base, b, row0 + g, h, d + 8, rows_total, heads);
    f[kk][3] = LdgPair<kDh>(base, b, row0 + g + 8, h, d + 8, rows_total, heads);
  }
}

// The A fragment of k-step kk of rows [r0, r0 + 16) of a shared tile (row stride kS).
template <int kS>
__device__ __forceinline__ void LoadSharedFragment(uint32_t (&a)[4], const uint16_t* tile, int r0,
                                                   int kk, int g, int t4) {
  const uint16_t* p = tile + (r0 + g) * kS + kk * 16 + 2 * t4;
  a[0] = Lds32(p);
  a[1] = Lds32(p + 8 * kS);
  a[2] = Lds32(p + 8);
  a[3] = Lds32(p + 8 * kS + 8);
}

// acc[j] += A . Y^T for the 8-row n-tiles j of Y (a shared tile, row stride kS): columns of the
// result are rows of Y. a[kk] are the A fragments of the k-steps over kDh.
template <int kDh, int kNTiles, int kS>
__device__ __forceinline__ void MmaABt(float (&acc)[kNTiles][4], const uint32_t (&a)[kDh / 16][4],
                                       const uint16_t* y, int g, int t4) {
#pragma unroll
  for (int j = 0; j < kNTiles; ++j) {
#pragma unroll
    for (int kk = 0; kk < kDh / 16; ++kk) {
      const uint16_t* p = y + (j * 8 + g) * kS + kk * 16 + 2 * t4;
      MmaBf16(acc[j], a[kk], Lds32(p), Lds32(p + 8));
    }
  }
}

// acc[nt] += P . Y, P given as C fragments s[kCols/8][4] (16 rows x kCols), Y a shared tile
// (kCols rows x kDh, row stride kS). P is rounded to bf16.
template <int kDh, int kCols, int kS>
__device__ __forceinline__ void MmaPY(float (&acc)[kDh / 8][4], const float (&s)[kCols / 8][4],
                                      const uint16_t* y, int g, int t4) {
#pragma unroll
  for (int kc = 0; kc < kCols / 16; ++kc) {
    const uint32_t a[4] = {
        PackBf16(s[2 * kc][0], s[2 * kc][1]), PackBf16(s[2 * kc][2], s[2 * kc][3]),
        PackBf16(s[2 * kc + 1][0], s[2 * kc + 1][1]), PackBf16(s[2 * kc + 1][2], s[2 * kc + 1][3])};
#pragma unroll
    for (int nt = 0; nt < kDh / 8; ++nt) {
      const uint16_t* p = y + (kc * 16 + 2 * t4) * kS + nt * 8 + g;
      MmaBf16(acc[nt], a, LdsPair<kS>(p), LdsPair<kS>(p + 8 * kS));
    }
  }
}

// Writes C fragments acc[nt] (rows row0 + g, row0 + g + 8) times mul[0] / mul[1] as bf16.
template <int kDh>
__device__ __forceinline__ void StoreFragmentRows(__nv_bfloat16* dst,
                                                  const float (&acc)[kDh / 8][4],
                                                  const float (&mul)[2], int b, int h, int row0,
                                                  int rows_total, int heads, int g, int t4) {
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int t = row0 + g + 8 * half;
    if (t >= rows_total) continue;
    __nv_bfloat16* row = dst + RowOffset<kDh>(b, t, h, rows_total, heads);
#pragma unroll
    for (int nt = 0; nt < kDh / 8; ++nt) {
      *reinterpret_cast<uint32_t*>(row + nt * 8 + 2 * t4) =
          PackBf16(acc[nt][2 * half] * mul[half], acc[nt][2 * half + 1] * mul[half]);
    }
  }
}

// ---- forward --------------------------------------------------------------------------------
// Grid: B * H * ceil(Tq / 64); 4 warps x 16 queries; K/V tiles of kBN keys.
template <int kDh, int kBN>
struct MmaForward {
  static constexpr int kBM = 64;
  static constexpr int kS = kDh + 8;
  static constexpr size_t kSmemBytes = 2 * kBN * kS * sizeof(uint16_t) + kBN * sizeof(float);
};

template <int kDh, int kBN>
__global__ void __launch_bounds__(kThreads) MmaForwardKernel(const Params p) {
  using Cfg = MmaForward<kDh, kBN>;
  constexpr int kS = Cfg::kS, kNS = kBN / 8, kNO = kDh / 8;
  static_assert(kBN % 16 == 0 && kDh % 16 == 0, "tile shape");
  uint4* smem = DynamicSmem();
  uint16_t* ks = reinterpret_cast<uint16_t*>(smem);  // (kBN, kS)
  uint16_t* vs = ks + kBN * kS;                      // (kBN, kS)
  float* usable = reinterpret_cast<float*>(vs + kBN * kS);

  const BlockCoords bc = DecodeBlock(p);
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  const int g = lane / 4, t4 = lane % 4;
  const int row0 = bc.tile * Cfg::kBM + warp * 16;
  const auto* k = static_cast<const __nv_bfloat16*>(p.k);
  const auto* v = static_cast<const __nv_bfloat16*>(p.v);
  uint32_t qf[kDh / 16][4];
  LoadRowFragments<kDh>(qf, static_cast<const __nv_bfloat16*>(p.q), bc.b, bc.h, row0, p.tq, p.heads,
                        g, t4);

  float o[kNO][4];
#pragma unroll
  for (int nt = 0; nt < kNO; ++nt) o[nt][0] = o[nt][1] = o[nt][2] = o[nt][3] = 0.0f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};

  for (int k0 = 0; k0 < p.tk; k0 += kBN) {
    __syncthreads();  // the previous tile is no longer read
    LoadTileBf16<kBN, kDh, kS>(ks, k, bc.b, bc.h, k0, p.tk, p.heads);
    LoadTileBf16<kBN, kDh, kS>(vs, v, bc.b, bc.h, k0, p.tk, p.heads);
    if (!MarkUsableKeys<kBN>(p, bc.b, k0, usable)) continue;  // (contains the barrier)

    float s[kNS][4];
#pragma unroll
    for (int j = 0; j < kNS; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
    MmaABt<kDh, kNS, kS>(s, qf, ks, g, t4);

    float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int j = 0; j < kNS; ++j) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        if (usable[j * 8 + 2 * t4 + (e & 1)] != 0.0f)
          mx[e >> 1] = fmaxf(mx[e >> 1], s[j][e] * p.scale);
      }
    }
    float alpha[2], rowsum[2] = {0.0f, 0.0f};
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const float m_new = fmaxf(m[r], GroupMax<4>(mx[r]));  // finite: the tile has a usable key
      alpha[r] = expf(m[r] - m_new);
      m[r] = m_new;
    }
#pragma unroll
    for (int j = 0; j < kNS; ++j) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        s[j][e] = usable[j * 8 + 2 * t4 + (e & 1)] != 0.0f ? ExpShifted(s[j][e], p.scale, m[e >> 1])
                                                           : 0.0f;
        rowsum[e >> 1] += s[j][e];
      }
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) l[r] = l[r] * alpha[r] + rowsum[r];  // per-lane partial sums
#pragma unroll
    for (int nt = 0; nt < kNO; ++nt) {
      o[nt][0] *= alpha[0];
      o[nt][1] *= alpha[0];
      o[nt][2] *= alpha[1];
      o[nt][3] *= alpha[1];
    }
    MmaPY<kDh, kBN, kS>(o, s, vs, g, t4);
  }

  const float one[2] = {1.0f, 1.0f};
#pragma unroll
  for (int r = 0; r < 2; ++r) l[r] = GroupSum<4>(l[r]);
#pragma unroll
  for (int nt = 0; nt < kNO; ++nt) {
#pragma unroll
    for (int e = 0; e < 4; ++e) o[nt][e] = l[e >> 1] > 0.0f ? o[nt][e] / l[e >> 1] : 0.0f;
  }
  StoreFragmentRows<kDh>(static_cast<__nv_bfloat16*>(p.o), o, one, bc.b, bc.h, row0, p.tq, p.heads,
                         g, t4);
  if (t4 == 0) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int t = row0 + g + 8 * r;
      if (t < p.tq) {
        p.lse[(static_cast<int64_t>(bc.b) * p.heads + bc.h) * p.tq + t] =
            LseFromRunning(m[r], l[r]);
      }
    }
  }
}

// ---- backward: grad_q -----------------------------------------------------------------------
// Grid: B * H * ceil(Tq / 64); 4 warps x 16 queries; K/V tiles of kBN keys.
template <int kDh, int kBN>
struct MmaBackwardDq {
  static constexpr int kBM = 64;
  static constexpr int kS = kDh + 8;
  static constexpr size_t kSmemBytes = 2 * kBN * kS * sizeof(uint16_t) + kBN * sizeof(float);
};

template <int kDh, int kBN>
__global__ void __launch_bounds__(kThreads) MmaBackwardDqKernel(const Params p) {
  using Cfg = MmaBackwardDq<kDh, kBN>;
  constexpr int kS = Cfg::kS, kNS = kBN / 8, kNO = kDh / 8;
  static_assert(kBN % 16 == 0 && kDh % 16 == 0, "tile shape");
  uint4* smem = DynamicSmem();
  uint16_t* ks = reinterpret_cast<uint16_t*>(smem);  // (kBN, kS)
  uint16_t* vs = ks + kBN * kS;                      // (kBN, kS)
  float* usable = reinterpret_cast<float*>(vs + kBN * kS);

  const BlockCoords bc = DecodeBlock(p);
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  const int g = lane / 4, t4 = lane % 4;
  const int row0 = bc.tile * Cfg::kBM + warp * 16;
  const auto* o = static_cast<const __nv_bfloat16*>(p.o);
  uint32_t qf[kDh / 16][4], dof[kDh / 16][4];
  LoadRowFragments<kDh>(qf, static_cast<const __nv_bfloat16*>(p.q), bc.b, bc.h, row0, p.tq, p.heads,
                        g, t4);
  LoadRowFragments<kDh>(dof, static_cast<const __nv_bfloat16*>(p.grad_o), bc.b, bc.h, row0, p.tq,
                        p.heads, g, t4);
  // D = <grad_o, o> for rows row0 + g (r = 0) and row0 + g + 8 (r = 1): this lane's products at
  // the fragment positions, summed over the 4 lanes of the row.
  float delta[2] = {0.0f, 0.0f}, lse[2];
#pragma unroll
  for (int kk = 0; kk < kDh / 16; ++kk) {
#pragma unroll
    for (int reg = 0; reg < 4; ++reg) {
      const int r = reg & 1;
      const int d = kk * 16 + 2 * t4 + (reg >= 2 ? 8 : 0);
      const uint32_t ow = LdgPair<kDh>(o, bc.b, row0 + g + 8 * r, bc.h, d, p.tq, p.heads);
      delta[r] += LowBf16(dof[kk][reg]) * LowBf16(ow) + HighBf16(dof[kk][reg]) * HighBf16(ow);
    }
  }
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    delta[r] = GroupSum<4>(delta[r]);
    lse[r] = BackwardLse(p, bc.b, bc.h, row0 + g + 8 * r);
  }

  float dq[kNO][4];
#pragma unroll
  for (int nt = 0; nt < kNO; ++nt) dq[nt][0] = dq[nt][1] = dq[nt][2] = dq[nt][3] = 0.0f;
  for (int k0 = 0; k0 < p.tk; k0 += kBN) {
    __syncthreads();
    LoadTileBf16<kBN, kDh, kS>(ks, static_cast<const __nv_bfloat16*>(p.k), bc.b, bc.h, k0, p.tk,
                               p.heads);
    LoadTileBf16<kBN, kDh, kS>(vs, static_cast<const __nv_bfloat16*>(p.v), bc.b, bc.h, k0, p.tk,
                               p.heads);
    if (!MarkUsableKeys<kBN>(p, bc.b, k0, usable)) continue;
    float s[kNS][4], dp[kNS][4];
#pragma unroll
    for (int j = 0; j < kNS; ++j) {
#pragma unroll
      for (int e = 0; e < 4; ++e) s[j][e] = dp[j][e] = 0.0f;
    }
    MmaABt<kDh, kNS, kS>(s, qf, ks, g, t4);
    MmaABt<kDh, kNS, kS>(dp, dof, vs, g, t4);
#pragma unroll
    for (int j = 0; j < kNS; ++j) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int r = e >> 1;
        const float pij =
            usable[j * 8 + 2 * t4 + (e & 1)] != 0.0f ? ExpShifted(s[j][e], p.scale, lse[r]) : 0.0f;
        s[j][e] = pij * (dp[j][e] - delta[r]);  // ds
      }
    }
    MmaPY<kDh, kBN, kS>(dq, s, ks, g, t4);
  }
  const float mul[2] = {p.scale, p.scale};
  StoreFragmentRows<kDh>(static_cast<__nv_bfloat16*>(p.grad_q), dq, mul, bc.b, bc.h, row0, p.tq,
                         p.heads, g, t4);
}

// ---- backward: grad_k, grad_v ---------------------------------------------------------------
// Grid: B * H * ceil(Tk / 64); 4 warps x 16 keys; query tiles of kBM. D is recomputed per
// query tile from grad_o and o (no workspace).
template <int kDh, int kBM>
struct MmaBackwardDkDv {
  static constexpr int kBN = 64;
  static constexpr int kS = kDh + 8;
  static constexpr size_t kSmemBytes =
      (2 * kBN + 2 * kBM) * kS * sizeof(uint16_t) + (2 * kBM + kBN) * sizeof(float);
};

template <int kDh, int kBM>
__global__ void __launch_bounds__(kThreads) MmaBackwardDkDvKernel(const Params p) {
  using Cfg = MmaBackwardDkDv<kDh, kBM>;
  constexpr int kBN = Cfg::kBN, kS = Cfg::kS, kNS = kBM / 8, kNO = kDh / 8;
  constexpr int kTPQ = kThreads / kBM;  // threads per query for D
  static_assert(kBM % 16 == 0 && kDh % 16 == 0, "tile shape");
  static_assert(kTPQ >= 1 && kTPQ <= 32 && (kTPQ & (kTPQ - 1)) == 0, "query tile");
  uint4* smem = DynamicSmem();
  uint16_t* ks = reinterpret_cast<uint16_t*>(smem);        // (kBN, kS)
  uint16_t* vs = ks + kBN * kS;                            // (kBN, kS)
  uint16_t* qs = vs + kBN * kS;                            // (kBM, kS)
  uint16_t* dos = qs + kBM * kS;                           // (kBM, kS)
  float* lses = reinterpret_cast<float*>(dos + kBM * kS);  // (kBM)
  float* deltas = lses + kBM;                              // (kBM)
  float* usable = deltas + kBM;                            // (kBN)

  const BlockCoords bc = DecodeBlock(p);
  const int tid = static_cast<int>(threadIdx.x);
  const int warp = tid / 32, lane = tid % 32, g = lane / 4, t4 = lane % 4;
  const int k0 = bc.tile * kBN;
  const auto* q = static_cast<const __nv_bfloat16*>(p.q);
  const auto* grad_o = static_cast<const __nv_bfloat16*>(p.grad_o);
  const auto* o = static_cast<const __nv_bfloat16*>(p.o);
  LoadTileBf16<kBN, kDh, kS>(ks, static_cast<const __nv_bfloat16*>(p.k), bc.b, bc.h, k0, p.tk,
                             p.heads);
  LoadTileBf16<kBN, kDh, kS>(vs, static_cast<const __nv_bfloat16*>(p.v), bc.b, bc.h, k0, p.tk,
                             p.heads);
  if (!MarkUsableKeys<kBN>(p, bc.b, k0, usable)) {
    // No usable key in this block: its gradients are 0 (uint4 = 8 bf16 per store).
    constexpr int kVecsPerRow = kDh / 8;
    for (int i = tid; i < kBN * kVecsPerRow; i += kThreads) {
      const int t = k0 + i / kVecsPerRow;
      if (t >= p.tk) continue;
      const int64_t off = RowOffset<kDh>(bc.b, t, bc.h, p.tk, p.heads) + (i % kVecsPerRow) * 8;
      *reinterpret_cast<uint4*>(static_cast<__nv_bfloat16*>(p.grad_k) + off) =
          make_uint4(0u, 0u, 0u, 0u);
      *reinterpret_cast<uint4*>(static_cast<__nv_bfloat16*>(p.grad_v) + off) =
          make_uint4(0u, 0u, 0u, 0u);
    }
    return;
  }
  const int kr = warp * 16;  // this warp's first key row in the tile
  const bool key_ok[2] = {usable[kr + g] != 0.0f, usable[kr + g + 8] != 0.0f};

  float dk[kNO][4], dv[kNO][4];
#pragma unroll
  for (int nt = 0; nt < kNO; ++nt) {
#pragma unroll
    for (int e = 0; e < 4; ++e) dk[nt][e] = dv[nt][e] = 0.0f;
  }
  for (int q0 = 0; q0 < p.tq; q0 += kBM) {
    __syncthreads();  // the previous query tile is no longer read
    LoadTileBf16<kBM, kDh, kS>(qs, q, bc.b, bc.h, q0, p.tq, p.heads);
    LoadTileBf16<kBM, kDh, kS>(dos, grad_o, bc.b, bc.h, q0, p.tq, p.heads);
    __syncthreads();
    {
      const int c = tid / kTPQ, sub = tid % kTPQ, t = q0 + c;
      float sum = 0.0f;
      if (t < p.tq) {
        const __nv_bfloat16* orow = o + RowOffset<kDh>(bc.b, t, bc.h, p.tq, p.heads);
        for (int d = sub; d < kDh; d += kTPQ) {
          sum += __uint_as_float(static_cast<uint32_t>(dos[c * kS + d]) << 16) *
                 __bfloat162float(orow[d]);
        }
      }
      sum = GroupSum<kTPQ>(sum);
      if (sub == 0) {
        deltas[c] = sum;
        lses[c] = BackwardLse(p, bc.b, bc.h, t);
      }
    }
    __syncthreads();

    // s = K Q^T (16 keys x kBM queries per warp), then p^T.
    float s[kNS][4], dp[kNS][4];
#pragma unroll
    for (int j = 0; j < kNS; ++j) {
#pragma unroll
      for (int e = 0; e < 4; ++e) s[j][e] = dp[j][e] = 0.0f;
    }
    {
      uint32_t kf[kDh / 16][4];
#pragma unroll
      for (int kk = 0; kk < kDh / 16; ++kk) LoadSharedFragment<kS>(kf[kk], ks, kr, kk, g, t4);
      MmaABt<kDh, kNS, kS>(s, kf, qs, g, t4);
    }
#pragma unroll
    for (int j = 0; j < kNS; ++j) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int c = j * 8 + 2 * t4 + (e & 1);
        s[j][e] = key_ok[e >> 1] ? ExpShifted(s[j][e], p.scale, lses[c]) : 0.0f;
      }
    }
    MmaPY<kDh, kBM, kS>(dv, s, dos, g, t4);  // grad_v += p^T grad_o
    {
      uint32_t vf[kDh / 16][4];
#pragma unroll
      for (int kk = 0; kk < kDh / 16; ++kk) LoadSharedFragment<kS>(vf[kk], vs, kr, kk, g, t4);
      MmaABt<kDh, kNS, kS>(dp, vf, dos, g, t4);  // dp^T = V grad_o^T
    }
#pragma unroll
    for (int j = 0; j < kNS; ++j) {
#pragma unroll
      for (int e = 0; e < 4; ++e) s[j][e] *= dp[j][e] - deltas[j * 8 + 2 * t4 + (e & 1)];  // ds^T
    }
    MmaPY<kDh, kBM, kS>(dk, s, qs, g, t4);  // grad_k += ds^T q (scaled at the end)
  }
  const float mul_k[2] = {p.scale, p.scale}, mul_v[2] = {1.0f, 1.0f};
  StoreFragmentRows<kDh>(static_cast<__nv_bfloat16*>(p.grad_k), dk, mul_k, bc.b, bc.h, k0 + kr,
                         p.tk, p.heads, g, t4);
  StoreFragmentRows<kDh>(static_cast<__nv_bfloat16*>(p.grad_v), dv, mul_v, bc.b, bc.h, k0 + kr,
                         p.tk, p.heads, g, t4);
}

}  // namespace loom::ops::internal::attn

#endif  // LOOM_MODEL_OPS_ATTENTION_MMA_CUH_
