// Helpers shared by the op files of csrc/model/ops (not a public API of its own).
//
//   * Validation: each helper returns InvalidArgument naming the op, the argument and its
//     spec ("LayerNorm: gamma f32(32) must have 64 elements (the last dim of x f32(8, 64))").
//   * LOOM_OPS_CHECK_OK: the step-function form of a validation (fatal on error).
//   * CheckOnDevice: every non-empty view given to a step function lives on ctx.device.
//   * LOOM_OPS_CPU_SWITCH: runs a templated CPU body with T = float or double.
//   * Scalar<T>: the type of per-row statistics and affine parameters for element type T
//     (double for f64, float for f32 and bf16); see docs/numerics.md.
#ifndef LOOM_MODEL_OPS_OP_UTIL_H_
#define LOOM_MODEL_OPS_OP_UTIL_H_

#include <cstdint>
#include <initializer_list>
#include <string>

#include <glog/logging.h>

#include "csrc/core/device.h"
#include "csrc/core/dtype.h"
#include "csrc/core/status.h"
#include "csrc/core/tensor.h"

namespace loom::ops {

// The dtype of statistics (mean, rstd) and affine parameters (gamma, beta) that go with
// activations of dtype `x`: f64 for f64, f32 for f32 and bf16.
DType ScalarDType(DType x);

// Rows and columns of a tensor viewed as a matrix: the last dim is the columns and every
// leading dim is folded into the rows. A rank-1 tensor is one row.
int64_t MatrixRows(const Shape& s);
int64_t MatrixCols(const Shape& s);

namespace internal {

// "x f32(2, 3)"
std::string Describe(const char* name, const TensorSpec& spec);

// f32 or f64, or bf16 too when allow_bf16 (bf16 runs on CUDA only; the CPU backend rejects it).
Status ExpectFloat(const char* op, const char* name, const TensorSpec& spec, bool allow_bf16);
Status ExpectDType(const char* op, const char* name, const TensorSpec& spec, DType dtype);
Status ExpectRankAtLeast(const char* op, const char* name, const TensorSpec& spec, int rank);
Status ExpectRank(const char* op, const char* name, const TensorSpec& spec, int rank);
Status ExpectSameSpec(const char* op, const char* name_a, const TensorSpec& a, const char* name_b,
                      const TensorSpec& b);
Status ExpectSameShape(const char* op, const char* name_a, const TensorSpec& a, const char* name_b,
                       const TensorSpec& b);
Status ExpectShape(const char* op, const char* name, const TensorSpec& spec, const Shape& expected);

// CHECKs that every non-empty view is on `device` (names are for the message).
struct NamedView {
  const char* name;
  ConstTensorView view;
};
void CheckOnDevice(const char* op, const Device& device, std::initializer_list<NamedView> views);

// The CPU backends implement f32 and f64; CHECK-fails with a clear message otherwise.
void CheckCpuDType(const char* op, DType dtype);

}  // namespace internal
}  // namespace loom::ops

// Fatal unless `expr` (a Status) is OK. For the step functions of ops, whose arguments were
// validated when the caller planned them: an error here is a bug in the caller.
#define LOOM_OPS_CHECK_OK(expr)                                 \
  do {                                                          \
    ::loom::Status loom_ops_status_ = (expr);                   \
    CHECK(loom_ops_status_.ok()) << loom_ops_status_.message(); \
  } while (0)

// Runs the statements with `T` bound to float (f32) or double (f64); anything else is fatal.
#define LOOM_OPS_CPU_SWITCH(op, dtype, T, ...)           \
  do {                                                   \
    switch (dtype) {                                     \
      case ::loom::DType::kF32: {                        \
        using T = float;                                 \
        __VA_ARGS__;                                     \
        break;                                           \
      }                                                  \
      case ::loom::DType::kF64: {                        \
        using T = double;                                \
        __VA_ARGS__;                                     \
        break;                                           \
      }                                                  \
      default:                                           \
        ::loom::ops::internal::CheckCpuDType(op, dtype); \
    }                                                    \
  } while (0)

#endif  // LOOM_MODEL_OPS_OP_UTIL_H_
