// Status and StatusOr<T>: how setup code (configs, files, shapes, communicator init,
// checkpoints) reports failure without exceptions. Step code (inside a training step) does
// not return Status: it CHECKs, and a failure there aborts the whole job (logging.h).
//
//   Status s = LoadThing(path);
//   if (!s.ok()) LOG(ERROR) << s;                    // "InvalidArgument: a.pbtxt:3:7: ..."
//   LOOM_RETURN_IF_ERROR(Validate(cfg));             // propagate
//   LOOM_ASSIGN_OR_RETURN(auto table, Open(path));   // unwrap a StatusOr
//
// A Status is one pointer: OK costs nothing to create, copy or test.
#ifndef LOOM_CORE_STATUS_H_
#define LOOM_CORE_STATUS_H_

#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <utility>

#include <glog/logging.h>

namespace loom {

enum class StatusCode {
  kOk = 0,
  kInvalidArgument,     // bad config value, bad flag, malformed input record
  kNotFound,            // missing file, missing tensor, missing field
  kOutOfRange,          // id out of range, read past the end
  kFailedPrecondition,  // operation not allowed in the current state
  kDataLoss,            // checksum mismatch, truncated or corrupted file
  kResourceExhausted,   // a plan does not fit the memory budget
  kUnimplemented,       // a valid request this build cannot serve (e.g. CUDA without a GPU)
  kUnavailable,         // a device or peer that cannot be reached
  kInternal,            // a broken invariant: a bug in Loom
};

const char* StatusCodeName(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;  // OK
  Status(StatusCode code, std::string message);

  static Status Ok() { return Status(); }

  // Returns true iff the status indicates success.
  bool ok() const { return rep_ == nullptr; }
  StatusCode code() const { return rep_ ? rep_->code : StatusCode::kOk; }
  const std::string& message() const;
  // "OK" or "<CodeName>: <message>".
  std::string ToString() const;

  // Returns a copy whose message is "<context>: <message>" (no-op on OK). Used to add the
  // file, field or rank at fault as an error travels outwards.
  Status WithContext(const std::string& context) const;

 private:
  struct Rep {
    StatusCode code;
    std::string message;
  };
  std::shared_ptr<const Rep> rep_;
};

std::ostream& operator<<(std::ostream& os, const Status& s);

// Named constructors, one per code.
Status InvalidArgumentError(std::string message);
Status NotFoundError(std::string message);
Status OutOfRangeError(std::string message);
Status FailedPreconditionError(std::string message);
Status DataLossError(std::string message);
Status ResourceExhaustedError(std::string message);
Status UnimplementedError(std::string message);
Status UnavailableError(std::string message);
Status InternalError(std::string message);

// Holds either a value or a non-OK Status. value() on an error is a fatal bug (CHECK).
template <typename T>
class [[nodiscard]] StatusOr {
 public:
  StatusOr(const Status& status) : status_(status) {  // NOLINT: implicit by design
    CHECK(!status_.ok()) << "StatusOr constructed from an OK Status without a value";
  }
  StatusOr(T value) : value_(std::move(value)) {}  // NOLINT: implicit by design

  bool ok() const { return status_.ok(); }
  const Status& status() const { return status_; }

  T& value() & {
    CHECK(ok()) << "StatusOr::value() on error: " << status_;
    return *value_;
  }
  const T& value() const& {
    CHECK(ok()) << "StatusOr::value() on error: " << status_;
    return *value_;
  }
  T&& value() && {
    CHECK(ok()) << "StatusOr::value() on error: " << status_;
    return std::move(*value_);
  }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

 private:
  Status status_;
  std::optional<T> value_;
};

}  // namespace loom

#define LOOM_STATUS_CONCAT_INNER_(a, b) a##b
#define LOOM_STATUS_CONCAT_(a, b) LOOM_STATUS_CONCAT_INNER_(a, b)

// Returns from the enclosing function if `expr` (a Status) is not OK.
#define LOOM_RETURN_IF_ERROR(expr)               \
  do {                                           \
    ::loom::Status loom_status_ = (expr);        \
    if (!loom_status_.ok()) return loom_status_; \
  } while (0)

// `lhs` = value of `rexpr` (a StatusOr), or returns its Status from the enclosing function.
#define LOOM_ASSIGN_OR_RETURN(lhs, rexpr) \
  LOOM_ASSIGN_OR_RETURN_IMPL_(LOOM_STATUS_CONCAT_(loom_statusor_, __LINE__), lhs, rexpr)
#define LOOM_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, rexpr) \
  auto tmp = (rexpr);                                \
  if (!tmp.ok()) return tmp.status();                \
  lhs = std::move(tmp).value()

// CHECKs that a Status is OK; for places where an error is a bug (tests, tools' last resort).
#define LOOM_CHECK_OK(expr)                              \
  do {                                                   \
    ::loom::Status loom_status_ = (expr);                \
    CHECK(loom_status_.ok()) << loom_status_.ToString(); \
  } while (0)

#endif  // LOOM_CORE_STATUS_H_
