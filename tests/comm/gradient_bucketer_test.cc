// GradientBucketer at 1, 2 and 4 ranks: after Wait() every gradient holds, bit for bit, the
// rank-ordered sum (or mean) that each rank computes locally from (seed, rank, index), for
// every bucket size, packed and unpacked layouts, and any MarkReady order.
#include "csrc/comm/gradient_bucketer.h"

#include <algorithm>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <mpi.h>

#include "csrc/comm/mpi_communicator.h"
#include "tests/comm/comm_test_util.h"

namespace loom::comm {
namespace {

using testing::CountBitMismatches;
using testing::FillExpected;
using testing::FillInput;
using testing::Mix;

// Gradient sizes, including empty ones and one far larger than the rest.
const std::vector<int64_t> kCounts = {1, 0, 300, 17, 5000, 2, 999, 64, 1, 12000, 7, 0, 33};

int64_t FirstElement(int i) {
  return std::accumulate(kCounts.begin(), kCounts.begin() + i, int64_t{0});
}

// x / R in the accumulation type, rounded once: the documented `average`.
void DivideExpected(DType dtype, void* x, int64_t n, int r) {
  for (int64_t i = 0; i < n; ++i) {
    switch (dtype) {
      case DType::kF32:
        static_cast<float*>(x)[i] /= static_cast<float>(r);
        break;
      case DType::kF64:
        static_cast<double*>(x)[i] /= static_cast<double>(r);
        break;
      case DType::kBF16: {
        bf16& v = static_cast<bf16*>(x)[i];
        v = FloatToBf16(Bf16ToFloat(v) / static_cast<float>(r));
        break;
      }
      default:
        FAIL() << "unexpected dtype";
    }
  }
}

// The gradients of one rank: either one arena in registration order (no packing needed) or
// separate allocations (packed).
class Gradients {
 public:
  Gradients(DType dtype, bool arena) : dtype_(dtype), esize_(DTypeSize(dtype)) {
    const int64_t total = FirstElement(static_cast<int>(kCounts.size()));
    if (arena) {
      arena_.resize(static_cast<size_t>(total * esize_ / 8 + 1));
    } else {
      separate_.resize(kCounts.size());
      for (size_t i = 0; i < kCounts.size(); ++i) {
        separate_[i].resize(static_cast<size_t>(kCounts[i] * esize_ / 8 + 1));
      }
    }
    for (size_t i = 0; i < kCounts.size(); ++i) {
      char* p = arena ? reinterpret_cast<char*>(arena_.data()) + FirstElement(i) * esize_
                      : reinterpret_cast<char*>(separate_[i].data());
      buffers_.push_back({p, kCounts[i]});
    }
  }
  const std::vector<GradientBuffer>& buffers() const { return buffers_; }
  void Fill(uint64_t seed, int rank) {
    for (size_t i = 0; i < kCounts.size(); ++i) {
      FillInput(dtype_, seed, rank, FirstElement(i), kCounts[i], buffers_[i].data);
    }
  }

 private:
  DType dtype_;
  int64_t esize_;
  std::vector<uint64_t> arena_;
  std::vector<std::vector<uint64_t>> separate_;
  std::vector<GradientBuffer> buffers_;
};

struct Case {
  DType dtype;
  int64_t bucket_bytes;
  bool average;
  bool arena;
  bool shuffled;  // MarkReady in a rank-dependent random order instead of reverse order
};

std::string Name(const Case& c) {
  return std::string(DTypeName(c.dtype)) + " bucket_bytes " + std::to_string(c.bucket_bytes) +
         (c.average ? " average" : " sum") + (c.arena ? " arena" : " separate") +
         (c.shuffled ? " shuffled" : " reverse");
}

class GradientBucketerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto c = MpiCommunicator::Create();
    ASSERT_TRUE(c.ok()) << c.status();
    comm_ = std::move(c).value();
    rank_ = comm_->rank();
    size_ = comm_->size();
  }
  std::unique_ptr<MpiCommunicator> comm_;
  int rank_ = 0, size_ = 1;
};

TEST_F(GradientBucketerTest, MatchesRankOrderedOracleForEveryLayoutAndOrder) {
  std::vector<Case> cases;
  for (DType dtype : {DType::kF32, DType::kBF16, DType::kF64}) {
    for (int64_t bucket_bytes : {int64_t{1}, int64_t{4096}, int64_t{1} << 20}) {
      for (bool average : {false, true}) {
        for (bool arena : {false, true}) {
          for (bool shuffled : {false, true}) {
            cases.push_back({dtype, bucket_bytes, average, arena, shuffled});
          }
        }
      }
    }
  }
  const int n = static_cast<int>(kCounts.size());
  for (const Case& c : cases) {
    Gradients grads(c.dtype, c.arena);
    GradientBucketerOptions options;
    options.bucket_bytes = c.bucket_bytes;
    options.average = c.average;
    auto made = GradientBucketer::Create(comm_.get(), grads.buffers(), c.dtype, options);
    ASSERT_TRUE(made.ok()) << made.status();
    GradientBucketer& bucketer = **made;
    if (c.bucket_bytes == 1) {
      EXPECT_EQ(bucketer.num_buckets(), n - 2) << "one per non-empty gradient";
    }
    if (c.bucket_bytes == int64_t{1} << 20) {
      EXPECT_EQ(bucketer.num_buckets(), 1);
    }
    for (int step = 0; step < 2; ++step) {
      const uint64_t seed = Mix(31, static_cast<uint64_t>(c.dtype), static_cast<uint64_t>(step));
      grads.Fill(seed, rank_);
      std::vector<int> order(n);
      std::iota(order.rbegin(), order.rend(), 0);  // n-1, ..., 0: backward's order
      if (c.shuffled) {
        std::mt19937 rng(static_cast<unsigned>(rank_ * 7919 + step));
        std::shuffle(order.begin(), order.end(), rng);
      }
      for (int i : order) bucketer.MarkReady(i);
      bucketer.Wait();
      for (int i = 0; i < n; ++i) {
        std::vector<uint64_t> want(static_cast<size_t>(kCounts[i] + 1));
        FillExpected(c.dtype, ReduceOp::kSum, seed, size_, FirstElement(i), kCounts[i],
                     want.data());
        if (c.average) DivideExpected(c.dtype, want.data(), kCounts[i], size_);
        const std::string what =
            Name(c) + " step " + std::to_string(step) + " gradient " + std::to_string(i);
        ASSERT_EQ(
            CountBitMismatches(c.dtype, grads.buffers()[i].data, want.data(), kCounts[i], what), 0)
            << what;
      }
    }
  }
}

