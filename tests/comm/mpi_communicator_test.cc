// MpiCommunicator at 1, 2 and 4 ranks: every collective and dtype against expectations each
// rank computes locally from (seed, rank, index). Reductions are checked to the last bit
// against the documented rank-ordered sum (mpi_communicator.h), and every test runs under five
// option sets: defaults, the forced all-to-all and gather AllReduce paths, and both again with
// max_elements_per_call = 7 so that the split (large-count) paths run on small buffers.
#include "csrc/comm/mpi_communicator.h"

#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <mpi.h>

#include "tests/comm/comm_test_util.h"

namespace loom::comm {
namespace {

using testing::AbsSums;
using testing::AllDTypes;
using testing::CountBitMismatches;
using testing::CountFarElements;
using testing::ElementAsDouble;
using testing::FillBits;
using testing::FillExpected;
using testing::FillInput;
using testing::Mix;
using testing::ReduceDTypes;
using testing::UnitRoundoff;

constexpr int64_t kHuge = std::numeric_limits<int64_t>::max() / 4;
constexpr unsigned char kSentinel = 0x5a;

struct Config {
  const char* name;
  MpiCommunicatorOptions options;
  std::vector<int64_t> counts;
  int64_t scale;  // multiplies the AllToAllV / AllGatherV block sizes
};

const std::vector<Config>& Configs() {
  static const std::vector<Config>* configs = [] {
    const std::vector<int64_t> many = {0, 1, 2, 5, 17, 1000, 12007};
    // 9 at R = 4: own blocks of 3 and 2 put the largest receive displacement (9 or 6) on both
    // sides of 7, so ranks must still agree on one path.
    const std::vector<int64_t> small = {0, 1, 2, 5, 9, 17, 1000};
    auto* c = new std::vector<Config>();
    c->push_back({"default", MpiCommunicatorOptions{}, many, 300});
    c->push_back({"alltoall_path", MpiCommunicatorOptions{INT_MAX, 0}, many, 1});
    c->push_back({"gather_path", MpiCommunicatorOptions{INT_MAX, kHuge}, many, 1});
    c->push_back({"split7_alltoall_path", MpiCommunicatorOptions{7, 0}, small, 20});
    c->push_back({"split7_gather_path", MpiCommunicatorOptions{7, kHuge}, small, 1});
    return c;
  }();
  return *configs;
}

// A byte buffer aligned for every dtype.
class Buffer {
 public:
  Buffer(int64_t n, DType dtype, unsigned char fill = 0xab)
      : bytes_(n * DTypeSize(dtype)), words_(static_cast<size_t>((bytes_ + 7) / 8 + 1)) {
    std::memset(words_.data(), fill, words_.size() * 8);
  }
  void* data() { return words_.data(); }
  const void* data() const { return words_.data(); }
  char* bytes() { return reinterpret_cast<char*>(words_.data()); }
  int64_t size_bytes() const { return bytes_; }

 private:
  int64_t bytes_;
  std::vector<uint64_t> words_;
};

std::string What(const char* collective, DType dtype, int64_t count, const char* extra = "") {
  return std::string(collective) + " " + DTypeName(dtype) + " count " + std::to_string(count) +
         " " + extra;
}

const char* OpName(ReduceOp op) { return op == ReduceOp::kSum ? "sum" : "max"; }

// Fails the test when any of the `n` bytes differs from the sentinel.
void ExpectSentinel(const char* p, int64_t n, const std::string& what) {
  for (int64_t i = 0; i < n; ++i) {
    if (static_cast<unsigned char>(p[i]) != kSentinel) {
      ADD_FAILURE() << what << ": byte " << i << " of a gap was overwritten";
      return;
    }
  }
}

class MpiCommTest : public ::testing::TestWithParam<int> {
 protected:
  void SetUp() override {
    auto c = MpiCommunicator::Create(MPI_COMM_WORLD, config().options);
    ASSERT_TRUE(c.ok()) << c.status();
    comm_ = std::move(c).value();
    rank_ = comm_->rank();
    size_ = comm_->size();
  }
  const Config& config() const { return Configs()[GetParam()]; }

