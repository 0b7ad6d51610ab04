// GradientBucketer: all-reduces the data-parallel (dense) gradients in buckets of about
// bucket_bytes, each launched as soon as backward has produced all of its gradients, so
// communication overlaps the rest of backward.
//
//   auto b = GradientBucketer::Create(&mpi_comm, {{grad_w1, n1}, {grad_b1, m1}, ...},
//                                     DType::kF32, {.bucket_bytes = 25 << 20, .average = true});
//   for each step:
//     backward ... (*b)->MarkReady(i);      // as soon as gradient i is final
//     (*b)->Wait();                         // every gradient now holds the sum (or mean)
//
// In the trainer (csrc/train/trainer.cc) the gradients are chunks of the dense model's flat
// gradient buffer, marked ready from inside the dense backward (DenseModel's gradient-final
// callback) as each chunk's last layer finishes, so the all-reduce overlaps the remaining
// dense backward and then the embedding backward.
//
// Buckets: the buffers are taken in reverse registration order (backward produces the last
// layers' gradients first) and packed greedily into buckets of at most bucket_bytes (a buffer
// larger than that gets a bucket of its own). Buckets are launched strictly in bucket order:
// bucket k starts when all its gradients are marked and bucket k-1 has started. Every rank
// therefore issues the same collectives in the same order whatever order its MarkReady calls
// come in, which MPI requires of non-blocking collectives.
//
// Result (bit-exact, the same on every rank): after Wait(), gradient i holds, element by
// element, the rank-ordered sum of MpiCommunicator::AllReduce (mpi_communicator.h): fp32
// accumulation for bf16/f16, rounded once; then, when `average`, that sum divided by R
// (in the accumulation type, rounded once). The bits do not depend on the bucket size or the
// order of MarkReady calls.
//
// How (CPU, MpiCommunicator): a bucket's gradients are packed into a flat buffer (skipped when
// they already lie back to back in memory in bucket order); phase 1, MPI_Ialltoallv, gives rank
// r every rank's copy of block r of the bucket; rank r adds them in rank order; phase 2,
// MPI_Iallgatherv (in place), shares the reduced blocks; Wait() unpacks and divides. The two
// phases run on two private duplicates of the communicator, each used in bucket order, so
// phase-2 posts can interleave with later phase-1 posts differently on different ranks.
// Progress: Open MPI moves non-blocking collectives forward inside MPI calls, so MarkReady()
// also tests outstanding buckets (and starts phase 2 of those whose phase 1 is done).
//
// Ownership: the gradient buffers belong to the caller and must stay valid (and untouched
// between MarkReady(i) and Wait()) while registered; the bucketer owns its packing and
// receive buffers (allocated at Create, so steps do not allocate). Not thread-safe.
// Gradient convention: Wait() overwrites each gradient with the reduction (=).
//
// Not implemented yet: the CUDA/NCCL path (Create returns Unimplemented for a non-MPI
// communicator).
#ifndef LOOM_COMM_GRADIENT_BUCKETER_H_
#define LOOM_COMM_GRADIENT_BUCKETER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <mpi.h>

#include "csrc/comm/communicator.h"
#include "csrc/comm/mpi_communicator.h"
#include "csrc/core/macros.h"
#include "csrc/core/status.h"

namespace loom::comm {

struct GradientBucketerOptions {
  // Upper bound of one bucket's size in bytes (> 0). Small buckets start communication
  // earlier; big ones pay less per-message latency.
  int64_t bucket_bytes = 25 << 20;
  // Wait() divides the sums by the world size R (data-parallel mean of the gradients).
  bool average = false;
};

struct GradientBuffer {
  void* data = nullptr;  // host memory, `count` elements of the bucketer's dtype
  int64_t count = 0;
};

class GradientBucketer {
 public:
  // Collective over `comm` (every rank registers the same counts in the same order; the
  // pointers are each rank's own). dtype: f32, f64, bf16, f16. Errors: InvalidArgument (bad
  // dtype, option, count or null buffer, named by index), Unimplemented (not an
  // MpiCommunicator), Internal (MPI).
  static StatusOr<std::unique_ptr<GradientBucketer>> Create(
      Communicator* comm, std::vector<GradientBuffer> gradients, DType dtype,
      const GradientBucketerOptions& options = {});
  ~GradientBucketer();
  LOOM_DISALLOW_COPY_AND_ASSIGN(GradientBucketer);

  // Gradient `index` (registration order) is final for this step. Starts every bucket that is
  // now complete and next in order, and moves outstanding buckets forward. Marking an index
  // twice in one step is a CHECK failure.
  void MarkReady(int index);
  // Finishes the step: every gradient must have been marked (CHECK, naming the first that was
  // not); completes all buckets, unpacks, divides when `average`. Afterwards the bucketer is
  // ready for the next step.
  void Wait();

  int num_buckets() const { return static_cast<int>(buckets_.size()); }
  // The bucket that holds gradient `index`.
  int bucket_of(int index) const { return bucket_of_[index]; }
  // Buckets whose phase 1 has been posted in this step (for tests and progress logging).
  int num_started() const { return next_start_; }

 private:
  struct Member {
    int index;       // registration index
    int64_t offset;  // in the bucket's flat buffer, elements
  };
  struct Bucket {
    std::vector<Member> members;  // reverse registration order
    int64_t count = 0;            // elements
    int pending = 0;              // members not yet marked this step
    char* flat = nullptr;         // the bucket's contiguous elements (packed or the gradients')
    bool packed = false;          // flat is bucketer-owned storage (members were not contiguous)
    std::vector<char> storage;    // when packed
    std::vector<int> send_counts, send_displs, recv_counts, recv_displs, gather_counts;
    MPI_Request phase1 = MPI_REQUEST_NULL;
    MPI_Request phase2 = MPI_REQUEST_NULL;
  };

  GradientBucketer() = default;
  void StartReadyBuckets();
  // Starts phase 2 of buckets whose phase 1 finished (in order); blocks when `wait`.
  void AdvancePhase2(bool wait);

  std::vector<GradientBuffer> gradients_;
  DType dtype_ = DType::kF32;
  int64_t esize_ = 4;
  GradientBucketerOptions options_;
  int rank_ = 0;
  int size_ = 1;
  MPI_Comm phase1_comm_ = MPI_COMM_NULL;
  MPI_Comm phase2_comm_ = MPI_COMM_NULL;
  std::vector<Bucket> buckets_;
  std::vector<int> bucket_of_;
  std::vector<char> marked_;
  std::vector<char> copies_;  // phase-1 receive area: R x the largest own block, per bucket
  std::vector<int64_t> copies_offset_;
  int next_start_ = 0;   // next bucket to post phase 1
  int next_phase2_ = 0;  // next bucket to post phase 2
};

}  // namespace loom::comm

#endif  // LOOM_COMM_GRADIENT_BUCKETER_H_
