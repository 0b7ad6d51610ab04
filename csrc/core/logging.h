// Logging: glog with the rank in every line, and a fatal error on one rank ending the job.
//
// Every line is prefixed "[r<rank>/<world> <host>] I1128 05:10:00.123456 file.cc:42] ...".
// A fatal error (LOG(FATAL), a failed CHECK, LOOM_CUDA_CHECK, ...) prints its message and
// stack on the failing rank and then calls MPI_Abort, so the other ranks end within seconds
// instead of hanging in their next collective.
//
// Progress lines belong on rank 0 only: LOOM_LOG_RANK0(INFO) << "step " << step;
#ifndef LOOM_CORE_LOGGING_H_
#define LOOM_CORE_LOGGING_H_

#include <string>

#include <glog/logging.h>

namespace loom {

// Initializes glog once per process: logs go to stderr (never to files under /tmp, unless
// GLOG_log_dir is set), with the rank prefix, and installs the job-wide failure function.
// The rank is read from the launcher's environment (Open MPI, PMI, Slurm) until SetLogRank()
// is called. Safe to call more than once.
void InitLogging(const char* argv0);

// Sets the rank and world size shown in the prefix (called by the communicator bootstrap).
void SetLogRank(int rank, int world_size);
int LogRank();

// "rank 1/4 on host-a" — for error messages.
std::string RankAndHost();

// Ends the whole job: MPI_Abort when MPI is initialized, std::abort otherwise. What the
// glog failure function calls; also usable directly after an error was logged.
[[noreturn]] void AbortJob(int exit_code = 1);

}  // namespace loom

#define LOOM_LOG_RANK0(severity) LOG_IF(severity, ::loom::LogRank() == 0)

#endif  // LOOM_CORE_LOGGING_H_