  std::unique_ptr<MpiCommunicator> comm_;
  int rank_ = 0;
  int size_ = 1;
};

TEST_P(MpiCommTest, ReportsRankSizeAndBackend) {
  int world_rank = -1, world_size = -1;
  MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &world_size);
  EXPECT_EQ(rank_, world_rank);
  EXPECT_EQ(size_, world_size);
  EXPECT_EQ(comm_->backend(), "mpi");
  EXPECT_TRUE(comm_->device().is_cpu());
  EXPECT_NE(comm_->mpi_comm(), MPI_COMM_WORLD);  // a duplicate, so its traffic is its own
  int handler_is_return = 0;
  MPI_Errhandler h;
  MPI_Comm_get_errhandler(comm_->mpi_comm(), &h);
  handler_is_return = h == MPI_ERRORS_RETURN;
  MPI_Errhandler_free(&h);
  EXPECT_TRUE(handler_is_return) << "LOOM_MPI_CHECK needs MPI_ERRORS_RETURN on the communicator";
}

TEST_P(MpiCommTest, AllReduceMatchesRankOrderedOracle) {
  for (DType dtype : ReduceDTypes()) {
    for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kMax}) {
      for (int64_t count : config().counts) {
        const uint64_t seed = Mix(11, static_cast<uint64_t>(dtype), static_cast<uint64_t>(op),
                                  static_cast<uint64_t>(count));
        Buffer in(count, dtype), out(count, dtype), want(count, dtype);
        FillInput(dtype, seed, rank_, 0, count, in.data());
        comm_->AllReduce(in.data(), out.data(), count, dtype, op);
        FillExpected(dtype, op, seed, size_, 0, count, want.data());
        const std::string what = What("AllReduce", dtype, count, OpName(op));
        EXPECT_EQ(CountBitMismatches(dtype, out.data(), want.data(), count, what), 0) << what;
        // The input is untouched.
        Buffer again(count, dtype);
        FillInput(dtype, seed, rank_, 0, count, again.data());
        EXPECT_EQ(std::memcmp(in.data(), again.data(), in.size_bytes()), 0) << what;
      }
    }
  }
}

// An order-free check of the oracle itself: the rank-ordered sum is within R unit roundoffs
// (of the storage type) times sum |x| of the exact sum, computed in double (exact here: the
// inputs of f32/bf16/f16 span far fewer than 53 bits).
TEST_P(MpiCommTest, AllReduceSumIsCloseToExactSum) {
  for (DType dtype : {DType::kF32, DType::kBF16, DType::kF16}) {
    const int64_t count = config().counts.back();
    const uint64_t seed = Mix(12, static_cast<uint64_t>(dtype));
    Buffer in(count, dtype), out(count, dtype);
    FillInput(dtype, seed, rank_, 0, count, in.data());
    comm_->AllReduce(in.data(), out.data(), count, dtype, ReduceOp::kSum);
    std::vector<double> exact(static_cast<size_t>(count), 0.0);
    for (int r = 0; r < size_; ++r) {
      Buffer x(count, dtype);
      FillInput(dtype, seed, r, 0, count, x.data());
      for (int64_t i = 0; i < count; ++i) exact[i] += ElementAsDouble(dtype, x.data(), i);
    }
    const std::vector<double> abs_sum = AbsSums(dtype, seed, size_, 0, count);
    int64_t bad = 0;
    for (int64_t i = 0; i < count; ++i) {
      const double tol = size_ * UnitRoundoff(dtype) * abs_sum[i];
      const double got = ElementAsDouble(dtype, out.data(), i);
      if (!(std::fabs(got - exact[i]) <= tol) && ++bad <= 5) {
        ADD_FAILURE() << DTypeName(dtype) << " element " << i << ": " << got << " vs exact "
                      << exact[i] << " (tolerance " << tol << ")";
      }
    }
    EXPECT_EQ(bad, 0);
  }
}

