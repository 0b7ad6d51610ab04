#include "csrc/model/layers/row_gather.h"

#include <cstring>

#include <glog/logging.h>

#include "csrc/core/dispatch.h"

namespace loom::layers {
namespace {

internal::RowMap Plan(const char* op, ConstTensorView unpacked, ConstTensorView packed,
                      ConstTensorView rows, int64_t col_begin) {
  CHECK(unpacked.dtype() == packed.dtype()) << op << ": dtypes differ";
  CHECK(rows.dtype() == DType::kI32 && rows.rank() == 1) << op << ": rows must be (n) i32";
  CHECK(unpacked.rank() >= 1 && packed.rank() >= 1) << op;
  internal::RowMap m;
  m.w = unpacked.dim(-1);
  m.packed_cols = packed.dim(-1);
  m.n = rows.dim(0);
  m.col_begin = col_begin;
  m.esize = DTypeSize(packed.dtype());
  CHECK_EQ(packed.numel(), m.n * m.packed_cols) << op << ": packed side must be (n, W)";
  CHECK(col_begin >= 0 && col_begin + m.w <= m.packed_cols) << op << ": columns out of range";
  CHECK(unpacked.device() == packed.device() && rows.device() == packed.device())
      << op << ": tensors on different devices";
  return m;
}

}  // namespace

void GatherRows(const ExecContext& ctx, ConstTensorView src, ConstTensorView rows,
                int64_t col_begin, TensorView dst) {
  const internal::RowMap m = Plan("GatherRows", src, dst, rows, col_begin);
  if (m.n == 0 || m.w == 0) return;
  LOOM_DISPATCH(ctx, GatherRows, m, src.raw(), rows.data<int32_t>(), dst.raw());
}

void ScatterRows(const ExecContext& ctx, ConstTensorView src, int64_t col_begin,
                 ConstTensorView rows, TensorView dst) {
  const internal::RowMap m = Plan("ScatterRows", dst, src, rows, col_begin);
  if (m.n == 0 || m.w == 0) return;
  LOOM_DISPATCH(ctx, ScatterRows, m, src.raw(), rows.data<int32_t>(), dst.raw());
}

namespace internal {

void GatherRowsCpu(const RowMap& m, const void* src, const int32_t* rows, void* dst) {
  const size_t bytes = static_cast<size_t>(m.w * m.esize);
  const char* s = static_cast<const char*>(src);
  char* d = static_cast<char*>(dst);
#pragma omp parallel for schedule(static) if (m.n * m.w > (1 << 16))
  for (int64_t i = 0; i < m.n; ++i) {
    std::memcpy(d + (i * m.packed_cols + m.col_begin) * m.esize, s + rows[i] * bytes, bytes);
  }
}

void ScatterRowsCpu(const RowMap& m, const void* src, const int32_t* rows, void* dst) {
  const size_t bytes = static_cast<size_t>(m.w * m.esize);
  const char* s = static_cast<const char*>(src);
  char* d = static_cast<char*>(dst);
#pragma omp parallel for schedule(static) if (m.n * m.w > (1 << 16))
  for (int64_t i = 0; i < m.n; ++i) {
    std::memcpy(d + rows[i] * bytes, s + (i * m.packed_cols + m.col_begin) * m.esize, bytes);
  }
}

}  // namespace internal
}  // namespace loom::layers
