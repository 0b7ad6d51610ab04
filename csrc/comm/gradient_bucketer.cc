#include "csrc/comm/gradient_bucketer.h"

#include <algorithm>
#include <climits>
#include <cstring>
#include <utility>

#include <glog/logging.h>

#include "csrc/comm/mpi_check.h"
#include "csrc/comm/rank_ordered_reduce.h"
#include "csrc/core/logging.h"

namespace loom::comm {
namespace {

Status DupWithErrorsReturn(MPI_Comm parent, MPI_Comm* out) {
  int rc = MPI_Comm_dup(parent, out);
  if (rc == MPI_SUCCESS) rc = MPI_Comm_set_errhandler(*out, MPI_ERRORS_RETURN);
  if (rc != MPI_SUCCESS)
    return InternalError("GradientBucketer: MPI_Comm_dup: " + MpiErrorString(rc));
  return Status::Ok();
}

// A fingerprint of the registered counts, to check that every rank registered the same.
uint64_t CountsFingerprint(const std::vector<GradientBuffer>& g) {
  uint64_t h = 1469598103934665603ull ^ g.size();
  for (const GradientBuffer& b : g) h = (h ^ static_cast<uint64_t>(b.count)) * 1099511628211ull;
  return h;
}

}  // namespace

StatusOr<std::unique_ptr<GradientBucketer>> GradientBucketer::Create(
    Communicator* comm, std::vector<GradientBuffer> gradients, DType dtype,
    const GradientBucketerOptions& options) {
  auto* mpi = dynamic_cast<MpiCommunicator*>(comm);
  if (mpi == nullptr) {
    return UnimplementedError(std::string("GradientBucketer: the ") +
                              (comm ? comm->backend() : std::string("null")) +
                              " communicator is not supported yet (only mpi)");
  }
  if (!IsFloatingPoint(dtype)) {
    return InvalidArgumentError(std::string("GradientBucketer: dtype ") + DTypeName(dtype) +
                                " is not a gradient type (f32, f64, bf16, f16)");
  }
  if (options.bucket_bytes <= 0) {
    return InvalidArgumentError("GradientBucketerOptions.bucket_bytes = " +
                                std::to_string(options.bucket_bytes) + ": must be > 0");
  }
  const int64_t esize = DTypeSize(dtype);
  for (size_t i = 0; i < gradients.size(); ++i) {
    const GradientBuffer& g = gradients[i];
    if (g.count < 0 || g.count > INT_MAX || (g.count > 0 && g.data == nullptr)) {
      return InvalidArgumentError("GradientBucketer: gradient " + std::to_string(i) + " has " +
                                  std::to_string(g.count) + " elements at " +
                                  (g.data ? "a valid pointer" : "nullptr") +
                                  " (need 0 <= count <= INT_MAX and data when count > 0)");
    }
  }
  // Every rank must register the same counts, or the buckets would not match.
  uint64_t mine = CountsFingerprint(gradients), lo = 0, hi = 0;
  int rc = MPI_Allreduce(&mine, &lo, 1, MPI_UINT64_T, MPI_MIN, mpi->mpi_comm());
  if (rc == MPI_SUCCESS) rc = MPI_Allreduce(&mine, &hi, 1, MPI_UINT64_T, MPI_MAX, mpi->mpi_comm());
  if (rc != MPI_SUCCESS)
    return InternalError("GradientBucketer: MPI_Allreduce: " + MpiErrorString(rc));
  if (lo != hi) {
    return InvalidArgumentError(
        "GradientBucketer: ranks registered different gradient counts (the model differs "
        "between ranks?)");
  }

  std::unique_ptr<GradientBucketer> b(new GradientBucketer());
  b->gradients_ = std::move(gradients);
  b->dtype_ = dtype;
  b->esize_ = esize;
  b->options_ = options;
  b->rank_ = mpi->rank();
  b->size_ = mpi->size();
  LOOM_RETURN_IF_ERROR(DupWithErrorsReturn(mpi->mpi_comm(), &b->phase1_comm_));
  LOOM_RETURN_IF_ERROR(DupWithErrorsReturn(mpi->mpi_comm(), &b->phase2_comm_));

  // Greedy buckets in reverse registration order.
  const int n = static_cast<int>(b->gradients_.size());
  b->bucket_of_.assign(static_cast<size_t>(n), -1);
  b->marked_.assign(static_cast<size_t>(n), 0);
  std::vector<std::vector<int>> groups;
  int64_t group_bytes = 0;
  for (int i = n - 1; i >= 0; --i) {
    const int64_t bytes = b->gradients_[i].count * esize;
    // A new bucket when this gradient would overflow a non-empty one (empty gradients join
    // the current bucket).
    if (groups.empty() ||
        (bytes > 0 && group_bytes > 0 && group_bytes + bytes > options.bucket_bytes)) {
      groups.emplace_back();
      group_bytes = 0;
    }
    groups.back().push_back(i);
    group_bytes += bytes;
  }
  const int R = b->size_;
  int64_t copies_total = 0;
  b->buckets_.resize(groups.size());
  b->copies_offset_.resize(groups.size());
  for (size_t k = 0; k < groups.size(); ++k) {
    Bucket& bucket = b->buckets_[k];
    // Flat layout in ascending registration order: gradients allocated back to back in that
    // order then need no packing.
    std::vector<int> members = groups[k];
    std::sort(members.begin(), members.end());
    bool contiguous = true;
    const char* expect = nullptr;
    for (int i : members) {
      const GradientBuffer& g = b->gradients_[i];
      if (g.count == 0) {
        bucket.members.push_back({i, bucket.count});
        b->bucket_of_[i] = static_cast<int>(k);
        continue;
      }
      if (expect != nullptr && static_cast<const char*>(g.data) != expect) contiguous = false;
      expect = static_cast<const char*>(g.data) + g.count * esize;
      bucket.members.push_back({i, bucket.count});
      bucket.count += g.count;
      b->bucket_of_[i] = static_cast<int>(k);
    }
    const int64_t widest = (bucket.count + b->size_ - 1) / b->size_;
    if (std::max(bucket.count, (b->size_ - 1) * widest) > INT_MAX) {
      return InvalidArgumentError("GradientBucketer: bucket " + std::to_string(k) + " holds " +
                                  std::to_string(bucket.count) +
                                  " elements, more than one MPI call takes (lower bucket_bytes)");
    }
    bucket.packed = !contiguous;
    if (bucket.packed) {
      bucket.storage.resize(static_cast<size_t>(bucket.count * esize));
      bucket.flat = bucket.storage.data();
    } else {
      bucket.flat = nullptr;  // set from the first non-empty member below
      for (const Member& m : bucket.members) {
        if (b->gradients_[m.index].count > 0) {
          bucket.flat = static_cast<char*>(b->gradients_[m.index].data);
          break;
        }
      }
    }
    const int64_t own = BlockLength(bucket.count, R, b->rank_);
    bucket.send_counts.resize(R);
    bucket.send_displs.resize(R);
    bucket.recv_counts.assign(R, static_cast<int>(own));
    bucket.recv_displs.resize(R);
    bucket.gather_counts.resize(R);
    for (int p = 0; p < R; ++p) {
      bucket.send_counts[p] = static_cast<int>(BlockLength(bucket.count, R, p));
      bucket.send_displs[p] = static_cast<int>(BlockBegin(bucket.count, R, p));
      bucket.recv_displs[p] = static_cast<int>(p * own);
      bucket.gather_counts[p] = bucket.send_counts[p];
    }
    b->copies_offset_[k] = copies_total;
    copies_total += R * own * esize;
  }
  b->copies_.resize(static_cast<size_t>(copies_total));
  for (Bucket& bucket : b->buckets_) bucket.pending = static_cast<int>(bucket.members.size());
  VLOG(1) << "GradientBucketer: " << n << " gradients in " << b->buckets_.size()
          << " buckets of at most " << options.bucket_bytes << " bytes";
  return StatusOr<std::unique_ptr<GradientBucketer>>(std::move(b));
}

GradientBucketer::~GradientBucketer() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized) return;
  LOG_IF(ERROR, next_start_ > 0)
      << "GradientBucketer destroyed with buckets in flight (Wait() was not called)";
  if (phase1_comm_ != MPI_COMM_NULL) MPI_Comm_free(&phase1_comm_);
  if (phase2_comm_ != MPI_COMM_NULL) MPI_Comm_free(&phase2_comm_);
}