TEST_P(MpiCommTest, AllReduceInPlace) {
  for (DType dtype : ReduceDTypes()) {
    for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kMax}) {
      for (int64_t count : config().counts) {
        const uint64_t seed = Mix(13, static_cast<uint64_t>(dtype), static_cast<uint64_t>(op),
                                  static_cast<uint64_t>(count));
        Buffer buf(count, dtype), want(count, dtype);
        FillInput(dtype, seed, rank_, 0, count, buf.data());
        comm_->AllReduce(buf.data(), buf.data(), count, dtype, op);
        FillExpected(dtype, op, seed, size_, 0, count, want.data());
        const std::string what = What("in-place AllReduce", dtype, count, OpName(op));
        EXPECT_EQ(CountBitMismatches(dtype, buf.data(), want.data(), count, what), 0) << what;
      }
    }
  }
}

TEST_P(MpiCommTest, AllReduceIsDeterministicAcrossCallsAndPaths) {
  // Same call twice, and the same data through the other two option sets: identical bits.
  MpiCommunicatorOptions gather_opts{INT_MAX, kHuge}, alltoall_opts{INT_MAX, 0};
  auto gather = MpiCommunicator::Create(MPI_COMM_WORLD, gather_opts);
  auto alltoall = MpiCommunicator::Create(MPI_COMM_WORLD, alltoall_opts);
  ASSERT_TRUE(gather.ok() && alltoall.ok());
  for (DType dtype : {DType::kF32, DType::kF64, DType::kBF16}) {
    const int64_t count = config().counts.back();
    const uint64_t seed = Mix(14, static_cast<uint64_t>(dtype));
    Buffer in(count, dtype), first(count, dtype), second(count, dtype), via_gather(count, dtype),
        via_alltoall(count, dtype);
    FillInput(dtype, seed, rank_, 0, count, in.data());
    comm_->AllReduce(in.data(), first.data(), count, dtype, ReduceOp::kSum);
    comm_->AllReduce(in.data(), second.data(), count, dtype, ReduceOp::kSum);
    (*gather)->AllReduce(in.data(), via_gather.data(), count, dtype, ReduceOp::kSum);
    (*alltoall)->AllReduce(in.data(), via_alltoall.data(), count, dtype, ReduceOp::kSum);
    EXPECT_EQ(CountBitMismatches(dtype, second.data(), first.data(), count, "second call"), 0);
    EXPECT_EQ(CountBitMismatches(dtype, via_gather.data(), first.data(), count, "gather path"), 0);
    EXPECT_EQ(CountBitMismatches(dtype, via_alltoall.data(), first.data(), count, "a2a path"), 0);
    // Every rank holds the same bits: compare against rank 0's result.
    Buffer root(count, dtype);
    std::memcpy(root.data(), first.data(), first.size_bytes());
    comm_->Broadcast(root.data(), count, dtype, 0);
    EXPECT_EQ(CountBitMismatches(dtype, first.data(), root.data(), count, "vs rank 0"), 0);
  }
}

// communicator.h promises bf16 "summed in fp32"; MpiCommunicator rounds once in total. With
// 256 on rank 0 and 1 on every other rank, rounding after each step would stay at 256 (256 + 1
// ties to even, back to 256); rounding once gives bf16(256 + R - 1), e.g. 260 at R = 4.
TEST_P(MpiCommTest, Bf16SumRoundsOnceInFp32) {
  const int64_t count = std::max<int64_t>(config().counts.back(), 1);
  std::vector<bf16> buf(static_cast<size_t>(count), FloatToBf16(rank_ == 0 ? 256.0f : 1.0f));
  comm_->AllReduce(buf.data(), buf.data(), count, DType::kBF16, ReduceOp::kSum);
  const float want = Bf16ToFloat(FloatToBf16(256.0f + static_cast<float>(size_ - 1)));
  if (size_ == 4) {
    EXPECT_EQ(want, 260.0f);
  }
  for (int64_t i = 0; i < count; ++i) {
    ASSERT_EQ(Bf16ToFloat(buf[i]), want) << "element " << i;
  }
}

