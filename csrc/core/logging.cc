#include "csrc/core/logging.h"

#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <iomanip>
#include <mutex>

#include <mpi.h>

namespace loom {
namespace {

std::atomic<int> g_rank{-1};
std::atomic<int> g_world{-1};
char g_host[64] = "?";

int EnvInt(const char* name) {
  const char* v = std::getenv(name);
  return v ? std::atoi(v) : -1;
}

void RankFromEnvironment() {
  for (const char* name : {"OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", "SLURM_PROCID"}) {
    if (int r = EnvInt(name); r >= 0) {
      g_rank = r;
      break;
    }
  }
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_NTASKS"}) {
    if (int w = EnvInt(name); w > 0) {
      g_world = w;
      break;
    }
  }
}

void PrefixFormatter(std::ostream& s, const google::LogMessageInfo& l, void*) {
  s << "[r" << (g_rank >= 0 ? g_rank.load() : 0) << "/" << (g_world > 0 ? g_world.load() : 1) << " "
    << g_host << "] " << l.severity[0] << std::setw(2) << std::setfill('0') << 1 + l.time.month()
    << std::setw(2) << l.time.day() << ' ' << std::setw(2) << l.time.hour() << ':' << std::setw(2)
    << l.time.min() << ':' << std::setw(2) << l.time.sec() << "." << std::setw(6) << l.time.usec()
    << std::setfill(' ') << ' ' << l.filename << ':' << l.line_number << "]";
}

void FailureFunction() {
  // glog has already written the message and the stack trace. Make sure they are out before
  // the other ranks are torn down, then end the job.
  std::fflush(stderr);
  AbortJob(1);
}

}  // namespace

void InitLogging(const char* argv0) {
  static std::once_flag once;
  std::call_once(once, [argv0] {
    gethostname(g_host, sizeof(g_host) - 1);
    RankFromEnvironment();
    if (!std::getenv("GLOG_log_dir")) FLAGS_logtostderr = true;
    FLAGS_colorlogtostderr = false;
    google::InitGoogleLogging(argv0 ? argv0 : "loom", &PrefixFormatter, nullptr);
    google::InstallFailureFunction(&FailureFunction);
  });
}

void SetLogRank(int rank, int world_size) {
  g_rank = rank;
  g_world = world_size;
}

int LogRank() { return g_rank >= 0 ? g_rank.load() : 0; }

std::string RankAndHost() {
  return "rank " + std::to_string(LogRank()) + "/" +
         std::to_string(g_world > 0 ? g_world.load() : 1) + " on " + g_host;
}

void AbortJob(int exit_code) {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (initialized && !finalized) {
    std::fprintf(stderr,
                 "[r%d] loom: aborting the whole job (MPI_Abort) after a fatal error on %s\n",
                 LogRank(), RankAndHost().c_str());
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, exit_code);
  }
  std::abort();
}

}  // namespace loom
