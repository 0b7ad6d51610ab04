#include "csrc/core/status.h"

#include <gtest/gtest.h>

namespace loom {
namespace {

Status FailIfNegative(int x) {
  if (x < 0) return InvalidArgumentError("x must be >= 0, got " + std::to_string(x));
  return Status::Ok();
}

StatusOr<int> Twice(int x) {
  LOOM_RETURN_IF_ERROR(FailIfNegative(x));
  return 2 * x;
}

Status UseTwice(int x, int* out) {
  LOOM_ASSIGN_OR_RETURN(*out, Twice(x));
  return Status::Ok();
}

TEST(StatusTest, OkIsDefaultAndCheap) {
  Status s;
  EXPECT_TRUE(s.ok());
  EXPECT_EQ(s.code(), StatusCode::kOk);
  EXPECT_EQ(s.ToString(), "OK");
  EXPECT_EQ(s.message(), "");
}

TEST(StatusTest, ErrorCarriesCodeAndMessage) {
  Status s = NotFoundError("no such file: a.pbtxt");
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.code(), StatusCode::kNotFound);
  EXPECT_EQ(s.ToString(), "NotFound: no such file: a.pbtxt");
  EXPECT_EQ(s.WithContext("loading config").ToString(),
            "NotFound: loading config: no such file: a.pbtxt");
  EXPECT_TRUE(Status().WithContext("ignored").ok());
}

TEST(StatusTest, MacrosPropagate) {
  int out = 0;
  EXPECT_TRUE(UseTwice(21, &out).ok());
  EXPECT_EQ(out, 42);
  Status s = UseTwice(-1, &out);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "x must be >= 0, got -1");
  EXPECT_EQ(out, 42);  // untouched on error
}

TEST(StatusTest, StatusOrValueOnErrorIsFatal) {
  StatusOr<int> v = Twice(-3);
  EXPECT_FALSE(v.ok());
  EXPECT_DEATH((void)v.value(), "StatusOr::value\\(\\) on error: InvalidArgument");
}

}  // namespace
}  // namespace loom
