// The CUDA entry points of embedding_kernels.h and sparse_optimizer.h in a build without the
// CUDA backend: reaching one is a fatal error naming the kernel.
#include "csrc/embedding/embedding_kernels.h"

#include <glog/logging.h>

#include "csrc/embedding/sparse_optimizer.h"

namespace loom::embedding::internal {
namespace {
[[noreturn]] void NoCuda(const char* name) {
  LOG(FATAL) << name << ": CUDA device requested but this Loom build has no CUDA backend "
             << "(configured with LOOM_WITH_CUDA=OFF)";
  __builtin_unreachable();
}
}  // namespace

int64_t BucketizeCuda(const BucketizeArgs&, BucketizeError*, Stream) { NoCuda("Bucketize"); }
int64_t SortUniqueCuda(const SortUniqueArgs&, Stream) { NoCuda("SortUnique"); }
size_t SortUniqueCudaTempBytesImpl(int64_t) { return 0; }
size_t BucketizeCudaTempBytesImpl(int64_t) { return 0; }
void GatherRowsCuda(const uint64_t*, int64_t, int, const ShardView*, const int64_t*, float*,
                    Stream) {
  NoCuda("GatherRows");
}
void PoolForwardCuda(const PoolArgs&, Stream) { NoCuda("PoolForward"); }
void PackContributionsCuda(const PackArgs&, Stream) { NoCuda("PackContributions"); }
void ReduceRowsCuda(const ReduceArgs&, Stream) { NoCuda("ReduceRows"); }
void UpdateRowsCuda(const UpdateArgs&, Stream) { NoCuda("UpdateRows"); }
void StepUntouchedRowsCuda(const UntouchedArgs&, Stream) { NoCuda("StepUntouchedRows"); }

}  // namespace loom::embedding::internal
