#include "csrc/core/file_io.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace loom {

std::string ErrnoText() { return std::strerror(errno); }

Status FsyncPath(const std::string& path, bool directory) {
  const int fd = ::open(path.c_str(), directory ? (O_RDONLY | O_DIRECTORY) : O_RDONLY);
  if (fd < 0) return InternalError(path + ": cannot open to fsync: " + ErrnoText());
  const int rc = ::fsync(fd);
  const std::string err = rc != 0 ? ErrnoText() : "";
  ::close(fd);
  if (rc != 0) return InternalError(path + ": fsync failed: " + err);
  return Status::Ok();
}

Status WriteFileDurable(const std::string& path, const std::string& bytes) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) return InternalError(path + ": cannot create: " + ErrnoText());
  Status st = PwriteFull(fd, bytes.data(), bytes.size(), 0, path);
  if (st.ok() && ::fsync(fd) != 0) st = InternalError(path + ": fsync failed: " + ErrnoText());
  if (::close(fd) != 0 && st.ok()) st = InternalError(path + ": close failed: " + ErrnoText());
  return st;
}

StatusOr<std::string> ReadFileToString(const std::string& path, const std::string& what) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) {
    if (errno == ENOENT) return NotFoundError(what + ": missing");
    return InternalError(what + ": cannot open: " + ErrnoText());
  }
  std::string out;
  char buf[1 << 16];
  while (true) {
    const ssize_t r = ::read(fd, buf, sizeof(buf));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      const std::string err = ErrnoText();
      ::close(fd);
      return InternalError(what + ": read failed: " + err);
    }
    if (r == 0) break;
    out.append(buf, static_cast<size_t>(r));
  }
  ::close(fd);
  return out;
}

Status PreadFull(int fd, void* out, uint64_t n, uint64_t offset, const std::string& what) {
  char* p = static_cast<char*>(out);
  uint64_t done = 0;
  while (done < n) {
    const ssize_t r = ::pread(fd, p + done, n - done, static_cast<off_t>(offset + done));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return InternalError(what + ": read failed: " + ErrnoText());
    if (r == 0) {
      return DataLossError(what + ": the file ends at byte " + std::to_string(offset + done) +
                           ", before byte " + std::to_string(offset + n) + " (truncated)");
    }
    done += static_cast<uint64_t>(r);
  }
  return Status::Ok();
}

Status PwriteFull(int fd, const void* data, uint64_t n, uint64_t offset, const std::string& what) {
  const char* p = static_cast<const char*>(data);
  uint64_t done = 0;
  while (done < n) {
    const ssize_t w = ::pwrite(fd, p + done, n - done, static_cast<off_t>(offset + done));
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return InternalError(what + ": write failed: " + ErrnoText());
    done += static_cast<uint64_t>(w);
  }
  return Status::Ok();
}

}  // namespace loom
