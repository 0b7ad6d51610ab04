// Validation-free dispatch of the pipeline kernels (the collection validates at Create and in
// its stages). The CUDA symbols come from embedding_kernels_cuda.cu, or from
// embedding_kernels_stub.cc in a build without CUDA, where they are fatal.
#include "csrc/embedding/embedding_kernels.h"

#include <glog/logging.h>

#include "csrc/core/dispatch.h"

namespace loom::embedding {

int64_t Bucketize(const ExecContext& ctx, const BucketizeArgs& args, BucketizeError* error) {
  *error = BucketizeError();
  if (ctx.device.is_cpu()) return internal::BucketizeCpu(args, error);
  return internal::BucketizeCuda(args, error, ctx.stream);
}

int64_t SortUnique(const ExecContext& ctx, const SortUniqueArgs& args) {
  CHECK_GE(args.bits, 1);
  CHECK_LE(args.bits, 64);
  if (ctx.device.is_cpu()) return internal::SortUniqueCpu(args);
  return internal::SortUniqueCuda(args, ctx.stream);
}

size_t BucketizeCudaTempBytes(int64_t num_bags) {
  return internal::BucketizeCudaTempBytesImpl(num_bags);
}

size_t SortUniqueCudaTempBytes(int64_t n) { return internal::SortUniqueCudaTempBytesImpl(n); }

void GatherRows(const ExecContext& ctx, const uint64_t* keys, int64_t n, int row_bits,
                const ShardView* shards, const int64_t* out_off, float* out) {
  if (n == 0) return;
  if (ctx.device.is_cpu()) {
    internal::GatherRowsCpu(keys, n, row_bits, shards, out_off, out);
  } else {
    internal::GatherRowsCuda(keys, n, row_bits, shards, out_off, out, ctx.stream);
  }
}

void PoolForward(const ExecContext& ctx, const PoolArgs& args) {
  LOOM_DISPATCH(ctx, PoolForward, args);
}

void PackContributions(const ExecContext& ctx, const PackArgs& args) {
  if (args.num_unique == 0) return;
  LOOM_DISPATCH(ctx, PackContributions, args);
}

}  // namespace loom::embedding
