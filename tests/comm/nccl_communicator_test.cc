// NcclCommunicator at 1 and 2 ranks (one GPU per rank), against MpiCommunicator on the same
// host data and against the locally computed expectations of comm_test_util.h. Data movement
// (AllToAllV, AllGather(V), Broadcast) and integer reductions must match bit for bit; floating
// reductions within 2 R u sum|x| of MPI's (u: the dtype's unit roundoff; the two backends add in
// different orders and NCCL rounds bf16 at every step). Every test skips itself where no GPU
// can be used, or where ranks would have to share a GPU.
#include "csrc/comm/nccl_communicator.h"

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <mpi.h>

#include "csrc/comm/bootstrap.h"
#include "csrc/comm/mpi_communicator.h"
#include "csrc/core/gpu.h"
#include "tests/comm/comm_test_util.h"
#include "tests/testing/gpu_test_util.h"

namespace loom::comm {
namespace {

using testing::AbsSums;
using testing::AllDTypes;
using testing::CountBitMismatches;
using testing::CountFarElements;
using testing::FillBits;
using testing::FillExpected;
using testing::FillInput;
using testing::Mix;
using testing::ReduceDTypes;
using testing::UnitRoundoff;

const char* OpName(ReduceOp op) { return op == ReduceOp::kSum ? "sum" : "max"; }

// Host bytes, aligned for every dtype.
struct HostBuffer {
  HostBuffer(int64_t n, DType dtype, unsigned char fill = 0xab)
      : bytes(n * DTypeSize(dtype)), words(static_cast<size_t>((bytes + 7) / 8 + 1)) {
    std::memset(words.data(), fill, words.size() * 8);
  }
  void* data() { return words.data(); }
  char* ptr() { return reinterpret_cast<char*>(words.data()); }
  int64_t bytes;
  std::vector<uint64_t> words;
};

// The communicators live for the whole binary (NCCL initialization is slow) and are destroyed
// by the environment's TearDown, before the test main finalizes MPI.
struct Comms {
  Bootstrap boot;
  std::unique_ptr<Communicator> nccl;
  std::unique_ptr<MpiCommunicator> mpi;
};
std::unique_ptr<Comms>& SharedComms() {
  static auto* comms = new std::unique_ptr<Comms>();
  return *comms;
}
class CommsEnvironment : public ::testing::Environment {
 public:
  void TearDown() override { SharedComms().reset(); }
};
const auto* const kEnvironment = ::testing::AddGlobalTestEnvironment(new CommsEnvironment());

// Device memory on the NCCL stream, copied to/from host buffers.
class DeviceBuffer {
 public:
  DeviceBuffer(int64_t bytes, Stream stream) : bytes_(bytes), stream_(stream) {
    ptr_ = gpu::DeviceAlloc(static_cast<size_t>(bytes), stream);
  }
  ~DeviceBuffer() { gpu::DeviceFree(ptr_, stream_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  char* ptr() { return static_cast<char*>(ptr_); }
  void From(const void* host) {
    if (bytes_ > 0) gpu::MemcpyAsync(ptr_, host, bytes_, gpu::CopyKind::kHostToDevice, stream_);
  }
  void To(void* host) {
    if (bytes_ > 0) gpu::MemcpyAsync(host, ptr_, bytes_, gpu::CopyKind::kDeviceToHost, stream_);
    gpu::StreamSynchronize(stream_);
  }

 private:
  int64_t bytes_;
  Stream stream_;
  void* ptr_ = nullptr;
};

class NcclCommTest : public ::testing::Test {
 protected:
  // Called by every test after LOOM_SKIP_WITHOUT_GPU(). Skips (on every rank alike: they
  // share the host) when ranks would have to share a GPU.
  void MakeComms() {
    if (!SharedComms()) {
      static int argc = 1;
      static char arg0[] = "comm_nccl_test";
      static char* args[] = {arg0, nullptr};
      static char** argv = args;
      auto boot = InitDistributed(&argc, &argv);
      ASSERT_TRUE(boot.ok()) << boot.status();
      if (boot->local_size > gpu::DeviceCount()) {
        skip_reason_ = std::to_string(boot->local_size) + " ranks on this host share " +
                       std::to_string(gpu::DeviceCount()) + " GPU(s); NCCL needs one per rank";
        return;
      }
      auto comms = std::make_unique<Comms>();
      comms->boot = *boot;
      auto nccl = CreateCommunicator(Backend::kNccl, comms->boot);
      ASSERT_TRUE(nccl.ok()) << nccl.status();
      comms->nccl = std::move(nccl).value();
      auto mpi = MpiCommunicator::Create(MPI_COMM_WORLD);
      ASSERT_TRUE(mpi.ok()) << mpi.status();
      comms->mpi = std::move(mpi).value();
      SharedComms() = std::move(comms);
    }
    nccl_ = SharedComms()->nccl.get();
    mpi_ = SharedComms()->mpi.get();
    rank_ = nccl_->rank();
    size_ = nccl_->size();
    stream_ = nccl_->stream();
  }

  Communicator* nccl_ = nullptr;
  MpiCommunicator* mpi_ = nullptr;
  int rank_ = 0;
  int size_ = 1;
  Stream stream_;
  static std::string skip_reason_;
};
std::string NcclCommTest::skip_reason_;

#define LOOM_NCCL_TEST_SETUP()                             \
  LOOM_SKIP_WITHOUT_GPU();                                 \
  ASSERT_NO_FATAL_FAILURE(MakeComms());                    \
  if (!skip_reason_.empty()) GTEST_SKIP() << skip_reason_; \
  ASSERT_NE(nccl_, nullptr)

TEST_F(NcclCommTest, ReportsRankSizeAndDevice) {
  LOOM_NCCL_TEST_SETUP();
  EXPECT_EQ(nccl_->backend(), "nccl");
  EXPECT_EQ(nccl_->rank(), mpi_->rank());
  EXPECT_EQ(nccl_->size(), mpi_->size());
  EXPECT_TRUE(nccl_->device().is_cuda());
  EXPECT_EQ(nccl_->device().index, SharedComms()->boot.gpu);
  EXPECT_NE(nccl_->stream().handle, nullptr);
}

TEST_F(NcclCommTest, AllReduceMatchesMpi) {
  LOOM_NCCL_TEST_SETUP();
  for (DType dtype : ReduceDTypes()) {
    for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kMax}) {
      for (int64_t count :
           {int64_t{1}, int64_t{17}, int64_t{1000}, int64_t{40009}, int64_t{1000003}}) {
        for (bool in_place : {false, true}) {
          const uint64_t seed = Mix(21, static_cast<uint64_t>(dtype), static_cast<uint64_t>(op),
                                    static_cast<uint64_t>(count));
          const int64_t bytes = count * DTypeSize(dtype);
          HostBuffer in(count, dtype), got(count, dtype), want(count, dtype);
          FillInput(dtype, seed, rank_, 0, count, in.data());
          DeviceBuffer d_in(bytes, stream_), d_out(bytes, stream_);
          d_in.From(in.data());
          char* out_ptr = in_place ? d_in.ptr() : d_out.ptr();
          nccl_->AllReduce(d_in.ptr(), out_ptr, count, dtype, op);
          (in_place ? d_in : d_out).To(got.data());
          mpi_->AllReduce(in.data(), want.data(), count, dtype, op);
          std::vector<double> tol = AbsSums(dtype, seed, size_, 0, count);
          for (double& t : tol) t *= op == ReduceOp::kSum ? 2.0 * size_ * UnitRoundoff(dtype) : 0.0;
          const std::string what = std::string("AllReduce ") + DTypeName(dtype) + " " + OpName(op) +
                                   " count " + std::to_string(count) +
                                   (in_place ? " in place" : "");
          EXPECT_EQ(CountFarElements(dtype, got.data(), want.data(), count, tol, what), 0);
        }
      }
    }
  }
}

TEST_F(NcclCommTest, ReduceScatterMatchesMpi) {
  LOOM_NCCL_TEST_SETUP();
  for (DType dtype : ReduceDTypes()) {
    for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kMax}) {
      for (int64_t recv_count : {int64_t{1}, int64_t{33}, int64_t{100003}}) {
        const uint64_t seed = Mix(22, static_cast<uint64_t>(dtype), static_cast<uint64_t>(op),
                                  static_cast<uint64_t>(recv_count));
        const int64_t n = size_ * recv_count, esize = DTypeSize(dtype);
        HostBuffer in(n, dtype), got(recv_count, dtype), want(recv_count, dtype);
        FillInput(dtype, seed, rank_, 0, n, in.data());
        DeviceBuffer d_in(n * esize, stream_), d_out(recv_count * esize, stream_);
        d_in.From(in.data());
        nccl_->ReduceScatter(d_in.ptr(), d_out.ptr(), recv_count, dtype, op);
        d_out.To(got.data());
        mpi_->ReduceScatter(in.data(), want.data(), recv_count, dtype, op);
        std::vector<double> tol = AbsSums(dtype, seed, size_, rank_ * recv_count, recv_count);
        for (double& t : tol) t *= op == ReduceOp::kSum ? 2.0 * size_ * UnitRoundoff(dtype) : 0.0;
        const std::string what = std::string("ReduceScatter ") + DTypeName(dtype) + " " +
                                 OpName(op) + " count " + std::to_string(recv_count);
        EXPECT_EQ(CountFarElements(dtype, got.data(), want.data(), recv_count, tol, what), 0);
      }
    }
  }
}