void GradientBucketer::MarkReady(int index) {
  CHECK(index >= 0 && index < static_cast<int>(gradients_.size()))
      << "GradientBucketer::MarkReady(" << index << "): " << gradients_.size()
      << " gradients registered (" << RankAndHost() << ")";
  CHECK(!marked_[index]) << "GradientBucketer::MarkReady(" << index << ") twice in one step ("
                         << RankAndHost() << ")";
  marked_[index] = 1;
  --buckets_[bucket_of_[index]].pending;
  StartReadyBuckets();
  AdvancePhase2(/*wait=*/false);
}

void GradientBucketer::StartReadyBuckets() {
  const MPI_Datatype type = MpiDatatype(dtype_);
  while (next_start_ < num_buckets() && buckets_[next_start_].pending == 0) {
    Bucket& b = buckets_[next_start_];
    if (b.packed) {
      for (const Member& m : b.members) {
        const GradientBuffer& g = gradients_[m.index];
        if (g.count > 0) std::memcpy(b.flat + m.offset * esize_, g.data, g.count * esize_);
      }
    }
    char* copies = copies_.data() + copies_offset_[next_start_];
    LOOM_MPI_CHECK(MPI_Ialltoallv(b.flat, b.send_counts.data(), b.send_displs.data(), type, copies,
                                  b.recv_counts.data(), b.recv_displs.data(), type, phase1_comm_,
                                  &b.phase1));
    ++next_start_;
  }
}

