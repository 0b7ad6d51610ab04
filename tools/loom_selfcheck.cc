// loom_selfcheck: the quickstart's communicator self-check. Under mpirun with N ranks it runs
// every collective on the MPI backend (and on NCCL where each rank has a GPU) with data whose
// result every rank can compute, prints a table on rank 0 and exits non-zero on any failure.
//
//   mpirun -np 2 --oversubscribe loom_selfcheck [--backend=all|mpi|nccl] [--elements=N] ...
#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <glog/logging.h>
#include <mpi.h>

#include "csrc/comm/bootstrap.h"
#include "csrc/comm/communicator.h"
#include "csrc/core/dtype.h"
#include "csrc/core/gpu.h"
#include "csrc/core/logging.h"

namespace loom::comm {
namespace {

constexpr char kUsage[] = R"(loom_selfcheck: check that every collective works and give its speed.

Usage: mpirun -np <R> [--oversubscribe] loom_selfcheck [flags]

Runs AllReduce (sum and max; f32, f64, bf16, i32, i64), ReduceScatter, AllToAllV (uneven,
with zero-sized blocks), AllGather, AllGatherV, Broadcast and Barrier on every rank, checks
every element against a value each rank computes itself, and prints on rank 0 one row per
collective:
  collective, dtype, elements (per rank; AllToAllV: sent by rank 0; AllGatherV: gathered),
  ranks, result (OK/FAIL),
  time_us (median per call over --iters, slowest rank),
  algbw_GBps (bytes / time, bytes as nccl-tests count them: AllReduce and Broadcast the
  buffer, ReduceScatter the send buffer, AllGather(V) the receive buffer, AllToAllV the
  largest per-rank send volume).
The inputs are small integers, so every summation order gives the exact result and both
backends are checked exactly.

Flags:
  --backend=all|mpi|nccl  all (default): MPI, and NCCL when every rank has its own GPU
                          (otherwise NCCL is reported as skipped, with the reason);
                          nccl: fail if NCCL cannot run.
  --elements=N            elements per rank for each collective (default 1048576)
  --iters=K               timed calls per collective (default 5, after 1 warm-up call)
  --help                  this text
Exit status: 0 when every check passed, 1 when one failed or a backend could not start,
2 for bad flags.
)";

struct Flags {
  std::string backend = "all";
  int64_t elements = 1 << 20;
  int iters = 5;
};

bool ParseInt(const char* text, int64_t lo, int64_t* out) {
  char* end = nullptr;
  const long long v = std::strtoll(text, &end, 10);
  if (end == text || *end != '\0' || v < lo) return false;
  *out = v;
  return true;
}

// Returns 0 to run, 1 after --help, 2 for bad flags (the message is printed).
int ParseFlags(int argc, char** argv, Flags* flags, bool print) {
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    int64_t v = 0;
    if (arg == "--help" || arg == "-h") {
      if (print) std::fputs(kUsage, stdout);
      return 1;
    } else if (arg.rfind("--backend=", 0) == 0) {
      flags->backend = arg.substr(10);
      if (flags->backend != "all" && flags->backend != "mpi" && flags->backend != "nccl") {
        if (print)
          std::fprintf(stderr, "loom_selfcheck: --backend=%s: expected all, mpi or nccl\n",
                       flags->backend.c_str());
        return 2;
      }
    } else if (arg.rfind("--elements=", 0) == 0) {
      if (!ParseInt(arg.c_str() + 11, 1, &v)) {
        if (print)
          std::fprintf(stderr, "loom_selfcheck: %s: expected an integer >= 1\n", arg.c_str());
        return 2;
      }
      flags->elements = v;
    } else if (arg.rfind("--iters=", 0) == 0) {
      if (!ParseInt(arg.c_str() + 8, 1, &v) || v > 1000000) {
        if (print)
          std::fprintf(stderr, "loom_selfcheck: %s: expected an integer in [1, 1e6]\n",
                       arg.c_str());
        return 2;
      }
      flags->iters = static_cast<int>(v);
    } else {
      if (print)
        std::fprintf(stderr, "loom_selfcheck: unknown flag %s (see --help)\n", arg.c_str());
      return 2;
    }
  }
  return 0;
}