TEST_F(GradientBucketerTest, BucketsFollowReverseRegistrationOrderAndStartEagerlyInOrder) {
  Gradients grads(DType::kF32, /*arena=*/false);
  GradientBucketerOptions options;
  options.bucket_bytes = 1;  // every non-empty gradient in a bucket of its own
  auto made = GradientBucketer::Create(comm_.get(), grads.buffers(), DType::kF32, options);
  ASSERT_TRUE(made.ok()) << made.status();
  GradientBucketer& b = **made;
  const int n = static_cast<int>(kCounts.size());
  EXPECT_EQ(b.bucket_of(n - 1), 0);  // the last registered gradient is reduced first
  EXPECT_EQ(b.bucket_of(0), b.num_buckets() - 1);
  grads.Fill(5, rank_);
  // Gradient 0 lives in the last bucket: marking it starts nothing (buckets start in order).
  b.MarkReady(0);
  EXPECT_EQ(b.num_started(), 0);
  // Bucket 0 holds the last gradient and the empty one before it; it starts as soon as both
  // are marked.
  EXPECT_EQ(b.bucket_of(n - 2), 0);
  b.MarkReady(n - 1);
  EXPECT_EQ(b.num_started(), 0);
  b.MarkReady(n - 2);
  EXPECT_EQ(b.num_started(), 1);
  for (int i = n - 3; i >= 1; --i) b.MarkReady(i);
  EXPECT_EQ(b.num_started(), b.num_buckets());
  b.Wait();
  EXPECT_EQ(b.num_started(), 0);  // ready for the next step
  std::vector<float> want(static_cast<size_t>(kCounts[4]));
  FillExpected(DType::kF32, ReduceOp::kSum, 5, size_, FirstElement(4), kCounts[4], want.data());
  EXPECT_EQ(CountBitMismatches(DType::kF32, grads.buffers()[4].data, want.data(), kCounts[4],
                               "gradient 4"),
            0);
}

TEST_F(GradientBucketerTest, BadArgumentsAreNamed) {
  Gradients grads(DType::kF32, /*arena=*/true);
  auto bad_dtype = GradientBucketer::Create(comm_.get(), grads.buffers(), DType::kI32);
  ASSERT_FALSE(bad_dtype.ok());
  EXPECT_EQ(bad_dtype.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad_dtype.status().message().find("i32"), std::string::npos);

  GradientBucketerOptions zero;
  zero.bucket_bytes = 0;
  auto bad_bytes = GradientBucketer::Create(comm_.get(), grads.buffers(), DType::kF32, zero);
  ASSERT_FALSE(bad_bytes.ok());
  EXPECT_NE(bad_bytes.status().message().find("bucket_bytes"), std::string::npos);

  std::vector<GradientBuffer> null_data = {{nullptr, 5}};
  auto bad_null = GradientBucketer::Create(comm_.get(), null_data, DType::kF32);
  ASSERT_FALSE(bad_null.ok());
  EXPECT_NE(bad_null.status().message().find("gradient 0"), std::string::npos);

  // Ranks that register different models get an error on every rank, not a hang.
  std::vector<GradientBuffer> mine(grads.buffers());
  if (rank_ == size_ - 1 && size_ > 1) mine.pop_back();
  auto mismatch = GradientBucketer::Create(comm_.get(), mine, DType::kF32);
  if (size_ > 1) {
    ASSERT_FALSE(mismatch.ok());
    EXPECT_NE(mismatch.status().message().find("different gradient counts"), std::string::npos);
  } else {
    EXPECT_TRUE(mismatch.ok());
  }
}

// A communicator that is not MPI (stands in for NCCL, whose path is not implemented yet).
class FakeCommunicator : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  Device device() const override { return Device::Cuda(0); }
  std::string backend() const override { return "nccl"; }
  void AllReduce(const void*, void*, int64_t, DType, ReduceOp) override {}
  void AllToAllV(const void*, const std::vector<int64_t>&, const std::vector<int64_t>&, void*,
                 const std::vector<int64_t>&, const std::vector<int64_t>&, DType) override {}
  void AllGather(const void*, void*, int64_t, DType) override {}
  void AllGatherV(const void*, int64_t, void*, const std::vector<int64_t>&,
                  const std::vector<int64_t>&, DType) override {}
  void ReduceScatter(const void*, void*, int64_t, DType, ReduceOp) override {}
  void Broadcast(void*, int64_t, DType, int) override {}
  void Barrier() override {}
};

TEST_F(GradientBucketerTest, NonMpiCommunicatorIsUnimplemented) {
  FakeCommunicator fake;
  auto made = GradientBucketer::Create(&fake, {}, DType::kF32);
  ASSERT_FALSE(made.ok());
  EXPECT_EQ(made.status().code(), StatusCode::kUnimplemented);
  EXPECT_NE(made.status().message().find("nccl"), std::string::npos);
}

}  // namespace
}  // namespace loom::comm
