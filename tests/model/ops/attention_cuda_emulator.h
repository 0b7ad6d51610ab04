// A small CPU emulator for the CUDA attention kernels (csrc/model/ops/attention_*.cuh), so the
// kernels' own code runs, and is checked, on machines without a GPU.
//
// Include this header BEFORE the kernel headers: it defines LOOM_ATTENTION_EMULATION and host
// versions of the CUDA names the kernels use. A block runs as kBlockThreads cooperative fibers
// (ucontext) on one OS thread: each fiber runs until it reaches a barrier (__syncthreads,
// __syncthreads_or, or the warp-wide exchange inside a shuffle or an mma), then the next fiber
// runs. Fibers are visited in increasing or decreasing thread order (`reverse`), so a read that
// is not ordered after its write by a barrier sees different data in the two orders: running
// both and comparing finds such races. A barrier that not all threads reach (divergence) is a
// deadlock here and aborts with a message. Dynamic shared memory is a fresh heap buffer of exactly
// the launch's size, filled with 0xff (NaN) bytes, so reads of unwritten shared memory poison
// the results and out-of-range accesses are visible to AddressSanitizer.
//
// What it cannot check: real concurrency between warps (e.g. ordering through memory without a
// barrier beyond the two visiting orders), timing, hardware limits other than the shared-memory
// size (checked against 163 KB, the sm_80 limit), and the mma fragment layouts themselves (the
// emulated mma below implements the PTX ISA layout that attention_mma.cuh documents; if that
// reading of the ISA were wrong, both would be wrong together).
#ifndef LOOM_TESTS_MODEL_OPS_ATTENTION_CUDA_EMULATOR_H_
#define LOOM_TESTS_MODEL_OPS_ATTENTION_CUDA_EMULATOR_H_

#define LOOM_ATTENTION_EMULATION 1

#include <ucontext.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <vector>

#include <glog/logging.h>

#include "csrc/core/dtype.h"

// ---- CUDA vocabulary on the host -------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)

struct alignas(16) float4 {
  float x, y, z, w;
};
struct alignas(8) float2 {
  float x, y;
};
struct alignas(16) uint4 {
  unsigned x, y, z, w;
};
struct alignas(8) uint2 {
  unsigned x, y;
};
inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }
inline float2 make_float2(float x, float y) { return float2{x, y}; }
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) {
  return uint4{x, y, z, w};
}
inline uint2 make_uint2(unsigned x, unsigned y) { return uint2{x, y}; }

struct __nv_bfloat16 {
  uint16_t x;
};
inline __nv_bfloat16 __float2bfloat16_rn(float f) {
  return __nv_bfloat16{loom::FloatToBf16(f).bits};
}
inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 h) { return h.x; }
inline float __bfloat162float(__nv_bfloat16 h) { return loom::Bf16ToFloat(loom::bf16{h.x}); }
inline float __uint_as_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}
[[noreturn]] inline void __trap() { std::abort(); }

namespace emu {

constexpr int kBlockThreads = 128;
constexpr int kWarps = kBlockThreads / 32;
constexpr size_t kMaxSmemBytes = 163 * 1024;  // sm_80's opt-in limit (sm_90: 227 KB)
#if defined(__SANITIZE_ADDRESS__)
constexpr size_t kStackBytes = 1 << 20;
#else
constexpr size_t kStackBytes = 256 * 1024;
#endif

struct Dim3 {
  unsigned x, y, z;
};

enum class Wait { kNone, kBlock, kWarp };

struct Fiber {
  ucontext_t ctx;
  std::unique_ptr<char[]> stack;
  bool done = false;
  Wait wait = Wait::kNone;
  uint64_t gen = 0;
};

struct Machine {
  std::vector<Fiber> fibers;
  ucontext_t scheduler;
  int current = -1;
  unsigned block = 0;
  std::function<void()> body;
  std::unique_ptr<uint4[]> smem;
  uint64_t block_gen = 0;
  int block_arrived = 0;
  uint64_t warp_gen[kWarps] = {};
  int warp_arrived[kWarps] = {};
  // Exchange slots of the collective operations.
  float fslot[kBlockThreads];
  int islot[kBlockThreads];
  uint32_t mslot[kBlockThreads][6];
  int64_t barriers = 0;  // statistics
};

inline Machine& M() {
  static Machine machine;
  return machine;
}

inline Dim3 ThreadIdx() { return Dim3{static_cast<unsigned>(M().current), 0, 0}; }
inline Dim3 BlockIdx() { return Dim3{M().block, 0, 0}; }
inline uint4* DynamicSmem() { return M().smem.get(); }

inline void YieldToScheduler() {
  Machine& m = M();
  swapcontext(&m.fibers[static_cast<size_t>(m.current)].ctx, &m.scheduler);
}

inline void BlockBarrier() {
  Machine& m = M();
  Fiber& f = m.fibers[static_cast<size_t>(m.current)];
  ++m.barriers;
  f.gen = m.block_gen;
  if (++m.block_arrived == kBlockThreads) {
    m.block_arrived = 0;
    ++m.block_gen;  // releases every waiting fiber
    f.wait = Wait::kNone;
  } else {
    f.wait = Wait::kBlock;
  }
  YieldToScheduler();
}

inline void WarpBarrier() {
  Machine& m = M();
  Fiber& f = m.fibers[static_cast<size_t>(m.current)];
  const int w = m.current / 32;
  f.gen = m.warp_gen[w];
  if (++m.warp_arrived[w] == 32) {
    m.warp_arrived[w] = 0;
    ++m.warp_gen[w];
    f.wait = Wait::kNone;
  } else {
    f.wait = Wait::kWarp;
  }
  YieldToScheduler();
}

inline float ShuffleXor(unsigned mask, float v, int offset) {
  CHECK_EQ(mask, 0xffffffffu) << "emulator: only full-warp shuffles are supported";
  Machine& m = M();
  const int t = m.current, base = t / 32 * 32;
  m.fslot[t] = v;
  WarpBarrier();
  const float r = m.fslot[base + ((t % 32) ^ offset)];
  WarpBarrier();
  return r;
}

inline int SyncThreadsOr(int predicate) {
  Machine& m = M();
  m.islot[m.current] = predicate != 0;
  BlockBarrier();
  int any = 0;
  for (int t = 0; t < kBlockThreads; ++t) any |= m.islot[t];
  BlockBarrier();
  return any;
}

// mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32, per the PTX ISA fragment layouts
// (g = lane / 4, t = lane % 4): A: reg r of lane (g, t) holds A[g + 8*(r & 1)][2t + 8*(r >> 1)
// + {0, 1}]; B: reg r holds B[2t + 8r + {0, 1}][g]; C: c[e] = C[g + 8*(e >> 1)][2t + (e & 1)].
// Products of bf16 are exact in fp32; they are added to c in k order in fp32.
inline void MmaM16N8K16Bf16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  Machine& m = M();
  const int t = m.current, base = t / 32 * 32, lane = t % 32;
  for (int r = 0; r < 4; ++r) m.mslot[t][r] = a[r];
  m.mslot[t][4] = b0;
  m.mslot[t][5] = b1;
  WarpBarrier();
  auto half = [](uint32_t w, int hi) {
    return __uint_as_float(hi ? (w & 0xffff0000u) : (w << 16));
  };
  auto a_at = [&](int row, int col) {
    const int l = (row % 8) * 4 + (col % 8) / 2;
    const int reg = (row >= 8 ? 1 : 0) + (col >= 8 ? 2 : 0);
    return half(m.mslot[base + l][reg], col % 2);
  };
  auto b_at = [&](int k, int n) {
    const int l = n * 4 + (k % 8) / 2;
    return half(m.mslot[base + l][4 + (k >= 8 ? 1 : 0)], k % 2);
  };
  const int g = lane / 4, tt = lane % 4;
  float out[4];
  for (int e = 0; e < 4; ++e) {
    const int row = g + 8 * (e >> 1), col = 2 * tt + (e & 1);
    float acc = c[e];
    for (int k = 0; k < 16; ++k) acc += a_at(row, k) * b_at(k, col);
    out[e] = acc;
  }
  WarpBarrier();  // every lane has read the slots
  for (int e = 0; e < 4; ++e) c[e] = out[e];
}