TEST_F(NcclCommTest, AllToAllVUnevenAndZeroSizedSplits) {
  LOOM_NCCL_TEST_SETUP();
  for (DType dtype : AllDTypes()) {
    for (int k = 0; k < 4; ++k) {
      const int64_t esize = DTypeSize(dtype);
      const uint64_t seed = Mix(23, static_cast<uint64_t>(dtype), static_cast<uint64_t>(k));
      auto count_of = [&](int src, int dst) -> int64_t {
        if (size_ > 1 && src == size_ - 1) return 0;  // the last rank sends nothing
        return ((src + 2 * dst + k) % 4) * 1000;
      };
      std::vector<int64_t> sc(size_), sd(size_), rc(size_), rd(size_);
      int64_t send_total = 0, recv_total = 0;
      for (int p = 0; p < size_; ++p) {
        sc[p] = count_of(rank_, p);
        rc[p] = count_of(p, rank_);
        sd[p] = send_total;
        rd[p] = recv_total + 2;
        send_total += sc[p] + 1;
        recv_total += rc[p] + 2;
      }
      HostBuffer send(send_total, dtype), got(recv_total, dtype, 0x5a),
          want(recv_total, dtype, 0x5a);
      for (int p = 0; p < size_; ++p) {
        FillBits(dtype, seed, rank_, p, 0, sc[p], send.ptr() + sd[p] * esize);
        FillBits(dtype, seed, p, rank_, 0, rc[p], want.ptr() + rd[p] * esize);
      }
      DeviceBuffer d_send(send_total * esize, stream_), d_recv(recv_total * esize, stream_);
      d_send.From(send.data());
      d_recv.From(got.data());  // the gaps hold the sentinel, which must survive
      nccl_->AllToAllV(d_send.ptr(), sc, sd, d_recv.ptr(), rc, rd, dtype);
      d_recv.To(got.data());
      EXPECT_EQ(CountBitMismatches(dtype, got.data(), want.data(), recv_total,
                                   std::string("AllToAllV ") + DTypeName(dtype)),
                0);
    }
  }
}

