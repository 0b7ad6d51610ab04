// LOOM_MPI_CHECK(call): runs an MPI call and, if it does not return MPI_SUCCESS, ends the whole
// job with one line naming the call, MPI's error string, the rank and the host:
//
//   F... mpi_communicator.cc:120] MPI error in MPI_Bcast(buf, n, MPI_INT, root, comm_):
//       MPI_ERR_ROOT: invalid root (error 8, rank 1/4 on host-a)
//
// LOG(FATAL) runs the failure function installed by InitLogging (logging.h), which calls
// MPI_Abort, so the other ranks end too instead of hanging in their next collective.
//
// MPI only *returns* errors on communicators whose error handler is MPI_ERRORS_RETURN; the
// default (MPI_ERRORS_ARE_FATAL) aborts inside the library with a less helpful message.
// MpiCommunicator sets MPI_ERRORS_RETURN on its own communicator so this macro sees every error.
#ifndef LOOM_COMM_MPI_CHECK_H_
#define LOOM_COMM_MPI_CHECK_H_

#include <string>

#include <glog/logging.h>
#include <mpi.h>

#include "csrc/core/logging.h"

namespace loom::comm {

// "MPI_ERR_ROOT: invalid root" for an MPI error code (class name first, when MPI knows it).
inline std::string MpiErrorString(int code) {
  char text[MPI_MAX_ERROR_STRING] = {0};
  int len = 0;
  if (MPI_Error_string(code, text, &len) != MPI_SUCCESS) {
    return "unknown MPI error " + std::to_string(code);
  }
  return std::string(text, static_cast<size_t>(len));
}

}  // namespace loom::comm

#define LOOM_MPI_CHECK(call)                                                                 \
  do {                                                                                       \
    const int loom_mpi_rc_ = (call);                                                         \
    if (loom_mpi_rc_ != MPI_SUCCESS) {                                                       \
      LOG(FATAL) << "MPI error in " #call ": " << ::loom::comm::MpiErrorString(loom_mpi_rc_) \
                 << " (error " << loom_mpi_rc_ << ", " << ::loom::RankAndHost() << ")";      \
    }                                                                                        \
  } while (0)

#endif  // LOOM_COMM_MPI_CHECK_H_