TEST_P(MpiCommTest, MaxPropagatesNan) {
  const int64_t count = 5;
  for (DType dtype : {DType::kF32, DType::kF64, DType::kBF16}) {
    std::vector<double> values(count);
    for (int64_t i = 0; i < count; ++i) values[i] = rank_ * 10.0 + i;
    if (rank_ == size_ - 1) values[2] = std::nan("");
    Buffer buf(count, dtype);
    for (int64_t i = 0; i < count; ++i) {
      if (dtype == DType::kF32) static_cast<float*>(buf.data())[i] = static_cast<float>(values[i]);
      if (dtype == DType::kF64) static_cast<double*>(buf.data())[i] = values[i];
      if (dtype == DType::kBF16) {
        static_cast<bf16*>(buf.data())[i] = FloatToBf16(static_cast<float>(values[i]));
      }
    }
    comm_->AllReduce(buf.data(), buf.data(), count, dtype, ReduceOp::kMax);
    for (int64_t i = 0; i < count; ++i) {
      const double got = ElementAsDouble(dtype, buf.data(), i);
      if (i == 2) {
        EXPECT_TRUE(std::isnan(got)) << DTypeName(dtype);
      } else {
        EXPECT_EQ(got, (size_ - 1) * 10.0 + i) << DTypeName(dtype) << " element " << i;
      }
    }
  }
}

// Elements rank `src` sends to rank `dst` in AllToAllV test round `k`: uneven, often zero, and
// the last rank (when R > 1) sends nothing at all.
int64_t A2aCount(int src, int dst, int size, int k, int64_t scale) {
  if (size > 1 && src == size - 1) return 0;
  return ((src + 2 * dst + k) % 4) * scale;
}

TEST_P(MpiCommTest, AllToAllVUnevenAndZeroSizedSplits) {
  for (DType dtype : AllDTypes()) {
    for (int k = 0; k < 4; ++k) {
      const int64_t esize = DTypeSize(dtype);
      const uint64_t seed = Mix(15, static_cast<uint64_t>(dtype), static_cast<uint64_t>(k));
      // Blocks in peer order with gaps (1 element between send blocks, 2 between receive
      // blocks) so wrong displacements show; receive gaps hold a sentinel that must survive.
      std::vector<int64_t> sc(size_), sd(size_), rc(size_), rd(size_);
      int64_t send_total = 0, recv_total = 0;
      for (int p = 0; p < size_; ++p) {
        sc[p] = A2aCount(rank_, p, size_, k, config().scale);
        rc[p] = A2aCount(p, rank_, size_, k, config().scale);
        sd[p] = send_total;
        rd[p] = recv_total + 2;
        send_total += sc[p] + 1;
        recv_total += rc[p] + 2;
      }
      recv_total += 2;
      Buffer send(send_total, dtype), recv(recv_total, dtype, kSentinel);
      for (int p = 0; p < size_; ++p) {
        FillBits(dtype, seed, rank_, p, 0, sc[p], send.bytes() + sd[p] * esize);
      }
      comm_->AllToAllV(send.data(), sc, sd, recv.data(), rc, rd, dtype);
      const std::string what = What("AllToAllV", dtype, recv_total, config().name);
      int64_t prev_end = 0;
      for (int p = 0; p < size_; ++p) {
        Buffer want(rc[p], dtype);
        FillBits(dtype, seed, p, rank_, 0, rc[p], want.data());
        EXPECT_EQ(CountBitMismatches(dtype, recv.bytes() + rd[p] * esize, want.data(), rc[p],
                                     what + " from rank " + std::to_string(p)),
                  0);
        ExpectSentinel(recv.bytes() + prev_end * esize, (rd[p] - prev_end) * esize, what);
        prev_end = rd[p] + rc[p];
      }
      ExpectSentinel(recv.bytes() + prev_end * esize, (recv_total - prev_end) * esize, what);
    }
  }
}