TEST_F(NcclCommTest, AllGatherAndAllGatherV) {
  LOOM_NCCL_TEST_SETUP();
  for (DType dtype : AllDTypes()) {
    const int64_t esize = DTypeSize(dtype);
    const uint64_t seed = Mix(24, static_cast<uint64_t>(dtype));
    // AllGather, in place and not.
    for (bool in_place : {false, true}) {
      const int64_t count = 4099;
      HostBuffer send(count, dtype), got(size_ * count, dtype), want(size_ * count, dtype);
      FillBits(dtype, seed, rank_, 0, 0, count, send.data());
      for (int p = 0; p < size_; ++p) {
        FillBits(dtype, seed, p, 0, 0, count, want.ptr() + p * count * esize);
      }
      DeviceBuffer d_send(count * esize, stream_), d_recv(size_ * count * esize, stream_);
      d_send.From(send.data());
      const char* src = d_send.ptr();
      if (in_place) {
        gpu::MemcpyAsync(d_recv.ptr() + rank_ * count * esize, send.data(), count * esize,
                         gpu::CopyKind::kHostToDevice, stream_);
        src = d_recv.ptr() + rank_ * count * esize;
      }
      nccl_->AllGather(src, d_recv.ptr(), count, dtype);
      d_recv.To(got.data());
      EXPECT_EQ(CountBitMismatches(dtype, got.data(), want.data(), size_ * count,
                                   std::string("AllGather ") + DTypeName(dtype)),
                0);
    }
    // AllGatherV with uneven counts (zero on some ranks) and gaps.
    for (int k = 0; k < 3; ++k) {
      std::vector<int64_t> counts(size_), displs(size_);
      int64_t total = 0;
      for (int p = 0; p < size_; ++p) {
        counts[p] = ((p * 3 + k) % 5) * 777;
        displs[p] = total + 1;
        total += counts[p] + 1;
      }
      HostBuffer send(counts[rank_], dtype), got(total, dtype, 0x5a), want(total, dtype, 0x5a);
      FillBits(dtype, seed, rank_, k, 0, counts[rank_], send.data());
      for (int p = 0; p < size_; ++p) {
        FillBits(dtype, seed, p, k, 0, counts[p], want.ptr() + displs[p] * esize);
      }
      DeviceBuffer d_send(counts[rank_] * esize, stream_), d_recv(total * esize, stream_);
      d_send.From(send.data());
      d_recv.From(got.data());
      nccl_->AllGatherV(d_send.ptr(), counts[rank_], d_recv.ptr(), counts, displs, dtype);
      d_recv.To(got.data());
      EXPECT_EQ(CountBitMismatches(dtype, got.data(), want.data(), total,
                                   std::string("AllGatherV ") + DTypeName(dtype)),
                0);
    }
  }
}