inline void FiberMain() {
  Machine& m = M();
  m.body();
  m.fibers[static_cast<size_t>(m.current)].done = true;
  // Returning resumes uc_link, the scheduler.
}

// Runs one block of `body` (the kernel with its parameters bound).
inline void RunBlock(unsigned block, size_t smem_bytes, const std::function<void()>& body,
                     bool reverse) {
  Machine& m = M();
  CHECK_LE(smem_bytes, kMaxSmemBytes)
      << "emulator: block needs " << smem_bytes << " bytes of shared memory";
  m.block = block;
  m.body = body;
  const size_t vecs = (smem_bytes + sizeof(uint4) - 1) / sizeof(uint4);
  m.smem.reset(new uint4[vecs > 0 ? vecs : 1]);
  std::memset(static_cast<void*>(m.smem.get()), 0xff, (vecs > 0 ? vecs : 1) * sizeof(uint4));
  m.block_gen = 0;
  m.block_arrived = 0;
  for (int w = 0; w < kWarps; ++w) m.warp_gen[w] = m.warp_arrived[w] = 0;
  if (m.fibers.size() != kBlockThreads) m.fibers.resize(kBlockThreads);
  for (Fiber& f : m.fibers) {
    if (!f.stack) f.stack.reset(new char[kStackBytes]);
    f.done = false;
    f.wait = Wait::kNone;
    f.gen = 0;
    CHECK_EQ(getcontext(&f.ctx), 0);
    f.ctx.uc_stack.ss_sp = f.stack.get();
    f.ctx.uc_stack.ss_size = kStackBytes;
    f.ctx.uc_link = &m.scheduler;
    makecontext(&f.ctx, FiberMain, 0);
  }
  for (;;) {
    bool all_done = true, progressed = false;
    for (int k = 0; k < kBlockThreads; ++k) {
      const int t = reverse ? kBlockThreads - 1 - k : k;
      Fiber& f = m.fibers[static_cast<size_t>(t)];
      if (f.done) continue;
      all_done = false;
      if (f.wait == Wait::kBlock && f.gen == m.block_gen) continue;
      if (f.wait == Wait::kWarp && f.gen == m.warp_gen[t / 32]) continue;
      f.wait = Wait::kNone;
      m.current = t;
      CHECK_EQ(swapcontext(&m.scheduler, &f.ctx), 0);
      progressed = true;
    }
    if (all_done) break;
    CHECK(progressed) << "emulator: deadlock in block " << block
                      << " (a barrier that not every thread reaches)";
  }
  m.current = -1;
}

}  // namespace emu

#define threadIdx (::emu::ThreadIdx())
#define blockIdx (::emu::BlockIdx())
inline void __syncthreads() { emu::BlockBarrier(); }
inline int __syncthreads_or(int predicate) { return emu::SyncThreadsOr(predicate); }
inline float __shfl_xor_sync(unsigned mask, float v, int offset) {
  return emu::ShuffleXor(mask, v, offset);
}

#endif  // LOOM_TESTS_MODEL_OPS_ATTENTION_CUDA_EMULATOR_H_
