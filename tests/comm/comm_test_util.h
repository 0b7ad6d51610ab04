// Self-checking collective data (nccl-tests style): every rank computes every rank's input and
// the expected output locally from (seed, rank, index), so no rank needs another's data to
// verify a result.
#ifndef LOOM_TESTS_COMM_COMM_TEST_UTIL_H_
#define LOOM_TESTS_COMM_COMM_TEST_UTIL_H_

#include <cstdint>
#include <string>
#include <vector>

#include "csrc/comm/communicator.h"
#include "csrc/core/dtype.h"

namespace loom::comm::testing {

// A 64-bit hash of (seed, a, b, c) (splitmix64 steps).
uint64_t Mix(uint64_t seed, uint64_t a, uint64_t b = 0, uint64_t c = 0);

// Element `index` of `rank`'s reduction input: finite, with magnitudes spread over 2^-3..2^4
// and both signs for floating types, so that sums round; integers well inside their range so
// sums of a few ranks do not overflow. dtype: f32, f64, bf16, f16, i32, i64.
// out[j] = InputValue(seed, rank, first + j) for j < n.
void FillInput(DType dtype, uint64_t seed, int rank, int64_t first, int64_t n, void* out);

// The documented result of MpiCommunicator's reductions: element first + j reduced over ranks
// 0..nranks-1 in rank order, left to right, in the accumulation type (f32 for f32/bf16/f16,
// f64 for f64, exact for integers), rounded to dtype once. kMax propagates NaN.
void FillExpected(DType dtype, ReduceOp op, uint64_t seed, int nranks, int64_t first, int64_t n,
                  void* out);

// sum over ranks of |input| at element first + j, as double (for tolerance bounds).
std::vector<double> AbsSums(DType dtype, uint64_t seed, int nranks, int64_t first, int64_t n);

// Random bit patterns (any dtype; NaN patterns included) for data-movement tests:
// element j = bits of Mix(seed, a, b, first + j).
void FillBits(DType dtype, uint64_t seed, uint64_t a, uint64_t b, int64_t first, int64_t n,
              void* out);

// Element i of a typed buffer as text ("1.5 (0x3fc0)").
std::string ElementString(DType dtype, const void* buffer, int64_t i);
double ElementAsDouble(DType dtype, const void* buffer, int64_t i);

// Bitwise comparison; each of the first 5 mismatches is reported through ADD_FAILURE with
// `what`. Returns the number of mismatching elements.
int64_t CountBitMismatches(DType dtype, const void* got, const void* want, int64_t n,
                           const std::string& what);

// |got - want| <= tol[j] for floating types (bitwise for integers); reports like above.
int64_t CountFarElements(DType dtype, const void* got, const void* want, int64_t n,
                         const std::vector<double>& tol, const std::string& what);

// Unit roundoff of a floating dtype (2^-24 f32, 2^-53 f64, 2^-8 bf16, 2^-11 f16); 0 for ints.
double UnitRoundoff(DType dtype);

// The dtypes every reduction supports, and every dtype (data movement).
const std::vector<DType>& ReduceDTypes();
const std::vector<DType>& AllDTypes();

}  // namespace loom::comm::testing

#endif  // LOOM_TESTS_COMM_COMM_TEST_UTIL_H_
