// Rotary position embedding (RoFormer) on interleaved pairs (2i, 2i+1) of each head:
//   θ(p, i) = p · base^(−2i / hd)            p = position_offset + t,  i in [0, hd/2)
//   y[2i]   = x[2i] · cos θ − x[2i+1] · sin θ
//   y[2i+1] = x[2i] · sin θ + x[2i+1] · cos θ
// Backward is the rotation by −θ (the transpose; overwritten, =):
//   grad_x[2i]   =  grad_y[2i] · cos θ + grad_y[2i+1] · sin θ
//   grad_x[2i+1] = −grad_y[2i] · sin θ + grad_y[2i+1] · cos θ
// Layouts (the token axis T is always dim 1):
//   rank 4: (B, T, H, hd)  — q/k straight out of the projection, heads interleaved
//   rank 3: (B·H, T, hd)   — heads already split out
// θ, cos θ and sin θ are computed in double (std::pow / std::cos / std::sin on the CPU, the
// CUDA double-precision functions on the GPU) and rounded once to the element type's
// accumulator; the rotation itself runs in that type. (float32 angles would lose ~1e-4 at
// p ~ 10³; docs/model.md §4.7 asks for double tables.)
// y may alias x; grad_x may alias grad_y. hd must be even and at most kRopeMaxHeadDim.
// Dtypes: CPU f32, f64; CUDA f32, f64, bf16.
#ifndef LOOM_MODEL_OPS_ROPE_H_
#define LOOM_MODEL_OPS_ROPE_H_

#include "csrc/core/device.h"
#include "csrc/core/status.h"
#include "csrc/core/tensor.h"

namespace loom::ops {

constexpr int64_t kRopeMaxHeadDim = 1024;

struct RopeArgs {
  double base = 10000.0;
  int64_t position_offset = 0;  // position of token t is position_offset + t
};

Status ValidateRope(const RopeArgs& args, const TensorSpec& x);

void RopeForward(const ExecContext& ctx, const RopeArgs& args, ConstTensorView x, TensorView y);
void RopeBackward(const ExecContext& ctx, const RopeArgs& args, ConstTensorView grad_y,
                  TensorView grad_x);

namespace internal {
// x viewed as (outer, T, inner, hd); inverse = true rotates by −θ.
struct RopeGeometry {
  int64_t outer = 0, tokens = 0, inner = 0, head_dim = 0;
};
void RopeCpu(const RopeArgs& args, const RopeGeometry& g, bool inverse, ConstTensorView x,
             TensorView y);
void RopeCuda(const RopeArgs& args, const RopeGeometry& g, bool inverse, ConstTensorView x,
              TensorView y, Stream stream);
}  // namespace internal

}  // namespace loom::ops

#endif  // LOOM_MODEL_OPS_ROPE_H_
