// CPU backend of attention.h: the reference, and the production path of CPU runs.
//
// One OpenMP task per (b, h). Inside a task the math is FlashAttention's, blocked for the cache:
// a block of kBlockQ queries sweeps the keys in tiles of kBlockK; each tile's scores live only
// in a small (kBlockQ x kBlockK) buffer, and the softmax is online (running max m and sum l per
// query, the output rescaled when the max grows). Each key tile is packed transposed (Dh x keys)
// and holds only the VALID keys of the tile, so padding costs nothing and the inner loops of
// the small products are contiguous and vectorize. All products run through three register-
// blocked micro-kernels (4 x 8 outputs), written so the compiler keeps the accumulators in
// registers.
//
// Precision: the arithmetic type is the storage type (float for f32, double for f64); the
// summation order is fixed, so results are identical run to run and for any thread count.
//
// Scratch: each OpenMP thread keeps a grow-only buffer (thread_local) of at most
// 3*kBlockQ*Dh + 2*Dh*kBlockK + 2*kBlockQ*kBlockK elements (~240 KB for f32, Dh = 256). It is
// allocated on the first call with a new shape maximum and reused afterwards, so steady-state
// steps allocate nothing.
#include "csrc/model/ops/attention.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include <glog/logging.h>

namespace loom::ops::internal {
namespace {

constexpr int kBlockQ = 32;  // queries per block (a multiple of kMr)
constexpr int kBlockK = 64;  // keys per tile (a multiple of kNr)
constexpr int kMr = 4;       // micro-kernel rows
constexpr int kNr = 8;       // micro-kernel columns

int RoundUp(int x, int m) { return (x + m - 1) / m * m; }

// Problems below this many multiply-adds (B*H*Tq*Tk*Dh) run on the calling thread: a fork/join
// costs more (docs/numerics.md, CPU performance notes).
constexpr int64_t kMinParallelWork = int64_t{1} << 15;

// y[i] = exp(x[i]) for i < n. For float: a branch-free Cephes-style expf (range reduction by
// ln 2 in two parts, degree-6 polynomial, 2^n by exponent bits) that the compiler vectorizes;
// relative error <= 8.2e-8 (1.4 ulp; measured over [-87, 3]), exactly 0 below -87.3 and for
// -inf, finite inputs
// only. glibc's scalar expf cost as much as the score products at Dh = 16. For double (tests,
// gradient checks): std::exp.
inline void ExpInPlace(float* x, int n) {
  for (int i = 0; i < n; ++i) {
    const float v = x[i];
    const float xc = std::min(std::max(v, -87.3f), 88.3f);
    const float fx = xc * 1.44269504088896341f + 0.5f;
    int k = static_cast<int>(fx);               // truncation ...
    k -= (static_cast<float>(k) > fx) ? 1 : 0;  // ... to floor
    const float kf = static_cast<float>(k);
    float r = xc - kf * 0.693359375f;
    r = r - kf * -2.12194440e-4f;
    const float r2 = r * r;
    float y = 1.9875691500e-4f;
    y = y * r + 1.3981999507e-3f;
    y = y * r + 8.3334519073e-3f;
    y = y * r + 4.1665795894e-2f;
    y = y * r + 1.6666665459e-1f;
    y = y * r + 5.0000001201e-1f;
    y = y * r2 + r + 1.0f;
    const int32_t bits = (k + 127) << 23;
    float scale;
    std::memcpy(&scale, &bits, sizeof(scale));
    x[i] = v < -87.3f ? 0.0f : y * scale;
  }
}
inline void ExpInPlace(double* x, int n) {
  for (int i = 0; i < n; ++i) x[i] = std::exp(x[i]);
}

// Problem geometry shared by forward and backward.
struct Geometry {
  int64_t batch, tq, tk, heads, dh;
  double scale;
  // Element offset of row (b, t, h) in a (B, T, H, Dh) tensor with T rows per batch entry.
  int64_t Row(int64_t b, int64_t t, int64_t h, int64_t rows) const {
    return ((b * rows + t) * heads + h) * dh;
  }
};

Geometry MakeGeometry(const AttentionArgs& args, ConstTensorView q, ConstTensorView k) {
  Geometry g;
  g.batch = q.dim(0);
  g.tq = q.dim(1);
  g.heads = q.dim(2);
  g.dh = q.dim(3);
  g.tk = k.dim(1);
  g.scale = AttentionScale(args, g.dh);
  return g;
}

template <typename T>
T* ThreadScratch(size_t n) {
  thread_local std::vector<T> buffer;
  if (buffer.size() < n) buffer.resize(n);
  return buffer.data();
}

// The valid keys of tile [j0, j0 + n): their indices, in order. Returns how many.
int ValidKeys(const uint8_t* mask_row, int64_t j0, int n, int* idx) {
  int nv = 0;
  for (int c = 0; c < n; ++c) {
    if (mask_row == nullptr || mask_row[j0 + c] != 0) idx[nv++] = static_cast<int>(j0 + c);
  }
  return nv;
}

// C[r][c] = sum_d A[r][d] * Bt[d][c] for r < m (multiple of kMr), c < n (multiple of kNr).
// A is (m x kdim) with leading dimension lda; Bt is (kdim x n) with leading dimension ldb; C has
// leading dimension ldc.
template <typename T>
void GemmABt(int m, int n, int kdim, const T* a, int lda, const T* bt, int ldb, T* c, int ldc) {
  for (int r0 = 0; r0 < m; r0 += kMr) {
    for (int c0 = 0; c0 < n; c0 += kNr) {
      T acc[kMr][kNr] = {};
      for (int d = 0; d < kdim; ++d) {
        const T* brow = bt + static_cast<int64_t>(d) * ldb + c0;
        for (int i = 0; i < kMr; ++i) {
          const T av = a[static_cast<int64_t>(r0 + i) * lda + d];
          for (int j = 0; j < kNr; ++j) acc[i][j] += av * brow[j];
        }
      }
      for (int i = 0; i < kMr; ++i) {
        std::memcpy(c + static_cast<int64_t>(r0 + i) * ldc + c0, acc[i], sizeof(acc[i]));
      }
    }
  }
}

// Out[r][d] += sum_{c < n} P[r][c] * brows[c][d] for r < m (multiple of kMr), d < dh.
// P has leading dimension ldp; Out has leading dimension ldo; brows[c] points at a row of dh.
template <typename T>
void GemmAccPB(int m, int n, int dh, const T* p, int ldp, const T* const* brows, T* out, int ldo) {
  const int dh_main = dh / kNr * kNr;
  for (int r0 = 0; r0 < m; r0 += kMr) {
    for (int d0 = 0; d0 < dh_main; d0 += kNr) {
      T acc[kMr][kNr];
      for (int i = 0; i < kMr; ++i) {
        std::memcpy(acc[i], out + static_cast<int64_t>(r0 + i) * ldo + d0, sizeof(acc[i]));
      }
      for (int c = 0; c < n; ++c) {
        const T* brow = brows[c] + d0;
        for (int i = 0; i < kMr; ++i) {
          const T pv = p[static_cast<int64_t>(r0 + i) * ldp + c];
          for (int j = 0; j < kNr; ++j) acc[i][j] += pv * brow[j];
        }
      }
      for (int i = 0; i < kMr; ++i) {
        std::memcpy(out + static_cast<int64_t>(r0 + i) * ldo + d0, acc[i], sizeof(acc[i]));
      }
    }
    for (int d = dh_main; d < dh; ++d) {  // head dims that are not a multiple of kNr
      for (int i = 0; i < kMr; ++i) {
        T sum = out[static_cast<int64_t>(r0 + i) * ldo + d];
        for (int c = 0; c < n; ++c) sum += p[static_cast<int64_t>(r0 + i) * ldp + c] * brows[c][d];
        out[static_cast<int64_t>(r0 + i) * ldo + d] = sum;
      }
    }
  }
}

// outs[c][d] += sum_{r < m} P[r][c] * B[r][d] for c < n, d < dh (P^T B, written into gathered
// rows). P has leading dimension ldp (its columns >= n are ignored); B has leading dimension ldb.
template <typename T>
void GemmAccPtB(int m, int n, int dh, const T* p, int ldp, const T* b, int ldb, T* const* outs) {
  const int dh_main = dh / kNr * kNr;
  constexpr int kCols = kMr;  // output rows (keys) per block
  int c0 = 0;
  for (; c0 + kCols <= n; c0 += kCols) {
    for (int d0 = 0; d0 < dh_main; d0 += kNr) {
      T acc[kCols][kNr];
      for (int i = 0; i < kCols; ++i) std::memcpy(acc[i], outs[c0 + i] + d0, sizeof(acc[i]));
      for (int r = 0; r < m; ++r) {
        const T* brow = b + static_cast<int64_t>(r) * ldb + d0;
        const T* prow = p + static_cast<int64_t>(r) * ldp + c0;
        for (int i = 0; i < kCols; ++i) {
          const T pv = prow[i];
          for (int j = 0; j < kNr; ++j) acc[i][j] += pv * brow[j];
        }
      }
      for (int i = 0; i < kCols; ++i) std::memcpy(outs[c0 + i] + d0, acc[i], sizeof(acc[i]));
    }
    for (int d = dh_main; d < dh; ++d) {
      for (int i = 0; i < kCols; ++i) {
        T sum = outs[c0 + i][d];
        for (int r = 0; r < m; ++r)
          sum += p[static_cast<int64_t>(r) * ldp + c0 + i] * b[static_cast<int64_t>(r) * ldb + d];
        outs[c0 + i][d] = sum;
      }
    }
  }
  for (; c0 < n; ++c0) {  // leftover keys, one at a time
    for (int d = 0; d < dh; ++d) {
      T sum = outs[c0][d];
      for (int r = 0; r < m; ++r)
        sum += p[static_cast<int64_t>(r) * ldp + c0] * b[static_cast<int64_t>(r) * ldb + d];
      outs[c0][d] = sum;
    }
  }
}

// Packs the rows src[idx[c]] (each dh long, at src + offsets) transposed into dst (dh x ldd),
// zero-filling columns [nv, nv_pad).
template <typename T>
void PackTransposed(const T* const* rows, int nv, int nv_pad, int dh, T* dst, int ldd) {
  for (int d = 0; d < dh; ++d) {
    T* drow = dst + static_cast<int64_t>(d) * ldd;
    for (int c = 0; c < nv; ++c) drow[c] = rows[c][d];
    for (int c = nv; c < nv_pad; ++c) drow[c] = T(0);
  }
}

// Copies rows [i0, i0 + mq) of a (B, T, H, Dh) tensor for (b, h) into dst (kBlockQ x dh),
// zero-filling rows [mq, mq_pad).
template <typename T>
void LoadRows(const Geometry& g, const T* src, int64_t rows, int64_t b, int64_t h, int64_t i0,
              int mq, int mq_pad, T* dst) {
  const int dh = static_cast<int>(g.dh);
  for (int r = 0; r < mq; ++r) {
    std::memcpy(dst + static_cast<int64_t>(r) * dh, src + g.Row(b, i0 + r, h, rows),
                sizeof(T) * dh);
  }
  std::fill(dst + static_cast<int64_t>(mq) * dh, dst + static_cast<int64_t>(mq_pad) * dh, T(0));
}

template <typename T>
void ForwardHead(const Geometry& g, int64_t b, int64_t h, const T* q, const T* k, const T* v,
                 const uint8_t* mask_row, T* o, T* lse) {
  const int dh = static_cast<int>(g.dh);
  const T scale = static_cast<T>(g.scale);
  const T kNegInf = -std::numeric_limits<T>::infinity();
  T* qb =
      ThreadScratch<T>(static_cast<size_t>(2 * kBlockQ * dh + dh * kBlockK + kBlockQ * kBlockK));
  T* acc = qb + kBlockQ * dh;  // (kBlockQ, dh) unnormalized output
  T* kt = acc + kBlockQ * dh;  // (dh, kBlockK) packed K^T of the valid keys
  T* s = kt + dh * kBlockK;    // (kBlockQ, kBlockK) scores, then probabilities
  T m[kBlockQ], l[kBlockQ];
  int idx[kBlockK];
  const T* krows[kBlockK];
  const T* vrows[kBlockK];

  for (int64_t i0 = 0; i0 < g.tq; i0 += kBlockQ) {
    const int mq = static_cast<int>(std::min<int64_t>(kBlockQ, g.tq - i0));
    const int mq_pad = RoundUp(mq, kMr);
    LoadRows(g, q, g.tq, b, h, i0, mq, mq_pad, qb);
    std::fill(acc, acc + static_cast<int64_t>(mq_pad) * dh, T(0));
    std::fill(m, m + kBlockQ, kNegInf);
    std::fill(l, l + kBlockQ, T(0));
    for (int64_t j0 = 0; j0 < g.tk; j0 += kBlockK) {
      const int nk = static_cast<int>(std::min<int64_t>(kBlockK, g.tk - j0));
      const int nv = ValidKeys(mask_row, j0, nk, idx);
      if (nv == 0) continue;
      const int nv_pad = RoundUp(nv, kNr);
      for (int c = 0; c < nv; ++c) {
        krows[c] = k + g.Row(b, idx[c], h, g.tk);
        vrows[c] = v + g.Row(b, idx[c], h, g.tk);
      }
      PackTransposed(krows, nv, nv_pad, dh, kt, kBlockK);
      GemmABt(mq_pad, nv_pad, dh, qb, dh, kt, kBlockK, s, kBlockK);
      for (int r = 0; r < mq_pad; ++r) {
        T* srow = s + r * kBlockK;
        if (r >= mq) {  // padding rows: keep them out of the products
          std::fill(srow, srow + nv, T(0));
          continue;
        }
        T mx = kNegInf;
        for (int c = 0; c < nv; ++c) {
          srow[c] *= scale;
          mx = std::max(mx, srow[c]);
        }
        const T m_new = std::max(m[r], mx);
        const T alpha = std::exp(m[r] - m_new);  // 0 on the first valid tile (m = -inf)
        for (int c = 0; c < nv; ++c) srow[c] -= m_new;
        ExpInPlace(srow, nv);
        T sum = 0;
        for (int c = 0; c < nv; ++c) sum += srow[c];
        l[r] = l[r] * alpha + sum;
        m[r] = m_new;
        if (alpha != T(1)) {
          T* arow = acc + static_cast<int64_t>(r) * dh;
          for (int d = 0; d < dh; ++d) arow[d] *= alpha;
        }
      }
      GemmAccPB(mq_pad, nv, dh, s, kBlockK, vrows, acc, dh);
    }
    for (int r = 0; r < mq; ++r) {
      T* orow = o + g.Row(b, i0 + r, h, g.tq);
      const T* arow = acc + static_cast<int64_t>(r) * dh;
      const T inv = l[r] > T(0) ? T(1) / l[r] : T(0);
      for (int d = 0; d < dh; ++d) orow[d] = arow[d] * inv;
      lse[(b * g.heads + h) * g.tq + i0 + r] = l[r] > T(0) ? m[r] + std::log(l[r]) : kNegInf;
    }
  }
}

template <typename T>
void BackwardHead(const Geometry& g, int64_t b, int64_t h, const T* q, const T* k, const T* v,
                  const uint8_t* mask_row, const T* o, const T* lse, const T* grad_o, T* grad_q,
                  T* grad_k, T* grad_v) {
  const int dh = static_cast<int>(g.dh);
  const T scale = static_cast<T>(g.scale);
  T* qb = ThreadScratch<T>(
      static_cast<size_t>(3 * kBlockQ * dh + 2 * dh * kBlockK + 2 * kBlockQ * kBlockK));
  T* dob = qb + kBlockQ * dh;     // (kBlockQ, dh) grad_o rows
  T* dq = dob + kBlockQ * dh;     // (kBlockQ, dh) grad_q accumulator (unscaled)
  T* kt = dq + kBlockQ * dh;      // (dh, kBlockK) packed K^T
  T* vt = kt + dh * kBlockK;      // (dh, kBlockK) packed V^T
  T* p = vt + dh * kBlockK;       // (kBlockQ, kBlockK) probabilities
  T* ds = p + kBlockQ * kBlockK;  // (kBlockQ, kBlockK) dp, then ds
  T lse_r[kBlockQ], delta[kBlockQ];
  int idx[kBlockK];
  const T* krows[kBlockK];
  const T* vrows[kBlockK];
  T* gkrows[kBlockK];
  T* gvrows[kBlockK];

  for (int64_t j = 0; j < g.tk; ++j) {
    std::fill(grad_k + g.Row(b, j, h, g.tk), grad_k + g.Row(b, j, h, g.tk) + dh, T(0));
    std::fill(grad_v + g.Row(b, j, h, g.tk), grad_v + g.Row(b, j, h, g.tk) + dh, T(0));
  }
  for (int64_t i0 = 0; i0 < g.tq; i0 += kBlockQ) {
    const int mq = static_cast<int>(std::min<int64_t>(kBlockQ, g.tq - i0));
    const int mq_pad = RoundUp(mq, kMr);
    LoadRows(g, q, g.tq, b, h, i0, mq, mq_pad, qb);
    LoadRows(g, grad_o, g.tq, b, h, i0, mq, mq_pad, dob);
    std::fill(dq, dq + static_cast<int64_t>(mq_pad) * dh, T(0));
    for (int r = 0; r < mq; ++r) {
      const T* orow = o + g.Row(b, i0 + r, h, g.tq);
      const T* dorow = dob + static_cast<int64_t>(r) * dh;
      T sum = 0;
      for (int d = 0; d < dh; ++d) sum += dorow[d] * orow[d];
      delta[r] = sum;
      lse_r[r] = lse[(b * g.heads + h) * g.tq + i0 + r];
    }
    for (int64_t j0 = 0; j0 < g.tk; j0 += kBlockK) {
      const int nk = static_cast<int>(std::min<int64_t>(kBlockK, g.tk - j0));
      const int nv = ValidKeys(mask_row, j0, nk, idx);
      if (nv == 0) continue;
      const int nv_pad = RoundUp(nv, kNr);
      for (int c = 0; c < nv; ++c) {
        krows[c] = k + g.Row(b, idx[c], h, g.tk);
        vrows[c] = v + g.Row(b, idx[c], h, g.tk);
        gkrows[c] = grad_k + g.Row(b, idx[c], h, g.tk);
        gvrows[c] = grad_v + g.Row(b, idx[c], h, g.tk);
      }
      PackTransposed(krows, nv, nv_pad, dh, kt, kBlockK);
      PackTransposed(vrows, nv, nv_pad, dh, vt, kBlockK);
      GemmABt(mq_pad, nv_pad, dh, qb, dh, kt, kBlockK, p, kBlockK);    // scores
      GemmABt(mq_pad, nv_pad, dh, dob, dh, vt, kBlockK, ds, kBlockK);  // dp = grad_o . v
      for (int r = 0; r < mq_pad; ++r) {
        T* prow = p + r * kBlockK;
        T* dsrow = ds + r * kBlockK;
        // Padding rows, and rows whose lse is -inf (no valid key: cannot happen when this tile
        // has one, but guarded), take no part.
        if (r >= mq || !(lse_r[r] > -std::numeric_limits<T>::infinity())) {
          std::fill(prow, prow + nv, T(0));
          std::fill(dsrow, dsrow + nv, T(0));
          continue;
        }
        for (int c = 0; c < nv; ++c) prow[c] = prow[c] * scale - lse_r[r];
        ExpInPlace(prow, nv);
        for (int c = 0; c < nv; ++c) dsrow[c] = prow[c] * (dsrow[c] - delta[r]);
      }
      GemmAccPB(mq_pad, nv, dh, ds, kBlockK, krows, dq, dh);    // dq += ds k
      GemmAccPtB(mq_pad, nv, dh, p, kBlockK, dob, dh, gvrows);  // dv += p^T grad_o
      GemmAccPtB(mq_pad, nv, dh, ds, kBlockK, qb, dh, gkrows);  // dk += ds^T q
    }
    for (int r = 0; r < mq; ++r) {
      T* gqrow = grad_q + g.Row(b, i0 + r, h, g.tq);
      const T* dqrow = dq + static_cast<int64_t>(r) * dh;
      for (int d = 0; d < dh; ++d) gqrow[d] = dqrow[d] * scale;
    }
  }
  for (int64_t j = 0; j < g.tk; ++j) {
    T* gkrow = grad_k + g.Row(b, j, h, g.tk);
    for (int d = 0; d < dh; ++d) gkrow[d] *= scale;
  }
}

const uint8_t* MaskData(ConstTensorView key_mask) {
  return key_mask.rank() == 0 ? nullptr : key_mask.data<uint8_t>();
}

template <typename T>
void ForwardImpl(const AttentionArgs& args, ConstTensorView q, ConstTensorView k, ConstTensorView v,
                 ConstTensorView key_mask, TensorView o, TensorView lse) {
  const Geometry g = MakeGeometry(args, q, k);
  const T* qp = q.data<T>();
  const T* kp = k.data<T>();
  const T* vp = v.data<T>();
  const uint8_t* mask = MaskData(key_mask);
  T* op = o.data<T>();
  T* lp = lse.data<T>();
  const int64_t tasks = g.batch * g.heads;
  const bool parallel = tasks > 1 && tasks * g.tq * g.tk * g.dh >= kMinParallelWork;
#pragma omp parallel for schedule(dynamic, 1) if (parallel)
  for (int64_t t = 0; t < tasks; ++t) {
    const int64_t b = t / g.heads, h = t % g.heads;
    ForwardHead<T>(g, b, h, qp, kp, vp, mask ? mask + b * g.tk : nullptr, op, lp);
  }
}

template <typename T>
void BackwardImpl(const AttentionArgs& args, ConstTensorView q, ConstTensorView k,
                  ConstTensorView v, ConstTensorView key_mask, ConstTensorView o,
                  ConstTensorView lse, ConstTensorView grad_o, TensorView grad_q, TensorView grad_k,
                  TensorView grad_v) {
  const Geometry g = MakeGeometry(args, q, k);
  const uint8_t* mask = MaskData(key_mask);
  const int64_t tasks = g.batch * g.heads;
  const bool parallel = tasks > 1 && tasks * g.tq * g.tk * g.dh >= kMinParallelWork;
#pragma omp parallel for schedule(dynamic, 1) if (parallel)
  for (int64_t t = 0; t < tasks; ++t) {
    const int64_t b = t / g.heads, h = t % g.heads;
    BackwardHead<T>(g, b, h, q.data<T>(), k.data<T>(), v.data<T>(),
                    mask ? mask + b * g.tk : nullptr, o.data<T>(), lse.data<T>(), grad_o.data<T>(),
                    grad_q.data<T>(), grad_k.data<T>(), grad_v.data<T>());
  }
}

}  // namespace

void AttentionForwardCpu(const AttentionArgs& args, ConstTensorView q, ConstTensorView k,
                         ConstTensorView v, ConstTensorView key_mask, TensorView o,
                         TensorView lse) {
  if (q.dtype() == DType::kF64) {
    ForwardImpl<double>(args, q, k, v, key_mask, o, lse);
  } else {
    CHECK(q.dtype() == DType::kF32) << "attention (cpu): dtype " << DTypeName(q.dtype());
    ForwardImpl<float>(args, q, k, v, key_mask, o, lse);
  }
}

void AttentionBackwardCpu(const AttentionArgs& args, ConstTensorView q, ConstTensorView k,
                          ConstTensorView v, ConstTensorView key_mask, ConstTensorView o,
                          ConstTensorView lse, ConstTensorView grad_o, TensorView grad_q,
                          TensorView grad_k, TensorView grad_v) {
  if (q.dtype() == DType::kF64) {
    BackwardImpl<double>(args, q, k, v, key_mask, o, lse, grad_o, grad_q, grad_k, grad_v);
  } else {
    CHECK(q.dtype() == DType::kF32) << "attention (cpu): dtype " << DTypeName(q.dtype());
    BackwardImpl<float>(args, q, k, v, key_mask, o, lse, grad_o, grad_q, grad_k, grad_v);
  }
}

}  // namespace loom::ops::internal
