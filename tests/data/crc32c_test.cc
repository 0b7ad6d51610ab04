#include "csrc/data/crc32c.h"

#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace loom::data {
namespace {

TEST(Crc32cTest, StandardCheckValues) {
  // RFC 3720 (iSCSI) B.4 and the common "123456789" check value.
  EXPECT_EQ(Crc32c("123456789", 9), 0xE3069283u);
  std::vector<uint8_t> zeros(32, 0), ones(32, 0xff), inc(32);
  for (int i = 0; i < 32; ++i) inc[i] = static_cast<uint8_t>(i);
  EXPECT_EQ(Crc32c(zeros.data(), 32), 0x8A9136AAu);
  EXPECT_EQ(Crc32c(ones.data(), 32), 0x62A8AB43u);
  EXPECT_EQ(Crc32c(inc.data(), 32), 0x46DD794Eu);
  EXPECT_EQ(Crc32c("", 0), 0u);
}

TEST(Crc32cTest, HardwareMatchesPortableAndExtendIsConcatenation) {
  std::string data;
  for (int i = 0; i < 1000; ++i) data.push_back(static_cast<char>((i * 7919) >> 3));
  for (size_t start : {0, 1, 3, 7}) {
    for (size_t n : {0, 1, 5, 8, 9, 63, 64, 500}) {
      const char* p = data.data() + start;
      EXPECT_EQ(Crc32cExtend(0, p, n), Crc32cExtendPortable(0, p, n)) << start << " " << n;
      const uint32_t whole = Crc32c(p, n);
      const size_t half = n / 2;
      EXPECT_EQ(Crc32cExtend(Crc32c(p, half), p + half, n - half), whole);
    }
  }
}

}  // namespace
}  // namespace loom::data
