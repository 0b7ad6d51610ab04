// Helpers for CUDA tests: they are always compiled and report "skipped" (never "passed")
// where no GPU can be used.
#ifndef LOOM_TESTS_TESTING_GPU_TEST_UTIL_H_
#define LOOM_TESTS_TESTING_GPU_TEST_UTIL_H_

#include <gtest/gtest.h>

#include "csrc/core/gpu.h"

#define LOOM_SKIP_WITHOUT_GPU()                                              \
  do {                                                                       \
    if (!::loom::gpu::CudaAvailable()) {                                     \
      GTEST_SKIP() << "no usable GPU: " << ::loom::gpu::UnavailableReason(); \
    }                                                                        \
  } while (0)

#endif  // LOOM_TESTS_TESTING_GPU_TEST_UTIL_H_