TEST_F(NcclCommTest, BroadcastFromEveryRootAndBarrier) {
  LOOM_NCCL_TEST_SETUP();
  for (DType dtype : AllDTypes()) {
    for (int root = 0; root < size_; ++root) {
      const int64_t count = 10007, esize = DTypeSize(dtype);
      const uint64_t seed = Mix(25, static_cast<uint64_t>(dtype), static_cast<uint64_t>(root));
      HostBuffer buf(count, dtype), want(count, dtype);
      FillBits(dtype, seed, root, 0, 0, count, want.data());
      if (rank_ == root) std::memcpy(buf.data(), want.data(), count * esize);
      DeviceBuffer d_buf(count * esize, stream_);
      d_buf.From(buf.data());
      nccl_->Broadcast(d_buf.ptr(), count, dtype, root);
      d_buf.To(buf.data());
      EXPECT_EQ(CountBitMismatches(dtype, buf.data(), want.data(), count,
                                   std::string("Broadcast ") + DTypeName(dtype)),
                0);
    }
  }
  // Barrier: a file each rank creates before it is visible to every rank after it.
  char dir[256] = {0};
  if (rank_ == 0) {
    std::snprintf(dir, sizeof(dir), "%s", "/tmp/loom_nccl_barrier_XXXXXX");
    ASSERT_NE(mkdtemp(dir), nullptr);
  }
  mpi_->Broadcast(dir, sizeof(dir), DType::kU8, 0);
  const std::string mine = std::string(dir) + "/r" + std::to_string(rank_);
  if (rank_ != 0) usleep(20000);
  FILE* f = std::fopen(mine.c_str(), "w");
  ASSERT_NE(f, nullptr);
  std::fclose(f);
  nccl_->Barrier();
  for (int p = 0; p < size_; ++p) {
    EXPECT_EQ(access((std::string(dir) + "/r" + std::to_string(p)).c_str(), F_OK), 0) << p;
  }
  mpi_->Barrier();
  std::remove(mine.c_str());
  mpi_->Barrier();
  if (rank_ == 0) rmdir(dir);
}

}  // namespace
}  // namespace loom::comm
