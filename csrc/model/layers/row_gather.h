// Gathering and scattering whole rows by index: how the model computes the position-wise
// parts of the sequence path on the positions that matter only (packed rows), skipping the
// padding (docs/model.md §6, "C++ implementation").
//
//   GatherRows:  dst[i, col_begin : col_begin + w] = src[rows[i], :]     i < n
//   ScatterRows: dst[rows[i], :] = src[i, col_begin : col_begin + w]     i < n
// Shapes: src/dst viewed as matrices with the last dim as columns (w = columns of the
// unpacked side, W >= col_begin + w = columns of the packed side); rows (n) i32, distinct
// (for ScatterRows), in [0, R). Rows of a scatter's dst that are not listed are left
// unchanged. Plain copies: any dtype. src and dst must not overlap.
//
// A small helper of the layers (the ops library has token-range copies, not indexed rows);
// CPU (OpenMP over rows) and CUDA (one grid-stride kernel) backends.
#ifndef LOOM_MODEL_LAYERS_ROW_GATHER_H_
#define LOOM_MODEL_LAYERS_ROW_GATHER_H_

#include <cstdint>

#include "csrc/core/device.h"
#include "csrc/core/tensor.h"

namespace loom::layers {

void GatherRows(const ExecContext& ctx, ConstTensorView src, ConstTensorView rows,
                int64_t col_begin, TensorView dst);
void ScatterRows(const ExecContext& ctx, ConstTensorView src, int64_t col_begin,
                 ConstTensorView rows, TensorView dst);

namespace internal {
// One row map: packed (n, W) <-> unpacked (R, w) rows of `esize`-byte elements.
struct RowMap {
  int64_t n = 0, w = 0, packed_cols = 0, col_begin = 0, esize = 0;
};
void GatherRowsCpu(const RowMap& m, const void* src, const int32_t* rows, void* dst);
void ScatterRowsCpu(const RowMap& m, const void* src, const int32_t* rows, void* dst);
void GatherRowsCuda(const RowMap& m, const void* src, const int32_t* rows, void* dst,
                    Stream stream);
void ScatterRowsCuda(const RowMap& m, const void* src, const int32_t* rows, void* dst,
                     Stream stream);
}  // namespace internal

}  // namespace loom::layers

#endif  // LOOM_MODEL_LAYERS_ROW_GATHER_H_