// The input of rank r at element i: a small integer (-2..2), exact in every dtype, so sums
// of up to 128 ranks are exact in any order, even in bf16.
int SmallInt(int r, int64_t i) {
  return static_cast<int>((3 * static_cast<int64_t>(r) + i) % 5) - 2;
}

void StoreDouble(DType dtype, void* buf, int64_t i, double v) {
  switch (dtype) {
    case DType::kF32:
      static_cast<float*>(buf)[i] = static_cast<float>(v);
      return;
    case DType::kF64:
      static_cast<double*>(buf)[i] = v;
      return;
    case DType::kBF16:
      static_cast<bf16*>(buf)[i] = FloatToBf16(static_cast<float>(v));
      return;
    case DType::kF16:
      static_cast<f16*>(buf)[i] = FloatToF16(static_cast<float>(v));
      return;
    case DType::kI32:
      static_cast<int32_t*>(buf)[i] = static_cast<int32_t>(v);
      return;
    case DType::kI64:
      static_cast<int64_t*>(buf)[i] = static_cast<int64_t>(v);
      return;
    case DType::kU8:
      static_cast<uint8_t*>(buf)[i] = static_cast<uint8_t>(v);
      return;
  }
}
double LoadDouble(DType dtype, const void* buf, int64_t i) {
  switch (dtype) {
    case DType::kF32:
      return static_cast<const float*>(buf)[i];
    case DType::kF64:
      return static_cast<const double*>(buf)[i];
    case DType::kBF16:
      return Bf16ToFloat(static_cast<const bf16*>(buf)[i]);
    case DType::kF16:
      return F16ToFloat(static_cast<const f16*>(buf)[i]);
    case DType::kI32:
      return static_cast<const int32_t*>(buf)[i];
    case DType::kI64:
      return static_cast<double>(static_cast<const int64_t*>(buf)[i]);
    case DType::kU8:
      return static_cast<const uint8_t*>(buf)[i];
  }
  return 0;
}

// A buffer where the communicator wants it (host for MPI, device for NCCL) plus a host copy.
class Buffer {
 public:
  Buffer(const Communicator& comm, int64_t elements, DType dtype)
      : comm_(comm),
        dtype_(dtype),
        bytes_(elements * DTypeSize(dtype)),
        host_(static_cast<size_t>(bytes_ / 8 + 1)) {
    if (comm.device().is_cuda()) {
      device_ = gpu::DeviceAlloc(static_cast<size_t>(bytes_), comm.stream());
    }
  }
  ~Buffer() {
    if (device_ != nullptr) gpu::DeviceFree(device_, comm_.stream());
  }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  // Where collectives read and write.
  char* data() { return device_ != nullptr ? static_cast<char*>(device_) : host(); }
  char* host() { return reinterpret_cast<char*>(host_.data()); }
  void Set(int64_t i, double v) { StoreDouble(dtype_, host(), i, v); }
  double Get(int64_t i) const {
    return LoadDouble(dtype_, reinterpret_cast<const char*>(host_.data()), i);
  }
  void Upload() {
    if (device_ != nullptr && bytes_ > 0) {
      gpu::MemcpyAsync(device_, host(), bytes_, gpu::CopyKind::kHostToDevice, comm_.stream());
      gpu::StreamSynchronize(comm_.stream());
    }
  }
  void Download() {
    if (device_ != nullptr && bytes_ > 0) {
      gpu::MemcpyAsync(host(), device_, bytes_, gpu::CopyKind::kDeviceToHost, comm_.stream());
      gpu::StreamSynchronize(comm_.stream());
    }
  }

 private:
  const Communicator& comm_;
  DType dtype_;
  int64_t bytes_;
  std::vector<uint64_t> host_;
  void* device_ = nullptr;
};

struct Row {
  std::string collective;
  DType dtype;
  int64_t elements;
  bool ok;
  double time_us;
  double bytes;
};

class SelfCheck {
 public:
  SelfCheck(Communicator* comm, const Flags& flags)
      : comm_(comm), flags_(flags), rank_(comm->rank()), size_(comm->size()) {}

