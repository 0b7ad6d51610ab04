// Loom's own reduction of R ranks' copies of a buffer, in rank order: the arithmetic behind
// MpiCommunicator's floating-point AllReduce/ReduceScatter and GradientBucketer (see
// mpi_communicator.h for why Loom adds instead of MPI). Internal to csrc/comm.
#ifndef LOOM_COMM_RANK_ORDERED_REDUCE_H_
#define LOOM_COMM_RANK_ORDERED_REDUCE_H_

#include <algorithm>
#include <cstdint>

#include "csrc/comm/communicator.h"
#include "csrc/core/dtype.h"

namespace loom::comm {

// out[i] = op over p = 0, 1, ..., nranks - 1 (left to right) of in[p * stride + i], for i < n,
// accumulated in f32 for bf16/f16/f32, f64 for f64, exactly for i32/i64, and rounded to dtype
// once. kMax propagates NaN. `in` holds nranks rows of `stride` elements; out must not overlap
// in. dtype: f32, f64, bf16, f16, i32, i64 (CHECK otherwise).
void ReduceRankOrdered(DType dtype, ReduceOp op, const void* in, int64_t stride, int nranks,
                       int64_t n, void* out);

// x[i] = x[i] / divisor, computed in the accumulation type and rounded once (floating dtypes
// only; CHECK otherwise).
void DivideInPlace(DType dtype, void* x, int64_t n, int divisor);

// Rank p's block when n elements are cut into r contiguous blocks whose sizes differ by at most
// one (the first n % r blocks get the extra element).
inline int64_t BlockBegin(int64_t n, int r, int p) {
  return n / r * p + std::min<int64_t>(p, n % r);
}
inline int64_t BlockLength(int64_t n, int r, int p) { return n / r + (p < n % r ? 1 : 0); }

}  // namespace loom::comm

#endif  // LOOM_COMM_RANK_ORDERED_REDUCE_H_
