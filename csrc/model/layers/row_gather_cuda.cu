// CUDA row gather/scatter: one grid-stride loop over the n·w elements, moved as raw words of
// the element size (no arithmetic, so any dtype).
#include "csrc/model/layers/row_gather.h"

#include <algorithm>

#include "csrc/core/cuda_check.cuh"

namespace loom::layers::internal {
namespace {

constexpr int kBlock = 256;

template <typename W>
__global__ void RowCopyKernel(RowMap m, const W* src, const int32_t* rows, W* dst, bool gather) {
  const int64_t total = m.n * m.w;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = idx / m.w, e = idx % m.w;
    const int64_t packed = i * m.packed_cols + m.col_begin + e;
    const int64_t unpacked = static_cast<int64_t>(rows[i]) * m.w + e;
    if (gather) {
      dst[packed] = src[unpacked];
    } else {
      dst[unpacked] = src[packed];
    }
  }
}

void Launch(const RowMap& m, const void* src, const int32_t* rows, void* dst, bool gather,
            Stream stream) {
  const int64_t total = m.n * m.w;
  const int grid = static_cast<int>(std::min<int64_t>((total + kBlock - 1) / kBlock, 65535));
  cudaStream_t s = AsCudaStream(stream);
  switch (m.esize) {
    case 8:
      RowCopyKernel<<<grid, kBlock, 0, s>>>(m, static_cast<const uint64_t*>(src), rows,
                                            static_cast<uint64_t*>(dst), gather);
      break;
    case 4:
      RowCopyKernel<<<grid, kBlock, 0, s>>>(m, static_cast<const uint32_t*>(src), rows,
                                            static_cast<uint32_t*>(dst), gather);
      break;
    case 2:
      RowCopyKernel<<<grid, kBlock, 0, s>>>(m, static_cast<const uint16_t*>(src), rows,
                                            static_cast<uint16_t*>(dst), gather);
      break;
    default:
      RowCopyKernel<<<grid, kBlock, 0, s>>>(m, static_cast<const uint8_t*>(src), rows,
                                            static_cast<uint8_t*>(dst), gather);
      break;
  }
  LOOM_CUDA_CHECK(cudaGetLastError());
}

}  // namespace

void GatherRowsCuda(const RowMap& m, const void* src, const int32_t* rows, void* dst,
                    Stream stream) {
  Launch(m, src, rows, dst, /*gather=*/true, stream);
}

void ScatterRowsCuda(const RowMap& m, const void* src, const int32_t* rows, void* dst,
                     Stream stream) {
  Launch(m, src, rows, dst, /*gather=*/false, stream);
}

}  // namespace loom::layers::internal