TEST_P(MpiCommTest, AllGather) {
  for (DType dtype : AllDTypes()) {
    for (int64_t count : config().counts) {
      for (bool in_place : {false, true}) {
        const int64_t esize = DTypeSize(dtype);
        const uint64_t seed = Mix(16, static_cast<uint64_t>(dtype), static_cast<uint64_t>(count));
        Buffer send(count, dtype), recv(size_ * count, dtype);
        FillBits(dtype, seed, rank_, 0, 0, count, send.data());
        if (in_place) {
          std::memcpy(recv.bytes() + rank_ * count * esize, send.data(), send.size_bytes());
          comm_->AllGather(recv.bytes() + rank_ * count * esize, recv.data(), count, dtype);
        } else {
          comm_->AllGather(send.data(), recv.data(), count, dtype);
        }
        Buffer want(size_ * count, dtype);
        for (int p = 0; p < size_; ++p) {
          FillBits(dtype, seed, p, 0, 0, count, want.bytes() + p * count * esize);
        }
        const std::string what = What("AllGather", dtype, count, in_place ? "in place" : "");
        EXPECT_EQ(CountBitMismatches(dtype, recv.data(), want.data(), size_ * count, what), 0);
      }
    }
  }
}

TEST_P(MpiCommTest, AllGatherVUnevenAndZeroSized) {
  for (DType dtype : AllDTypes()) {
    for (int k = 0; k < 3; ++k) {
      for (bool in_place : {false, true}) {
        const int64_t esize = DTypeSize(dtype);
        const uint64_t seed = Mix(17, static_cast<uint64_t>(dtype), static_cast<uint64_t>(k));
        std::vector<int64_t> counts(size_), displs(size_);
        int64_t total = 0;
        for (int p = 0; p < size_; ++p) {
          counts[p] = ((p * 3 + k) % 5) * config().scale;  // zero for some ranks
          displs[p] = total + 1;
          total += counts[p] + 1;
        }
        total += 1;
        Buffer send(counts[rank_], dtype), recv(total, dtype, kSentinel);
        FillBits(dtype, seed, rank_, 0, 0, counts[rank_], send.data());
        const void* src = send.data();
        if (in_place) {
          std::memcpy(recv.bytes() + displs[rank_] * esize, send.data(), send.size_bytes());
          src = recv.bytes() + displs[rank_] * esize;
        }
        comm_->AllGatherV(src, counts[rank_], recv.data(), counts, displs, dtype);
        const std::string what = What("AllGatherV", dtype, total, in_place ? "in place" : "");
        int64_t prev_end = 0;
        for (int p = 0; p < size_; ++p) {
          Buffer want(counts[p], dtype);
          FillBits(dtype, seed, p, 0, 0, counts[p], want.data());
          EXPECT_EQ(CountBitMismatches(dtype, recv.bytes() + displs[p] * esize, want.data(),
                                       counts[p], what + " from rank " + std::to_string(p)),
                    0);
          ExpectSentinel(recv.bytes() + prev_end * esize, (displs[p] - prev_end) * esize, what);
          prev_end = displs[p] + counts[p];
        }
        ExpectSentinel(recv.bytes() + prev_end * esize, (total - prev_end) * esize, what);
      }
    }
  }
}

