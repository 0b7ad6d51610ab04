// Counting bad records under a BadRecordPolicy (data.proto), shared by the converters
// (malformed text lines, reported as file:line) and the reader (damaged blocks, file:block).
#ifndef LOOM_DATA_BAD_RECORDS_H_
#define LOOM_DATA_BAD_RECORDS_H_

#include <cstdint>
#include <string>

#include "csrc/core/status.h"
#include "csrc/proto/data.pb.h"

namespace loom::data {

class BadRecordCounter {
 public:
  BadRecordCounter(proto::BadRecordPolicy policy, int64_t max_bad_records)
      : policy_(policy), max_bad_(max_bad_records) {}

  // Counts `n` bad records described by `message` (which names the file and line or block).
  // Logs the first kLogFirst messages (then every 1000th). Returns OK when the records are to be
  // skipped, or the error that must stop the job:
  //   BAD_RECORDS_FAIL:                the message itself (InvalidArgument or `code`)
  //   BAD_RECORDS_FAIL_PAST_THRESHOLD: "more than max_bad_records (10) bad records; the last:
  //                                     <message>" once the count exceeds the threshold
  Status Add(int64_t n, const std::string& message, StatusCode code = StatusCode::kInvalidArgument);

  int64_t count() const { return count_; }
  void set_count(int64_t count) { count_ = count; }
  proto::BadRecordPolicy policy() const { return policy_; }
  int64_t max_bad_records() const { return max_bad_; }

  static constexpr int64_t kLogFirst = 20;

 private:
  proto::BadRecordPolicy policy_;
  int64_t max_bad_;
  int64_t count_ = 0;
  int64_t events_ = 0;
};

}  // namespace loom::data

#endif  // LOOM_DATA_BAD_RECORDS_H_
