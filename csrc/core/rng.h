// Filling tensors from the Philox streams of philox.h, on any device, with identical results.
//   out[i] = lo + (hi - lo) * PhiloxUniform(seed, stream, i)
//   out[i] = mean + std * PhiloxNormal(seed, stream, i)
// out is f32 or f64 (f64 keeps the full double of the normal draw; f32 rounds it once).
#ifndef LOOM_CORE_RNG_H_
#define LOOM_CORE_RNG_H_

#include <cstdint>

#include "csrc/core/device.h"
#include "csrc/core/tensor.h"

namespace loom {

// Purposes for MakeStream (philox.h): one per kind of random use, so two uses never share a
// stream by accident. Listed in docs/numerics.md.
enum RngPurpose : uint32_t {
  kRngInitDense = 1,      // dense parameter init: a = parameter index
  kRngInitEmbedding = 2,  // embedding table init: a = table index, b = row block
  kRngDropout = 3,        // dropout: a = dropout site, b = step (rank folded into the seed)
  kRngData = 4,           // synthetic data, shuffling
  kRngTest = 15,          // tests
};

void FillUniform(const ExecContext& ctx, TensorView out, uint64_t seed, uint64_t stream, double lo,
                 double hi);
void FillNormal(const ExecContext& ctx, TensorView out, uint64_t seed, uint64_t stream, double mean,
                double std);

namespace internal {
void FillUniformCpu(TensorView out, uint64_t seed, uint64_t stream, double lo, double hi);
void FillNormalCpu(TensorView out, uint64_t seed, uint64_t stream, double mean, double std);
void FillUniformCuda(TensorView out, uint64_t seed, uint64_t stream, double lo, double hi,
                     Stream cuda_stream);
void FillNormalCuda(TensorView out, uint64_t seed, uint64_t stream, double mean, double std,
                    Stream cuda_stream);
}  // namespace internal

}  // namespace loom

#endif  // LOOM_CORE_RNG_H_
