#include "csrc/comm/collective_checks.h"

#include <glog/logging.h>

#include "csrc/core/logging.h"

namespace loom::comm {
namespace {

void CheckPerRank(const std::vector<int64_t>& v, int size, const char* collective,
                  const char* name) {
  CHECK_EQ(static_cast<int>(v.size()), size)
      << collective << " " << name << " must have one entry per rank (" << RankAndHost() << ")";
  for (int64_t x : v) {
    CHECK_GE(x, 0) << collective << " " << name << " has a negative entry (" << RankAndHost()
                   << ")";
  }
}

}  // namespace

void CheckReduceArgs(const char* collective, DType dtype, int64_t count) {
  CHECK(dtype != DType::kU8) << collective << ": dtype " << DTypeName(dtype)
                             << " cannot be reduced (" << RankAndHost() << ")";
  CheckCount(collective, count);
}

void CheckCount(const char* collective, int64_t count) {
  CHECK_GE(count, 0) << collective << ": negative count (" << RankAndHost() << ")";
}

void CheckBroadcastArgs(int64_t count, int root, int size) {
  CheckCount("Broadcast", count);
  CHECK(root >= 0 && root < size) << "Broadcast: root " << root << " outside [0, " << size << ") ("
                                  << RankAndHost() << ")";
}

void CheckAllToAllVArgs(int rank, int size, const std::vector<int64_t>& send_counts,
                        const std::vector<int64_t>& send_displs,
                        const std::vector<int64_t>& recv_counts,
                        const std::vector<int64_t>& recv_displs) {
  CheckPerRank(send_counts, size, "AllToAllV", "send_counts");
  CheckPerRank(send_displs, size, "AllToAllV", "send_displs");
  CheckPerRank(recv_counts, size, "AllToAllV", "recv_counts");
  CheckPerRank(recv_displs, size, "AllToAllV", "recv_displs");
  CHECK_EQ(send_counts[rank], recv_counts[rank])
      << "AllToAllV: rank sends itself a different count than it expects (" << RankAndHost() << ")";
}

void CheckAllGatherVArgs(int rank, int size, int64_t send_count,
                         const std::vector<int64_t>& recv_counts,
                         const std::vector<int64_t>& recv_displs) {
  CheckPerRank(recv_counts, size, "AllGatherV", "recv_counts");
  CheckPerRank(recv_displs, size, "AllGatherV", "recv_displs");
  CHECK_EQ(send_count, recv_counts[rank])
      << "AllGatherV: send_count differs from recv_counts[rank] (" << RankAndHost() << ")";
}

}  // namespace loom::comm
