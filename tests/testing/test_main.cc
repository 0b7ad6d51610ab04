// gtest main for single-process tests: glog to stderr with the failure function installed.
#include <gtest/gtest.h>

#include "csrc/core/logging.h"

int main(int argc, char** argv) {
  testing::InitGoogleTest(&argc, argv);
  loom::InitLogging(argv[0]);
  return RUN_ALL_TESTS();
}