void GradientBucketer::AdvancePhase2(bool wait) {
  const MPI_Datatype type = MpiDatatype(dtype_);
  while (next_phase2_ < next_start_) {
    Bucket& b = buckets_[next_phase2_];
    if (wait) {
      LOOM_MPI_CHECK(MPI_Wait(&b.phase1, MPI_STATUS_IGNORE));
    } else {
      int done = 0;
      LOOM_MPI_CHECK(MPI_Test(&b.phase1, &done, MPI_STATUS_IGNORE));
      if (!done) return;
    }
    // Rank r's block: the R copies, rank-major, reduced in rank order into flat.
    const int64_t own = b.recv_counts[0];
    if (own > 0) {
      ReduceRankOrdered(dtype_, ReduceOp::kSum, copies_.data() + copies_offset_[next_phase2_], own,
                        size_, own, b.flat + b.send_displs[rank_] * esize_);
    }
    LOOM_MPI_CHECK(MPI_Iallgatherv(MPI_IN_PLACE, 0, type, b.flat, b.gather_counts.data(),
                                   b.send_displs.data(), type, phase2_comm_, &b.phase2));
    ++next_phase2_;
  }
}

void GradientBucketer::Wait() {
  if (next_start_ < num_buckets()) {
    for (size_t i = 0; i < marked_.size(); ++i) {
      CHECK(marked_[i]) << "GradientBucketer::Wait(): gradient " << i
                        << " was never marked ready in this step (" << RankAndHost() << ")";
    }
  }
  AdvancePhase2(/*wait=*/true);
  for (int k = 0; k < num_buckets(); ++k) {
    Bucket& b = buckets_[k];
    LOOM_MPI_CHECK(MPI_Wait(&b.phase2, MPI_STATUS_IGNORE));
    if (options_.average) DivideInPlace(dtype_, b.flat, b.count, size_);
    if (b.packed) {
      for (const Member& m : b.members) {
        const GradientBuffer& g = gradients_[m.index];
        if (g.count > 0) std::memcpy(g.data, b.flat + m.offset * esize_, g.count * esize_);
      }
    }
    b.pending = static_cast<int>(b.members.size());
  }
  std::fill(marked_.begin(), marked_.end(), 0);
  next_start_ = 0;
  next_phase2_ = 0;
}

}  // namespace loom::comm
