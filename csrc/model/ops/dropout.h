// Inverted dropout driven by Philox (csrc/core/philox.h), identical on every backend:
//   keep[i] = !(PhiloxUniform(seed, stream, i) < p)       i = flat element index
//   y[i]    = keep[i] ? x[i] · scale : 0                  scale = 1 / (1 − p)
// scale is computed in double and rounded once to the accumulator type (float for f32/bf16),
// and y[i] is one correctly rounded product, so CPU and CUDA produce the same bits for f32
// (and the same mask for every dtype). p = 0 is the identity (no random numbers drawn).
// Backward regenerates the mask from (seed, stream) instead of storing it:
//   grad_x[i] = keep[i] ? grad_y[i] · scale : 0         overwritten (=)
// DropoutMask writes keep[] (u8 0/1) for inspection and tests.
//
// Streams: callers build `stream` with MakeStream(kRngDropout, site, step) and fold the rank
// into `seed`, so every (site, step, rank) draws independent numbers (docs/numerics.md).
// y may alias x; grad_x may alias grad_y. Dtypes: CPU f32, f64; CUDA f32, f64, bf16.
#ifndef LOOM_MODEL_OPS_DROPOUT_H_
#define LOOM_MODEL_OPS_DROPOUT_H_

#include <cstdint>

#include "csrc/core/device.h"
#include "csrc/core/status.h"
#include "csrc/core/tensor.h"

namespace loom::ops {

struct DropoutArgs {
  float p = 0.0f;  // drop probability, in [0, 1)
  uint64_t seed = 0;
  uint64_t stream = 0;  // MakeStream(kRngDropout, site, step)
};

Status ValidateDropout(const DropoutArgs& args, const TensorSpec& x);

void DropoutForward(const ExecContext& ctx, const DropoutArgs& args, ConstTensorView x,
                    TensorView y);
void DropoutBackward(const ExecContext& ctx, const DropoutArgs& args, ConstTensorView grad_y,
                     TensorView grad_x);
void DropoutMask(const ExecContext& ctx, const DropoutArgs& args, TensorView keep);

namespace internal {
// y = keep ? x · scale : 0 (forward and backward are the same map). keep: u8 or empty.
void DropoutCpu(const DropoutArgs& args, ConstTensorView x, TensorView y);
void DropoutCuda(const DropoutArgs& args, ConstTensorView x, TensorView y, Stream stream);
void DropoutMaskCpu(const DropoutArgs& args, TensorView keep);
void DropoutMaskCuda(const DropoutArgs& args, TensorView keep, Stream stream);
}  // namespace internal

}  // namespace loom::ops

#endif  // LOOM_MODEL_OPS_DROPOUT_H_
