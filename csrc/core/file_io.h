// POSIX file helpers for the files whose durability matters (checkpoints, exports): every call
// retries EINTR, reads and writes everything it was asked to, and returns a Status whose message
// starts with the file (or the caller's `what`) and ends with the system's reason.
#ifndef LOOM_CORE_FILE_IO_H_
#define LOOM_CORE_FILE_IO_H_

#include <cstdint>
#include <string>

#include "csrc/core/status.h"

namespace loom {

// strerror(errno), read at the call.
std::string ErrnoText();

// fsync(2) of a file or (directory = true) of a directory, which makes a rename inside it
// durable.
Status FsyncPath(const std::string& path, bool directory);

// Creates or truncates `path` (mode 0644), writes `bytes`, fsyncs and closes it.
Status WriteFileDurable(const std::string& path, const std::string& bytes);

// The whole file. `what` names it in messages; a missing file is NotFound "<what>: missing".
StatusOr<std::string> ReadFileToString(const std::string& path, const std::string& what);

// Exactly n bytes at `offset` of an open descriptor. A file that ends first is DataLoss
// "<what>: the file ends at byte X, before byte Y (truncated)".
Status PreadFull(int fd, void* out, uint64_t n, uint64_t offset, const std::string& what);

// Exactly n bytes written at `offset` of an open descriptor.
Status PwriteFull(int fd, const void* data, uint64_t n, uint64_t offset, const std::string& what);

}  // namespace loom

#endif  // LOOM_CORE_FILE_IO_H_
