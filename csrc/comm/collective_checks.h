// Argument checks shared by every Communicator backend (MPI, NCCL), run at the start of each
// collective. A bad argument inside a step is a programming error, so they are CHECKs (fatal:
// the whole job ends); each message names the collective, the argument and the rank.
#ifndef LOOM_COMM_COLLECTIVE_CHECKS_H_
#define LOOM_COMM_COLLECTIVE_CHECKS_H_

#include <cstdint>
#include <vector>

#include "csrc/core/dtype.h"

namespace loom::comm {

// AllReduce, ReduceScatter: a reducible dtype (not kU8) and count >= 0.
void CheckReduceArgs(const char* collective, DType dtype, int64_t count);

// count >= 0.
void CheckCount(const char* collective, int64_t count);

// Broadcast: count >= 0 and root in [0, size).
void CheckBroadcastArgs(int64_t count, int root, int size);

// AllToAllV: four vectors of `size` non-negative entries, and the rank's count to itself equal
// on both sides.
void CheckAllToAllVArgs(int rank, int size, const std::vector<int64_t>& send_counts,
                        const std::vector<int64_t>& send_displs,
                        const std::vector<int64_t>& recv_counts,
                        const std::vector<int64_t>& recv_displs);

// AllGatherV: two vectors of `size` non-negative entries and send_count == recv_counts[rank].
void CheckAllGatherVArgs(int rank, int size, int64_t send_count,
                         const std::vector<int64_t>& recv_counts,
                         const std::vector<int64_t>& recv_displs);

}  // namespace loom::comm

#endif  // LOOM_COMM_COLLECTIVE_CHECKS_H_
