// The launch plan of the CUDA attention kernels: which kernel, which tiles, how many blocks and
// how much dynamic shared memory, for a head dim, dtype and kernel family. Written once, against
// an abstract launcher, so that attention_cuda.cu (real launches) and the CPU emulation test
// (tests/model/ops/attention_emulation_test.cc) run exactly the same plan.
//
//   launch(kernel, blocks, smem_bytes, params)   kernel: void (*)(Params)
//
// Tile sizes per head dim (registers < 255 with no spills, shared memory <= ~110 KB so that 2
// blocks fit an SM on sm_80 and sm_90; chosen by resource counts, not yet tuned on hardware):
//   SIMT (f32; bf16 fallback): forward, grad_q: 64 queries x 64 keys (x 32 keys for Dh = 128);
//                              grad_k/v: 64 keys x 64 queries (32 x 32 for Dh = 128).
//   MMA (bf16):                forward: 64 x 64; grad_q: 64 x 64 (64 x 32 for Dh = 128);
//                              grad_k/v: 64 keys x 64 queries (64 x 32 for Dh = 128).
#ifndef LOOM_MODEL_OPS_ATTENTION_KERNELS_CUH_
#define LOOM_MODEL_OPS_ATTENTION_KERNELS_CUH_

#include <cstdint>
#include <type_traits>

#include <glog/logging.h>

#include "csrc/model/ops/attention_cuda_common.cuh"
#include "csrc/model/ops/attention_mma.cuh"
#include "csrc/model/ops/attention_simt.cuh"

namespace loom::ops::internal::attn {

using KernelFn = void (*)(Params);

template <int kDh>
struct TileConfig {
  static constexpr int kSimtFwdBM = 64, kSimtFwdBN = kDh == 128 ? 32 : 64;
  static constexpr int kSimtDqBM = 64, kSimtDqBN = kDh == 128 ? 32 : 64;
  static constexpr int kSimtDkvBN = kDh == 128 ? 32 : 64, kSimtDkvBM = kDh == 128 ? 32 : 64;
  static constexpr int kMmaFwdBN = 64;
  static constexpr int kMmaDqBN = kDh == 128 ? 32 : 64;
  static constexpr int kMmaDkvBM = kDh == 128 ? 32 : 64;
};

inline int NumTiles(int n, int tile) { return (n + tile - 1) / tile; }
inline int64_t GridSize(const Params& p) {
  return static_cast<int64_t>(p.batch) * p.heads * p.num_tiles;
}

// Calls fn(std::integral_constant<int, kDh>) for the runtime head dim.
template <typename Fn>
void SwitchHeadDim(int dh, Fn&& fn) {
  switch (dh) {
    case 16:
      fn(std::integral_constant<int, 16>{});
      break;
    case 32:
      fn(std::integral_constant<int, 32>{});
      break;
    case 64:
      fn(std::integral_constant<int, 64>{});
      break;
    case 128:
      fn(std::integral_constant<int, 128>{});
      break;
    default:
      LOG(FATAL) << "attention (cuda): head dim " << dh << " is not 16, 32, 64 or 128";
  }
}

enum class Family { kSimtF32, kSimtBf16, kMmaBf16 };

// Forward: o, lse. Nothing to launch when B, H or Tq is 0 (Tk = 0 is handled in the kernels).
template <typename Launch>
void PlanForward(const Launch& launch, Params p, Family family, int dh) {
  if (p.batch == 0 || p.heads == 0 || p.tq == 0) return;
  SwitchHeadDim(dh, [&](auto dh_c) {
    constexpr int kDh = decltype(dh_c)::value;
    using Cfg = TileConfig<kDh>;
    if (family == Family::kMmaBf16) {
      using K = MmaForward<kDh, Cfg::kMmaFwdBN>;
      p.num_tiles = NumTiles(p.tq, K::kBM);
      launch(static_cast<KernelFn>(MmaForwardKernel<kDh, Cfg::kMmaFwdBN>), GridSize(p),
             K::kSmemBytes, p);
      return;
    }
    auto simt = [&](auto elem) {
      using Elem = decltype(elem);
      using K = SimtForward<Elem, kDh, Cfg::kSimtFwdBM, Cfg::kSimtFwdBN>;
      p.num_tiles = NumTiles(p.tq, Cfg::kSimtFwdBM);
      launch(static_cast<KernelFn>(SimtForwardKernel<Elem, kDh, Cfg::kSimtFwdBM, Cfg::kSimtFwdBN>),
             GridSize(p), K::kSmemBytes, p);
    };
    if (family == Family::kSimtF32) {
      simt(float{});
    } else {
      simt(__nv_bfloat16{});
    }
  });
}

// Backward: pass 1 writes grad_k, grad_v (one block per key tile; with Tq = 0 it writes zeros),
// pass 2 writes grad_q (one block per query tile; with Tk = 0 it writes zeros).
template <typename Launch>
void PlanBackward(const Launch& launch, Params p, Family family, int dh) {
  if (p.batch == 0 || p.heads == 0) return;
  SwitchHeadDim(dh, [&](auto dh_c) {
    constexpr int kDh = decltype(dh_c)::value;
    using Cfg = TileConfig<kDh>;
    if (family == Family::kMmaBf16) {
      if (p.tk > 0) {
        using K = MmaBackwardDkDv<kDh, Cfg::kMmaDkvBM>;
        p.num_tiles = NumTiles(p.tk, K::kBN);
        launch(static_cast<KernelFn>(MmaBackwardDkDvKernel<kDh, Cfg::kMmaDkvBM>), GridSize(p),
               K::kSmemBytes, p);
      }
      if (p.tq > 0) {
        using K = MmaBackwardDq<kDh, Cfg::kMmaDqBN>;
        p.num_tiles = NumTiles(p.tq, K::kBM);
        launch(static_cast<KernelFn>(MmaBackwardDqKernel<kDh, Cfg::kMmaDqBN>), GridSize(p),
               K::kSmemBytes, p);
      }
      return;
    }
    auto simt = [&](auto elem) {
      using Elem = decltype(elem);
      if (p.tk > 0) {
        using K = SimtBackwardDkDv<Elem, kDh, Cfg::kSimtDkvBN, Cfg::kSimtDkvBM>;
        p.num_tiles = NumTiles(p.tk, Cfg::kSimtDkvBN);
        launch(static_cast<KernelFn>(
                   SimtBackwardDkDvKernel<Elem, kDh, Cfg::kSimtDkvBN, Cfg::kSimtDkvBM>),
               GridSize(p), K::kSmemBytes, p);
      }
      if (p.tq > 0) {
        using K = SimtBackwardDq<Elem, kDh, Cfg::kSimtDqBM, Cfg::kSimtDqBN>;
        p.num_tiles = NumTiles(p.tq, Cfg::kSimtDqBM);
        launch(
            static_cast<KernelFn>(SimtBackwardDqKernel<Elem, kDh, Cfg::kSimtDqBM, Cfg::kSimtDqBN>),
            GridSize(p), K::kSmemBytes, p);
      }
    };
    if (family == Family::kSimtF32) {
      simt(float{});
    } else {
      simt(__nv_bfloat16{});
    }
  });
}

}  // namespace loom::ops::internal::attn

#endif  // LOOM_MODEL_OPS_ATTENTION_KERNELS_CUH_
