#include "csrc/data/bad_records.h"

#include <glog/logging.h>

namespace loom::data {

Status BadRecordCounter::Add(int64_t n, const std::string& message, StatusCode code) {
  count_ += n;
  ++events_;
  if (policy_ == proto::BAD_RECORDS_FAIL) return Status(code, message);
  if (policy_ == proto::BAD_RECORDS_FAIL_PAST_THRESHOLD && count_ > max_bad_) {
    return Status(code, "more than max_bad_records (" + std::to_string(max_bad_) +
                            ") bad records (" + std::to_string(count_) + "); the last: " + message);
  }
  if (events_ <= kLogFirst || events_ % 1000 == 0) {
    LOG(WARNING) << "skipping bad record" << (n > 1 ? "s" : "") << " (" << count_
                 << " so far): " << message;
  }
  return Status::Ok();
}

}  // namespace loom::data