  std::vector<Row> Run() {
    const int64_t n = flags_.elements;
    for (DType t : {DType::kF32, DType::kF64, DType::kBF16, DType::kI32, DType::kI64}) {
      AllReduce(t, ReduceOp::kSum, n);
    }
    AllReduce(DType::kF32, ReduceOp::kMax, n);
    ReduceScatter(DType::kF32, std::max<int64_t>(1, n / size_));
    AllToAllV(DType::kF32, n);
    AllGather(DType::kF32, std::max<int64_t>(1, n / size_));
    AllGatherV(DType::kI64, std::max<int64_t>(1, n / size_));
    Broadcast(DType::kF32, n);
    Barrier();
    return rows_;
  }

 private:
  // One warm-up call, then --iters timed calls; the median per-call time of the slowest rank.
  double Time(const std::function<void()>& call) {
    call();
    comm_->Synchronize();
    std::vector<double> times;
    for (int it = 0; it < flags_.iters; ++it) {
      comm_->Barrier();
      const double t0 = MPI_Wtime();
      call();
      comm_->Synchronize();
      times.push_back(MPI_Wtime() - t0);
    }
    std::nth_element(times.begin(), times.begin() + times.size() / 2, times.end());
    double median = times[times.size() / 2], slowest = 0;
    MPI_Allreduce(&median, &slowest, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    return slowest * 1e6;
  }

  // Every rank learns whether any rank saw a wrong element.
  bool AllOk(const std::string& name, DType dtype, int64_t bad) {
    int64_t total = 0;
    MPI_Allreduce(&bad, &total, 1, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD);
    LOG_IF(ERROR, bad > 0) << comm_->backend() << " " << name << " " << DTypeName(dtype) << ": "
                           << bad << " wrong elements on this rank";
    return total == 0;
  }

  void Add(const std::string& name, DType dtype, int64_t elements, int64_t bad, double time_us,
           double bytes) {
    const bool ok = AllOk(name, dtype, bad);
    rows_.push_back({name, dtype, elements, ok, time_us, bytes});
  }

  void AllReduce(DType dtype, ReduceOp op, int64_t n) {
    Buffer in(*comm_, n, dtype), out(*comm_, n, dtype);
    for (int64_t i = 0; i < n; ++i) in.Set(i, SmallInt(rank_, i));
    in.Upload();
    const double us = Time([&] { comm_->AllReduce(in.data(), out.data(), n, dtype, op); });
    out.Download();
    int64_t bad = 0;
    for (int64_t i = 0; i < n; ++i) {
      double want = op == ReduceOp::kSum ? 0.0 : -1e300;
      for (int r = 0; r < size_; ++r) {
        want =
            op == ReduceOp::kSum ? want + SmallInt(r, i) : std::max<double>(want, SmallInt(r, i));
      }
      bad += out.Get(i) != want;
    }
    const char* name = op == ReduceOp::kSum ? "AllReduce(sum)" : "AllReduce(max)";
    Add(name, dtype, n, bad, us, static_cast<double>(n * DTypeSize(dtype)));
  }

  void ReduceScatter(DType dtype, int64_t recv_count) {
    const int64_t n = size_ * recv_count;
    Buffer in(*comm_, n, dtype), out(*comm_, recv_count, dtype);
    for (int64_t i = 0; i < n; ++i) in.Set(i, SmallInt(rank_, i));
    in.Upload();
    const double us = Time(
        [&] { comm_->ReduceScatter(in.data(), out.data(), recv_count, dtype, ReduceOp::kSum); });
    out.Download();
    int64_t bad = 0;
    for (int64_t j = 0; j < recv_count; ++j) {
      double want = 0;
      for (int r = 0; r < size_; ++r) want += SmallInt(r, rank_ * recv_count + j);
      bad += out.Get(j) != want;
    }
    Add("ReduceScatter(sum)", dtype, n, bad, us, static_cast<double>(n * DTypeSize(dtype)));
  }

  // Rank s sends (s + d) % 3 parts of n / (2R) elements to rank d: uneven, zero for some pairs.
  void AllToAllV(DType dtype, int64_t n) {
    const int64_t unit = std::max<int64_t>(1, n / (2 * size_));
    auto count = [&](int s, int d) { return ((s + d) % 3) * unit; };
    std::vector<int64_t> sc(size_), sd(size_), rc(size_), rd(size_);
    int64_t st = 0, rt = 0, max_send = 0;
    for (int p = 0; p < size_; ++p) {
      sc[p] = count(rank_, p);
      rc[p] = count(p, rank_);
      sd[p] = st;
      rd[p] = rt;
      st += sc[p];
      rt += rc[p];
    }
    Buffer in(*comm_, st, dtype), out(*comm_, rt, dtype);
    for (int p = 0; p < size_; ++p) {
      for (int64_t j = 0; j < sc[p]; ++j) in.Set(sd[p] + j, (rank_ * 7 + p * 3 + j) % 1000);
    }
    in.Upload();
    const double us = Time([&] { comm_->AllToAllV(in.data(), sc, sd, out.data(), rc, rd, dtype); });
    out.Download();
    int64_t bad = 0;
    for (int p = 0; p < size_; ++p) {
      for (int64_t j = 0; j < rc[p]; ++j)
        bad += out.Get(rd[p] + j) != (p * 7 + rank_ * 3 + j) % 1000;
    }
    MPI_Allreduce(&st, &max_send, 1, MPI_INT64_T, MPI_MAX, MPI_COMM_WORLD);
    Add("AllToAllV", dtype, st, bad, us, static_cast<double>(max_send * DTypeSize(dtype)));
  }

  void AllGather(DType dtype, int64_t count) {
    Buffer in(*comm_, count, dtype), out(*comm_, size_ * count, dtype);
    for (int64_t i = 0; i < count; ++i) in.Set(i, (rank_ * 31 + i) % 1000);
    in.Upload();
    const double us = Time([&] { comm_->AllGather(in.data(), out.data(), count, dtype); });
    out.Download();
    int64_t bad = 0;
    for (int p = 0; p < size_; ++p) {
      for (int64_t i = 0; i < count; ++i) bad += out.Get(p * count + i) != (p * 31 + i) % 1000;
    }
    Add("AllGather", dtype, count, bad, us, static_cast<double>(size_ * count * DTypeSize(dtype)));
  }

  // Rank p contributes (p % 3) * count / 2 elements: zero on ranks 0, 3, 6, ... The table
  // shows the gathered total.
  void AllGatherV(DType dtype, int64_t count) {
    std::vector<int64_t> counts(size_), displs(size_);
    int64_t total = 0;
    for (int p = 0; p < size_; ++p) {
      counts[p] = (p % 3) * std::max<int64_t>(1, count / 2);
      displs[p] = total;
      total += counts[p];
    }
    Buffer in(*comm_, counts[rank_], dtype), out(*comm_, total, dtype);
    for (int64_t i = 0; i < counts[rank_]; ++i) in.Set(i, rank_ * 100000 + i);
    in.Upload();
    const double us = Time(
        [&] { comm_->AllGatherV(in.data(), counts[rank_], out.data(), counts, displs, dtype); });
    out.Download();
    int64_t bad = 0;
    for (int p = 0; p < size_; ++p) {
      for (int64_t i = 0; i < counts[p]; ++i) bad += out.Get(displs[p] + i) != p * 100000 + i;
    }
    Add("AllGatherV", dtype, total, bad, us, static_cast<double>(total * DTypeSize(dtype)));
  }

  void Broadcast(DType dtype, int64_t n) {
    const int root = size_ - 1;
    Buffer buf(*comm_, n, dtype);
    for (int64_t i = 0; i < n; ++i) buf.Set(i, rank_ == root ? (i * 13) % 1000 : -1);
    buf.Upload();
    const double us = Time([&] { comm_->Broadcast(buf.data(), n, dtype, root); });
    buf.Download();
    int64_t bad = 0;
    for (int64_t i = 0; i < n; ++i) bad += buf.Get(i) != (i * 13) % 1000;
    Add("Broadcast", dtype, n, bad, us, static_cast<double>(n * DTypeSize(dtype)));
  }

  // Barrier has no data: OK means it returned on every rank, --iters + 1 times.
  void Barrier() {
    const double us = Time([&] { comm_->Barrier(); });
    Add("Barrier", DType::kU8, 0, 0, us, 0);
  }

  Communicator* comm_;
  Flags flags_;
  int rank_;
  int size_;
  std::vector<Row> rows_;
};

void PrintTable(const std::string& backend, int size, const std::vector<Row>& rows) {
  std::printf("\n%s backend, %d rank(s)\n", backend.c_str(), size);
  std::printf("%-20s %-5s %10s %6s %-6s %12s %11s\n", "collective", "dtype", "elements", "ranks",
              "result", "time_us", "algbw_GBps");
  for (const Row& r : rows) {
    char bw[32] = "-";
    if (r.bytes > 0 && r.time_us > 0)
      std::snprintf(bw, sizeof(bw), "%.3f", r.bytes / r.time_us / 1e3);
    std::printf("%-20s %-5s %10" PRId64 " %6d %-6s %12.1f %11s\n", r.collective.c_str(),
                r.collective == "Barrier" ? "-" : DTypeName(r.dtype), r.elements, size,
                r.ok ? "OK" : "FAIL", r.time_us, bw);
  }
  std::fflush(stdout);
}

int Main(int argc, char** argv) {
  Flags flags;
  const char* env_rank = std::getenv("OMPI_COMM_WORLD_RANK");
  const bool first = env_rank == nullptr || std::strcmp(env_rank, "0") == 0;
  if (int rc = ParseFlags(argc, argv, &flags, first); rc != 0) return rc == 1 ? 0 : 2;

  StatusOr<Bootstrap> boot = InitDistributed(&argc, &argv);
  if (!boot.ok()) {
    LOG(ERROR) << "loom_selfcheck: " << boot.status();
    return 1;
  }
  bool all_ok = true;
  std::vector<Backend> backends;
  if (flags.backend != "nccl") backends.push_back(Backend::kMpi);
  if (flags.backend != "mpi") backends.push_back(Backend::kNccl);
  for (Backend backend : backends) {
    if (backend == Backend::kNccl && flags.backend == "all") {
      // Only try NCCL where it can work; say why not otherwise. Every rank decides alike.
      std::string why;
      if (!gpu::CudaAvailable()) {
        why = "no GPU (" + gpu::UnavailableReason() + ")";
      } else if (boot->local_size > gpu::DeviceCount()) {
        why = std::to_string(boot->local_size) + " ranks share " +
              std::to_string(gpu::DeviceCount()) + " GPU(s) on " + boot->host +
              "; NCCL needs one GPU per rank";
      }
      if (!AgreeOnStatus(why.empty() ? Status::Ok() : UnavailableError(why), MPI_COMM_WORLD).ok()) {
        if (boot->rank == 0) std::printf("\nnccl backend: skipped: %s\n", why.c_str());
        continue;
      }
    }
    StatusOr<std::unique_ptr<Communicator>> comm = CreateCommunicator(backend, *boot);
    if (!comm.ok()) {
      LOG_IF(ERROR, boot->rank == 0) << "loom_selfcheck: cannot create the " << BackendName(backend)
                                     << " communicator: " << comm.status();
      all_ok = false;
      continue;
    }
    SelfCheck check(comm->get(), flags);
    std::vector<Row> rows = check.Run();
    for (const Row& r : rows) all_ok = all_ok && r.ok;
    if (boot->rank == 0) PrintTable(BackendName(backend), boot->world_size, rows);
  }
  if (boot->rank == 0)
    std::printf("\nloom_selfcheck: %s\n", all_ok ? "all checks passed" : "FAILED");
  Status fin = FinalizeDistributed(*boot);
  if (!fin.ok()) {
    LOG(ERROR) << fin;
    return 1;
  }
  return all_ok ? 0 : 1;
}

}  // namespace
}  // namespace loom::comm

int main(int argc, char** argv) { return loom::comm::Main(argc, argv); }
