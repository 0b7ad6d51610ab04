// Line reading across buffer boundaries, field splitting with quotes, strict number parsing.
#include "csrc/data/text_input.h"

#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "tests/data/data_test_util.h"

namespace loom::data {
namespace {

using testing::TempDir;

TEST(LineReaderTest, LinesSpanningTheBufferAndLongerThanItComeBackWhole) {
  TempDir tmp;
  // ~3.5 MiB: many short lines, one line longer than the 1 MiB buffer, \r\n endings, and a
  // last line without a newline.
  std::vector<std::string> want;
  std::string text;
  for (int i = 0; i < 40000; ++i) {
    std::string line = std::to_string(i) + "," + std::string(i % 97, 'a' + i % 26);
    if (i == 20000) line = std::string(1500000, 'x');
    want.push_back(line);
    text += line + (i % 3 == 0 ? "\r\n" : "\n");
  }
  want.push_back("last,line");
  text += "last,line";
  testing::WriteFile(tmp / "t.csv", text);
  auto r = LineReader::Open(tmp / "t.csv");
  ASSERT_TRUE(r.ok());
  std::string_view line;
  size_t n = 0;
  while ((*r)->Next(&line)) {
    ASSERT_LT(n, want.size());
    ASSERT_EQ(line, want[n]) << "line " << n + 1;
    ASSERT_EQ((*r)->line_number(), static_cast<int64_t>(n + 1));
    ++n;
  }
  EXPECT_TRUE((*r)->status().ok());
  EXPECT_EQ(n, want.size());
  EXPECT_EQ((*r)->bytes_consumed(), static_cast<int64_t>(text.size()));
  EXPECT_EQ((*r)->Where(), tmp / "t.csv:40001");
}

TEST(SplitFieldsTest, DelimitersQuotesAndEmptyFields) {
  std::vector<std::string_view> f;
  std::vector<std::string> scratch;
  ASSERT_TRUE(SplitFields("a,,\"b,c\",\"say \"\"hi\"\"\",", ',', &f, &scratch).ok());
  ASSERT_EQ(f.size(), 5u);
  EXPECT_EQ(f[0], "a");
  EXPECT_EQ(f[1], "");
  EXPECT_EQ(f[2], "b,c");
  EXPECT_EQ(f[3], "say \"hi\"");
  EXPECT_EQ(f[4], "");
  ASSERT_TRUE(SplitFields("x\t\"\"\ty", '\t', &f, &scratch).ok());
  EXPECT_EQ(f.size(), 3u);
  EXPECT_EQ(f[1], "");
  EXPECT_FALSE(SplitFields("a,\"open", ',', &f, &scratch).ok());
  EXPECT_FALSE(SplitFields("\"a\"b,c", ',', &f, &scratch).ok());
  std::vector<std::string_view> list;
  SplitList("", '^', &list);
  EXPECT_TRUE(list.empty());
  SplitList("1^^2", '^', &list);
  EXPECT_EQ(list.size(), 3u);
}

TEST(ParseTest, NumbersMustBeWhole) {
  int64_t i;
  double d;
  EXPECT_TRUE(ParseInt64(" 42 ", 10, &i).ok());
  EXPECT_EQ(i, 42);
  EXPECT_TRUE(ParseInt64("-7", 10, &i).ok());
  EXPECT_EQ(i, -7);
  EXPECT_TRUE(ParseInt64("68fd1e64", 16, &i).ok());
  EXPECT_EQ(i, 0x68fd1e64);
  for (const char* bad : {"", "12a", "1.5", "9223372036854775808", "--1", "1 2"}) {
    EXPECT_FALSE(ParseInt64(bad, 10, &i).ok()) << bad;
  }
  EXPECT_TRUE(ParseDouble("1e3", &d).ok());
  EXPECT_EQ(d, 1000.0);
  EXPECT_TRUE(ParseDouble("-0.25", &d).ok());
  EXPECT_EQ(d, -0.25);
  for (const char* bad : {"", "abc", "1.2.3", "nan", "inf", "1e999", "0x10"}) {
    EXPECT_FALSE(ParseDouble(bad, &d).ok()) << bad;
  }
  EXPECT_EQ(UnescapeTsv(EscapeTsv("a\tb\\c\nd")), "a\tb\\c\nd");
  EXPECT_EQ(HumanCount(1234567), "1.23M");
}

}  // namespace
}  // namespace loom::data
