// CUDA-core (FFMA) attention kernels: fp32 arithmetic on f32 or bf16 inputs. The f32 path of
// attention_cuda.cu, and the fallback for bf16 (AttentionCudaKernel::kSimt).
//
// Every kernel is a chain of small products on fp32 shared-memory tiles, computed by a 16 x 8
// grid of threads (ty = tid / 8, tx = tid % 8):
//   * score tiles S (rows x cols): thread (ty, tx) owns rows ty*kTM + i and columns tx + 8*j;
//     the 8 threads of a row group are 8 consecutive lanes, so row max/sum are 3 shuffles.
//   * output tiles (rows x Dh): the same rows, and head dims jj*8*kVD + tx*kVD + e.
// Shared rows are padded by 4 floats: 16-byte loads of 8 consecutive rows (one quarter-warp
// phase) then hit 8 disjoint 4-bank groups for every Dh in {16, 32, 64, 128}.
#ifndef LOOM_MODEL_OPS_ATTENTION_SIMT_CUH_
#define LOOM_MODEL_OPS_ATTENTION_SIMT_CUH_

#include "csrc/model/ops/attention_cuda_common.cuh"

namespace loom::ops::internal::attn {

// Tile geometry of one SIMT kernel: kRows x kCols score tiles, head dim kDh.
template <int kDh, int kRows, int kCols>
struct SimtTile {
  static constexpr int kTM = kRows / 16;         // rows per thread
  static constexpr int kTN = kCols / 8;          // columns per thread
  static constexpr int kTD = kDh / 8;            // head dims per thread
  static constexpr int kVD = kTD < 4 ? kTD : 4;  // head dims per vector access
  static constexpr int kStride = kDh + 4;        // padded fp32 row of a Q/K/V/dO tile
  static constexpr int kPStride = kCols + 4;     // padded fp32 row of a P/dS tile
  static_assert(kRows % 16 == 0 && kCols % 32 == 0, "tile shape");
  static_assert(kDh == 16 || kDh == 32 || kDh == 64 || kDh == 128, "head dim");
  static_assert(kTD % kVD == 0 && (kVD == 2 || kVD == 4), "head-dim split");
};

template <int kN>
__device__ __forceinline__ void LoadF(const float* src, float* dst) {
  if constexpr (kN == 4) {
    const float4 v = *reinterpret_cast<const float4*>(src);
    dst[0] = v.x;
    dst[1] = v.y;
    dst[2] = v.z;
    dst[3] = v.w;
  } else {
    static_assert(kN == 2, "vector width");
    const float2 v = *reinterpret_cast<const float2*>(src);
    dst[0] = v.x;
    dst[1] = v.y;
  }
}

// Stores kN (2 or 4) floats as Elem at dst (aligned to kN elements).
template <typename Elem, int kN>
__device__ __forceinline__ void StoreVec(Elem* dst, const float* v) {
  if constexpr (sizeof(Elem) == 4) {
    if constexpr (kN == 4) {
      *reinterpret_cast<float4*>(dst) = make_float4(v[0], v[1], v[2], v[3]);
    } else {
      *reinterpret_cast<float2*>(dst) = make_float2(v[0], v[1]);
    }
  } else {
    uint32_t w[kN / 2];
#pragma unroll
    for (int i = 0; i < kN / 2; ++i) {
      w[i] = static_cast<uint32_t>(__bfloat16_as_ushort(__float2bfloat16_rn(v[2 * i]))) |
             (static_cast<uint32_t>(__bfloat16_as_ushort(__float2bfloat16_rn(v[2 * i + 1]))) << 16);
    }
    if constexpr (kN == 4) {
      *reinterpret_cast<uint2*>(dst) = make_uint2(w[0], w[1]);
    } else {
      *reinterpret_cast<uint32_t*>(dst) = w[0];
    }
  }
}

// s[i][j] = sum_d a[ty*kTM + i][d] * b[tx + 8*j][d] over fp32 tiles with row stride kStride.
template <int kDh, int kTM, int kTN, int kStride>
__device__ __forceinline__ void ScoreTile(float (&s)[kTM][kTN], const float* a, const float* b,
                                          int ty, int tx) {
#pragma unroll
  for (int i = 0; i < kTM; ++i) {
#pragma unroll
    for (int j = 0; j < kTN; ++j) s[i][j] = 0.0f;
  }
#pragma unroll 2
  for (int d = 0; d < kDh; d += 4) {
    float4 av[kTM], bv[kTN];
#pragma unroll
    for (int i = 0; i < kTM; ++i) {
      av[i] = *reinterpret_cast<const float4*>(a + (ty * kTM + i) * kStride + d);
    }
#pragma unroll
    for (int j = 0; j < kTN; ++j) {
      bv[j] = *reinterpret_cast<const float4*>(b + (tx + 8 * j) * kStride + d);
    }
#pragma unroll
    for (int i = 0; i < kTM; ++i) {
#pragma unroll
      for (int j = 0; j < kTN; ++j) {
        s[i][j] = fmaf(av[i].x, bv[j].x, s[i][j]);
        s[i][j] = fmaf(av[i].y, bv[j].y, s[i][j]);
        s[i][j] = fmaf(av[i].z, bv[j].z, s[i][j]);
        s[i][j] = fmaf(av[i].w, bv[j].w, s[i][j]);
      }
    }
  }
}

// acc[i][dd] += sum_{c < kCols} p[ty*kTM + i][c] * v[c][dim(dd)], dim(jj*kVD + e) =
// jj*8*kVD + tx*kVD + e; p has row stride kPStride, v row stride kStride.
template <int kDh, int kTM, int kCols, int kStride, int kPStride>
__device__ __forceinline__ void AccumulatePV(float (&acc)[kTM][kDh / 8], const float* p,
                                             const float* v, int ty, int tx) {
  constexpr int kTD = kDh / 8;
  constexpr int kVD = kTD < 4 ? kTD : 4;
#pragma unroll 2
  for (int c = 0; c < kCols; c += 4) {
    float pv[kTM][4];
#pragma unroll
    for (int i = 0; i < kTM; ++i) LoadF<4>(p + (ty * kTM + i) * kPStride + c, pv[i]);
#pragma unroll
    for (int cc = 0; cc < 4; ++cc) {
      float vv[kTD];
#pragma unroll
      for (int jj = 0; jj < kTD / kVD; ++jj) {
        LoadF<kVD>(v + (c + cc) * kStride + jj * 8 * kVD + tx * kVD, vv + jj * kVD);
      }
#pragma unroll
      for (int i = 0; i < kTM; ++i) {
#pragma unroll
        for (int dd = 0; dd < kTD; ++dd) acc[i][dd] = fmaf(pv[i][cc], vv[dd], acc[i][dd]);
      }
    }
  }
}

// Writes acc[i][:] * mul[i] to rows row0 + ty*kTM + i (< rows_total) of (b, h).
template <typename Elem, int kDh, int kTM>
__device__ __forceinline__ void StoreRows(Elem* dst, const float (&acc)[kTM][kDh / 8],
                                          const float (&mul)[kTM], int b, int h, int row0,
                                          int rows_total, int heads, int ty, int tx) {
  constexpr int kTD = kDh / 8;
  constexpr int kVD = kTD < 4 ? kTD : 4;
#pragma unroll
  for (int i = 0; i < kTM; ++i) {
    const int t = row0 + ty * kTM + i;
    if (t >= rows_total) continue;
    Elem* row = dst + RowOffset<kDh>(b, t, h, rows_total, heads);
#pragma unroll
    for (int jj = 0; jj < kTD / kVD; ++jj) {
      float vals[kVD];
#pragma unroll
      for (int e = 0; e < kVD; ++e) vals[e] = acc[i][jj * kVD + e] * mul[i];
      StoreVec<Elem, kVD>(row + jj * 8 * kVD + tx * kVD, vals);
    }
  }
}

// Zeroes rows [row0, row0 + kRows) (those < rows_total) of (b, h).
template <typename Elem, int kRows, int kDh>
__device__ __forceinline__ void ZeroRows(Elem* dst, int b, int h, int row0, int rows_total,
                                         int heads) {
  constexpr int kVec = 16 / static_cast<int>(sizeof(Elem));
  constexpr int kVecsPerRow = kDh / kVec;
  for (int i = static_cast<int>(threadIdx.x); i < kRows * kVecsPerRow; i += kThreads) {
    const int t = row0 + i / kVecsPerRow;
    if (t >= rows_total) continue;
    *reinterpret_cast<uint4*>(dst + RowOffset<kDh>(b, t, h, rows_total, heads) +
                              (i % kVecsPerRow) * kVec) = make_uint4(0u, 0u, 0u, 0u);
  }
}

// ---- forward --------------------------------------------------------------------------------
// Grid: B * H * ceil(Tq / kBM) blocks; a block owns kBM queries and sweeps all key tiles.
template <typename Elem, int kDh, int kBM, int kBN>
struct SimtForward {
  using Tile = SimtTile<kDh, kBM, kBN>;
  static constexpr int kSmemFloats =
      kBM * Tile::kStride + 2 * kBN * Tile::kStride + kBM * Tile::kPStride + kBN;
  static constexpr size_t kSmemBytes = kSmemFloats * sizeof(float);
};

template <typename Elem, int kDh, int kBM, int kBN>
__global__ void __launch_bounds__(kThreads) SimtForwardKernel(const Params p) {
  using Tile = SimtTile<kDh, kBM, kBN>;
  constexpr int kTM = Tile::kTM, kTN = Tile::kTN, kTD = Tile::kTD;
  constexpr int kS = Tile::kStride, kPS = Tile::kPStride;
  uint4* smem = DynamicSmem();
  float* qs = reinterpret_cast<float*>(smem);  // (kBM, kS)
  float* ks = qs + kBM * kS;                   // (kBN, kS)
  float* vs = ks + kBN * kS;                   // (kBN, kS)
  float* ps = vs + kBN * kS;                   // (kBM, kPS) probabilities
  float* usable = ps + kBM * kPS;              // (kBN)

  const BlockCoords bc = DecodeBlock(p);
  const int tid = static_cast<int>(threadIdx.x), ty = tid / 8, tx = tid % 8;
  const int q0 = bc.tile * kBM;
  const Elem* q = static_cast<const Elem*>(p.q);
  const Elem* k = static_cast<const Elem*>(p.k);
  const Elem* v = static_cast<const Elem*>(p.v);
  LoadTileF32<Elem, kBM, kDh, kS>(qs, q, bc.b, bc.h, q0, p.tq, p.heads);

  float m[kTM], l[kTM], acc[kTM][kTD];
#pragma unroll
  for (int i = 0; i < kTM; ++i) {
    m[i] = -INFINITY;
    l[i] = 0.0f;
#pragma unroll
    for (int dd = 0; dd < kTD; ++dd) acc[i][dd] = 0.0f;
  }

  for (int k0 = 0; k0 < p.tk; k0 += kBN) {
    __syncthreads();  // the previous tile's ks/vs/ps are no longer read
    LoadTileF32<Elem, kBN, kDh, kS>(ks, k, bc.b, bc.h, k0, p.tk, p.heads);
    LoadTileF32<Elem, kBN, kDh, kS>(vs, v, bc.b, bc.h, k0, p.tk, p.heads);
    if (!MarkUsableKeys<kBN>(p, bc.b, k0, usable)) continue;  // (contains the barrier)

    float s[kTM][kTN];
    ScoreTile<kDh, kTM, kTN, kS>(s, qs, ks, ty, tx);
#pragma unroll
    for (int i = 0; i < kTM; ++i) {
      float mx = -INFINITY;
#pragma unroll
      for (int j = 0; j < kTN; ++j) {
        if (usable[tx + 8 * j] != 0.0f) mx = fmaxf(mx, s[i][j] * p.scale);
      }
      mx = GroupMax<8>(mx);
      // The tile has a usable key, so m_new is finite; alpha = 0 on the first usable tile.
      const float m_new = fmaxf(m[i], mx);
      const float alpha = expf(m[i] - m_new);
      float rowsum = 0.0f;
#pragma unroll
      for (int j = 0; j < kTN; ++j) {
        const float pij = usable[tx + 8 * j] != 0.0f ? ExpShifted(s[i][j], p.scale, m_new) : 0.0f;
        rowsum += pij;
        ps[(ty * kTM + i) * kPS + tx + 8 * j] = pij;
      }
      l[i] = l[i] * alpha + rowsum;  // this thread's partial sum; reduced at the end
      m[i] = m_new;
#pragma unroll
      for (int dd = 0; dd < kTD; ++dd) acc[i][dd] *= alpha;
    }
    __syncthreads();  // ps complete
    AccumulatePV<kDh, kTM, kBN, kS, kPS>(acc, ps, vs, ty, tx);
  }

  float one[kTM];
#pragma unroll
  for (int i = 0; i < kTM; ++i) {
    l[i] = GroupSum<8>(l[i]);
    one[i] = 1.0f;
    // A division per element (not a reciprocal and a product): one rounding fewer.
#pragma unroll
    for (int dd = 0; dd < kTD; ++dd) acc[i][dd] = l[i] > 0.0f ? acc[i][dd] / l[i] : 0.0f;
  }
  StoreRows<Elem, kDh, kTM>(static_cast<Elem*>(p.o), acc, one, bc.b, bc.h, q0, p.tq, p.heads, ty,
                            tx);
  if (tx == 0) {
#pragma unroll
    for (int i = 0; i < kTM; ++i) {
      const int t = q0 + ty * kTM + i;
      if (t < p.tq) {
        p.lse[(static_cast<int64_t>(bc.b) * p.heads + bc.h) * p.tq + t] =
            LseFromRunning(m[i], l[i]);
      }
    }
  }
}

// ---- backward: grad_q -----------------------------------------------------------------------
// Grid: B * H * ceil(Tq / kBM); a block owns kBM queries and sweeps all key tiles:
//   p = exp(s - lse), dp = grad_o . v, ds = p (dp - D), grad_q = scale * sum ds k.
template <typename Elem, int kDh, int kBM, int kBN>
struct SimtBackwardDq {
  using Tile = SimtTile<kDh, kBM, kBN>;
  static constexpr int kSmemFloats =
      2 * kBM * Tile::kStride + 2 * kBN * Tile::kStride + kBM * Tile::kPStride + kBN;
  static constexpr size_t kSmemBytes = kSmemFloats * sizeof(float);
};

template <typename Elem, int kDh, int kBM, int kBN>
__global__ void __launch_bounds__(kThreads) SimtBackwardDqKernel(const Params p) {
  using Tile = SimtTile<kDh, kBM, kBN>;
  constexpr int kTM = Tile::kTM, kTN = Tile::kTN, kTD = Tile::kTD;
  constexpr int kS = Tile::kStride, kPS = Tile::kPStride;
  uint4* smem = DynamicSmem();
  float* qs = reinterpret_cast<float*>(smem);  // (kBM, kS)
  float* dos = qs + kBM * kS;                  // (kBM, kS) grad_o
  float* ks = dos + kBM * kS;                  // (kBN, kS)
  float* vs = ks + kBN * kS;                   // (kBN, kS)
  float* dss = vs + kBN * kS;                  // (kBM, kPS) ds
  float* usable = dss + kBM * kPS;             // (kBN)

  const BlockCoords bc = DecodeBlock(p);
  const int tid = static_cast<int>(threadIdx.x), ty = tid / 8, tx = tid % 8;
  const int q0 = bc.tile * kBM;
  const Elem* o = static_cast<const Elem*>(p.o);
  LoadTileF32<Elem, kBM, kDh, kS>(qs, static_cast<const Elem*>(p.q), bc.b, bc.h, q0, p.tq, p.heads);
  LoadTileF32<Elem, kBM, kDh, kS>(dos, static_cast<const Elem*>(p.grad_o), bc.b, bc.h, q0, p.tq,
                                  p.heads);
  __syncthreads();

  // D = <grad_o, o> and the base-2 lse of this thread's rows (8 lanes per row).
  float delta[kTM], lse[kTM];
#pragma unroll
  for (int i = 0; i < kTM; ++i) {
    const int r = ty * kTM + i, t = q0 + r;
    float sum = 0.0f;
    if (t < p.tq) {
      const Elem* orow = o + RowOffset<kDh>(bc.b, t, bc.h, p.tq, p.heads);
#pragma unroll
      for (int e = 0; e < kDh / 8; ++e) sum += dos[r * kS + tx + 8 * e] * ToFloat(orow[tx + 8 * e]);
    }
    delta[i] = GroupSum<8>(sum);
    lse[i] = BackwardLse(p, bc.b, bc.h, t);
  }

  float acc[kTM][kTD];
#pragma unroll
  for (int i = 0; i < kTM; ++i) {
#pragma unroll
    for (int dd = 0; dd < kTD; ++dd) acc[i][dd] = 0.0f;
  }
  for (int k0 = 0; k0 < p.tk; k0 += kBN) {
    __syncthreads();  // the previous tile's ks/vs/dss are no longer read
    LoadTileF32<Elem, kBN, kDh, kS>(ks, static_cast<const Elem*>(p.k), bc.b, bc.h, k0, p.tk,
                                    p.heads);
    LoadTileF32<Elem, kBN, kDh, kS>(vs, static_cast<const Elem*>(p.v), bc.b, bc.h, k0, p.tk,
                                    p.heads);
    if (!MarkUsableKeys<kBN>(p, bc.b, k0, usable)) continue;
    float s[kTM][kTN], dp[kTM][kTN];
    ScoreTile<kDh, kTM, kTN, kS>(s, qs, ks, ty, tx);
    ScoreTile<kDh, kTM, kTN, kS>(dp, dos, vs, ty, tx);
#pragma unroll
    for (int i = 0; i < kTM; ++i) {
#pragma unroll
      for (int j = 0; j < kTN; ++j) {
        const float pij = usable[tx + 8 * j] != 0.0f ? ExpShifted(s[i][j], p.scale, lse[i]) : 0.0f;
        dss[(ty * kTM + i) * kPS + tx + 8 * j] = pij * (dp[i][j] - delta[i]);
      }
    }
    __syncthreads();  // dss complete
    AccumulatePV<kDh, kTM, kBN, kS, kPS>(acc, dss, ks, ty, tx);
  }
  float mul[kTM];
#pragma unroll
  for (int i = 0; i < kTM; ++i) mul[i] = p.scale;
  StoreRows<Elem, kDh, kTM>(static_cast<Elem*>(p.grad_q), acc, mul, bc.b, bc.h, q0, p.tq, p.heads,
                            ty, tx);
}

// ---- backward: grad_k, grad_v ---------------------------------------------------------------
// Grid: B * H * ceil(Tk / kBN); a block owns kBN keys and sweeps all query tiles of kBM:
//   p^T = exp(s^T - lse), dp^T = v . grad_o, ds^T = p^T (dp^T - D),
//   grad_v = sum p^T grad_o, grad_k = scale * sum ds^T q.
// D is recomputed per query tile from grad_o and o (no workspace).
template <typename Elem, int kDh, int kBN, int kBM>
struct SimtBackwardDkDv {
  using Tile = SimtTile<kDh, kBN, kBM>;  // rows = keys, columns = queries
  static constexpr int kSmemFloats =
      2 * kBN * Tile::kStride + 2 * kBM * Tile::kStride + 2 * kBN * Tile::kPStride + 2 * kBM + kBN;
  static constexpr size_t kSmemBytes = kSmemFloats * sizeof(float);
};

template <typename Elem, int kDh, int kBN, int kBM>
__global__ void __launch_bounds__(kThreads) SimtBackwardDkDvKernel(const Params p) {
  using Tile = SimtTile<kDh, kBN, kBM>;
  constexpr int kTM = Tile::kTM, kTN = Tile::kTN, kTD = Tile::kTD;
  constexpr int kS = Tile::kStride, kPS = Tile::kPStride;
  constexpr int kTPQ = kThreads / kBM;  // threads per query for D
  static_assert(kTPQ >= 1 && kTPQ <= 32 && (kTPQ & (kTPQ - 1)) == 0, "query tile");
  uint4* smem = DynamicSmem();
  float* ks = reinterpret_cast<float*>(smem);  // (kBN, kS)
  float* vs = ks + kBN * kS;                   // (kBN, kS)
  float* qs = vs + kBN * kS;                   // (kBM, kS)
  float* dos = qs + kBM * kS;                  // (kBM, kS)
  float* ps = dos + kBM * kS;                  // (kBN, kPS) p^T
  float* dss = ps + kBN * kPS;                 // (kBN, kPS) ds^T
  float* lses = dss + kBN * kPS;               // (kBM)
  float* deltas = lses + kBM;                  // (kBM)
  float* usable = deltas + kBM;                // (kBN)

  const BlockCoords bc = DecodeBlock(p);
  const int tid = static_cast<int>(threadIdx.x), ty = tid / 8, tx = tid % 8;
  const int k0 = bc.tile * kBN;
  const Elem* q = static_cast<const Elem*>(p.q);
  const Elem* grad_o = static_cast<const Elem*>(p.grad_o);
  const Elem* o = static_cast<const Elem*>(p.o);
  LoadTileF32<Elem, kBN, kDh, kS>(ks, static_cast<const Elem*>(p.k), bc.b, bc.h, k0, p.tk, p.heads);
  LoadTileF32<Elem, kBN, kDh, kS>(vs, static_cast<const Elem*>(p.v), bc.b, bc.h, k0, p.tk, p.heads);
  if (!MarkUsableKeys<kBN>(p, bc.b, k0, usable)) {
    ZeroRows<Elem, kBN, kDh>(static_cast<Elem*>(p.grad_k), bc.b, bc.h, k0, p.tk, p.heads);
    ZeroRows<Elem, kBN, kDh>(static_cast<Elem*>(p.grad_v), bc.b, bc.h, k0, p.tk, p.heads);
    return;
  }
  bool key_ok[kTM];
#pragma unroll
  for (int i = 0; i < kTM; ++i) key_ok[i] = usable[ty * kTM + i] != 0.0f;

  float dk[kTM][kTD], dv[kTM][kTD];
#pragma unroll
  for (int i = 0; i < kTM; ++i) {
#pragma unroll
    for (int dd = 0; dd < kTD; ++dd) dk[i][dd] = dv[i][dd] = 0.0f;
  }
  for (int q0 = 0; q0 < p.tq; q0 += kBM) {
    __syncthreads();  // the previous query tile is no longer read
    LoadTileF32<Elem, kBM, kDh, kS>(qs, q, bc.b, bc.h, q0, p.tq, p.heads);
    LoadTileF32<Elem, kBM, kDh, kS>(dos, grad_o, bc.b, bc.h, q0, p.tq, p.heads);
    __syncthreads();
    {
      const int c = tid / kTPQ, sub = tid % kTPQ, t = q0 + c;
      float sum = 0.0f;
      if (t < p.tq) {
        const Elem* orow = o + RowOffset<kDh>(bc.b, t, bc.h, p.tq, p.heads);
        for (int d = sub; d < kDh; d += kTPQ) sum += dos[c * kS + d] * ToFloat(orow[d]);
      }
      sum = GroupSum<kTPQ>(sum);
      if (sub == 0) {
        deltas[c] = sum;
        lses[c] = BackwardLse(p, bc.b, bc.h, t);
      }
    }
    __syncthreads();
    float s[kTM][kTN], dp[kTM][kTN];
    ScoreTile<kDh, kTM, kTN, kS>(s, ks, qs, ty, tx);
    ScoreTile<kDh, kTM, kTN, kS>(dp, vs, dos, ty, tx);
#pragma unroll
    for (int i = 0; i < kTM; ++i) {
#pragma unroll
      for (int j = 0; j < kTN; ++j) {
        const int c = tx + 8 * j;
        const float pij = key_ok[i] ? ExpShifted(s[i][j], p.scale, lses[c]) : 0.0f;
        ps[(ty * kTM + i) * kPS + c] = pij;
        dss[(ty * kTM + i) * kPS + c] = pij * (dp[i][j] - deltas[c]);
      }
    }
    __syncthreads();  // ps, dss complete
    AccumulatePV<kDh, kTM, kBM, kS, kPS>(dv, ps, dos, ty, tx);
    AccumulatePV<kDh, kTM, kBM, kS, kPS>(dk, dss, qs, ty, tx);
  }
  float one[kTM], scale[kTM];
#pragma unroll
  for (int i = 0; i < kTM; ++i) {
    one[i] = 1.0f;
    scale[i] = p.scale;
  }
  StoreRows<Elem, kDh, kTM>(static_cast<Elem*>(p.grad_k), dk, scale, bc.b, bc.h, k0, p.tk, p.heads,
                            ty, tx);
  StoreRows<Elem, kDh, kTM>(static_cast<Elem*>(p.grad_v), dv, one, bc.b, bc.h, k0, p.tk, p.heads,
                            ty, tx);
}

}  // namespace loom::ops::internal::attn

#endif  // LOOM_MODEL_OPS_ATTENTION_SIMT_CUH_
