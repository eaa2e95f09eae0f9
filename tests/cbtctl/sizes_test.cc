#include "cbtctl/sizes.h"

#include <gtest/gtest.h>

namespace cbt::cbtctl {
namespace {

uint64_t Size(const std::string& text) {
  auto value = ParseSize(text, "size");
  EXPECT_TRUE(value.ok()) << text << ": " << value.status();
  return value.value_or(0);
}

TEST(ParseSizeTest, PlainBytes) {
  EXPECT_EQ(Size("0"), 0u);
  EXPECT_EQ(Size("512"), 512u);
  EXPECT_EQ(Size("512B"), 512u);
  EXPECT_EQ(Size("18446744073709551615"), UINT64_MAX);
}

TEST(ParseSizeTest, BinarySuffixes) {
  EXPECT_EQ(Size("4K"), 4096u);
  EXPECT_EQ(Size("4k"), 4096u);
  EXPECT_EQ(Size("4KB"), 4096u);
  EXPECT_EQ(Size("4KiB"), 4096u);
  EXPECT_EQ(Size("4kib"), 4096u);
  EXPECT_EQ(Size("64M"), 64ull << 20);
  EXPECT_EQ(Size("1G"), 1ull << 30);
  EXPECT_EQ(Size("2T"), 2ull << 40);
  EXPECT_EQ(Size("1P"), 1ull << 50);
  EXPECT_EQ(Size("15E"), 15ull << 60);
  EXPECT_EQ(Size("16777215T"), 16777215ull << 40);
}

TEST(ParseSizeTest, RejectsGarbage) {
  for (const char* bad : {"", "K", "-1", "+1", " 1", "1 ", "1 K", "1.5G", "0x10", "1X", "1KX",
                          "1Ki", "1KBB", "1MiBs", "12abc", "G1"}) {
    auto value = ParseSize(bad, "--limit");
    EXPECT_FALSE(value.ok()) << "'" << bad << "' parsed as " << value.value_or(0);
    if (!value.ok()) {
      EXPECT_EQ(value.status().code(), absl::StatusCode::kInvalidArgument);
      EXPECT_NE(value.status().message().find("--limit"), absl::string_view::npos);
    }
  }
}

TEST(ParseSizeTest, RejectsOverflow) {
  EXPECT_FALSE(ParseSize("18446744073709551616", "x").ok());
  EXPECT_FALSE(ParseSize("99999999999999999999999", "x").ok());
  EXPECT_FALSE(ParseSize("16777216T", "x").ok());
  EXPECT_FALSE(ParseSize("16E", "x").ok());
  EXPECT_FALSE(ParseSize("17179869184G", "x").ok());
  EXPECT_TRUE(ParseSize("17179869183G", "x").ok());
}

TEST(ParseRangeTest, OffsetAndLength) {
  auto range = ParseRange("1M:64K");
  ASSERT_TRUE(range.ok()) << range.status();
  EXPECT_EQ(range->offset, 1u << 20);
  EXPECT_EQ(range->length, 64u << 10);
  range = ParseRange("0:512");
  ASSERT_TRUE(range.ok());
  EXPECT_EQ(range->offset, 0u);
  EXPECT_EQ(range->length, 512u);
}

TEST(ParseRangeTest, RejectsBadRanges) {
  for (const char* bad : {"", "1M", ":1", "1:", "1:0", "a:1", "1:b", "1:2:3", "-1:5", "1M-64K",
                          "18446744073709551615:1", "16E:1K"}) {
    EXPECT_FALSE(ParseRange(bad).ok()) << bad;
  }
  EXPECT_TRUE(ParseRange("18446744073709551614:1").ok());
}

TEST(HumanSizeTest, Units) {
  EXPECT_EQ(HumanSize(0), "0 B");
  EXPECT_EQ(HumanSize(1023), "1023 B");
  EXPECT_EQ(HumanSize(1024), "1.0 KiB");
  EXPECT_EQ(HumanSize(1536), "1.5 KiB");
  EXPECT_EQ(HumanSize(64ull << 20), "64.0 MiB");
  EXPECT_EQ(HumanSize(3ull << 30), "3.0 GiB");
  EXPECT_EQ(HumanSize(5ull << 40), "5.0 TiB");
  EXPECT_EQ(HumanSize(UINT64_MAX), "16.0 EiB");
}

TEST(HumanSizeTest, NeverPrints1024OfAUnit) {
  EXPECT_EQ(HumanSize((1ull << 20) - 1), "1.0 MiB");
  EXPECT_EQ(HumanSize((1ull << 30) - 1), "1.0 GiB");
  EXPECT_EQ(HumanSize(1023ull << 10), "1023.0 KiB");
}

TEST(FormatSizeTest, BytesAndHumanUnits) {
  EXPECT_EQ(FormatSize(67108864), "67108864 (64.0 MiB)");
  EXPECT_EQ(FormatSize(512), "512");
  EXPECT_EQ(FormatSize(0), "0");
  EXPECT_EQ(FormatSize(1024), "1024 (1.0 KiB)");
}

TEST(PercentTest, TwoDecimals) {
  EXPECT_EQ(Percent(1, 8), "12.50%");
  EXPECT_EQ(Percent(0, 8), "0.00%");
  EXPECT_EQ(Percent(8, 8), "100.00%");
  EXPECT_EQ(Percent(1, 0), "n/a");
}

}  // namespace
}  // namespace cbt::cbtctl