TEST_P(MpiCommTest, ReduceScatterMatchesRankOrderedOracle) {
  for (DType dtype : ReduceDTypes()) {
    for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kMax}) {
      for (int64_t count : config().counts) {
        const int64_t recv_count = count / std::max(1, size_ / 2);
        const uint64_t seed = Mix(18, static_cast<uint64_t>(dtype), static_cast<uint64_t>(op),
                                  static_cast<uint64_t>(recv_count));
        Buffer send(size_ * recv_count, dtype), recv(recv_count, dtype), want(recv_count, dtype);
        FillInput(dtype, seed, rank_, 0, size_ * recv_count, send.data());
        comm_->ReduceScatter(send.data(), recv.data(), recv_count, dtype, op);
        FillExpected(dtype, op, seed, size_, rank_ * recv_count, recv_count, want.data());
        const std::string what = What("ReduceScatter", dtype, recv_count, OpName(op));
        EXPECT_EQ(CountBitMismatches(dtype, recv.data(), want.data(), recv_count, what), 0);
      }
    }
  }
}

TEST_P(MpiCommTest, BroadcastFromEveryRoot) {
  for (DType dtype : AllDTypes()) {
    for (int64_t count : config().counts) {
      for (int root = 0; root < size_; ++root) {
        const uint64_t seed = Mix(19, static_cast<uint64_t>(dtype), static_cast<uint64_t>(count));
        Buffer buf(count, dtype), want(count, dtype);
        FillBits(dtype, seed, root, 0, 0, count, want.data());
        if (rank_ == root) std::memcpy(buf.data(), want.data(), want.size_bytes());
        comm_->Broadcast(buf.data(), count, dtype, root);
        const std::string what =
            What("Broadcast", dtype, count, "from root ") + std::to_string(root);
        EXPECT_EQ(CountBitMismatches(dtype, buf.data(), want.data(), count, what), 0);
      }
    }
  }
}

// Barrier's oracle: files every rank creates before the barrier are all visible after it.
TEST_P(MpiCommTest, BarrierOrdersSideEffects) {
  char dir[256] = {0};
  if (rank_ == 0) {
    std::snprintf(dir, sizeof(dir), "%s", "/tmp/loom_barrier_XXXXXX");
    ASSERT_NE(mkdtemp(dir), nullptr);
  }
  comm_->Broadcast(dir, sizeof(dir), DType::kU8, 0);
  for (int round = 0; round < 3; ++round) {
    const std::string mine =
        std::string(dir) + "/r" + std::to_string(rank_) + "_" + std::to_string(round);
    if (rank_ != 0) usleep(2000 * rank_);  // late arrivals must still be waited for
    FILE* f = std::fopen(mine.c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fclose(f);
    comm_->Barrier();
    for (int p = 0; p < size_; ++p) {
      const std::string theirs =
          std::string(dir) + "/r" + std::to_string(p) + "_" + std::to_string(round);
      EXPECT_EQ(access(theirs.c_str(), F_OK), 0) << "round " << round << ": " << theirs;
    }
  }
  comm_->Barrier();
  if (rank_ == 0) {
    for (int round = 0; round < 3; ++round) {
      for (int p = 0; p < size_; ++p) {
        std::remove(
            (std::string(dir) + "/r" + std::to_string(p) + "_" + std::to_string(round)).c_str());
      }
    }
    rmdir(dir);
  }
}

INSTANTIATE_TEST_SUITE_P(Options, MpiCommTest,
                         ::testing::Range(0, static_cast<int>(Configs().size())),
                         [](const ::testing::TestParamInfo<int>& param) {
                           return std::string(Configs()[param.param].name);
                         });

TEST(MpiCommunicatorCreateTest, RejectsBadOptions) {
  MpiCommunicatorOptions bad;
  bad.max_elements_per_call = 0;
  auto c = MpiCommunicator::Create(MPI_COMM_WORLD, bad);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(c.status().message().find("max_elements_per_call"), std::string::npos) << c.status();
  MpiCommunicatorOptions bad_gather;
  bad_gather.gather_allreduce_max_bytes = -1;
  auto g = MpiCommunicator::Create(MPI_COMM_WORLD, bad_gather);
  ASSERT_FALSE(g.ok());
  EXPECT_NE(g.status().message().find("gather_allreduce_max_bytes"), std::string::npos);
}

}  // namespace
}  // namespace loom::comm
