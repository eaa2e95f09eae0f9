#include "core/generation_id.h"

#include <set>
#include <string>

#include "gtest/gtest.h"

namespace cbt {
namespace {

TEST(UuidTest, ToStringIsCanonicalLowerCase) {
  Uuid uuid;
  for (int i = 0; i < 16; ++i) uuid.bytes[i] = static_cast<uint8_t>(i * 0x11);
  EXPECT_EQ(uuid.ToString(), "00112233-4455-6677-8899-aabbccddeeff");
  EXPECT_FALSE(uuid.is_nil());
  EXPECT_TRUE(Uuid{}.is_nil());
  EXPECT_EQ(Uuid{}.ToString(), "00000000-0000-0000-0000-000000000000");
  Uuid last_byte;
  last_byte.bytes[15] = 1;
  EXPECT_FALSE(last_byte.is_nil());
}

TEST(UuidTest, ParseKnownText) {
  auto uuid = ParseUuid("123e4567-e89b-42d3-a456-426614174000");
  ASSERT_TRUE(uuid.ok()) << uuid.status();
  const uint8_t expected[16] = {0x12, 0x3e, 0x45, 0x67, 0xe8, 0x9b, 0x42, 0xd3,
                                0xa4, 0x56, 0x42, 0x66, 0x14, 0x17, 0x40, 0x00};
  for (int i = 0; i < 16; ++i) EXPECT_EQ(uuid->bytes[i], expected[i]) << i;
}

TEST(UuidTest, UpperCaseIsAcceptedAndPrintedLowerCase) {
  auto uuid = ParseUuid("ABCDEF01-2345-4789-ABCD-EF0123456789");
  ASSERT_TRUE(uuid.ok()) << uuid.status();
  EXPECT_EQ(uuid->ToString(), "abcdef01-2345-4789-abcd-ef0123456789");
  auto mixed = ParseUuid("abcdef01-2345-4789-AbCd-eF0123456789");
  ASSERT_TRUE(mixed.ok());
  EXPECT_EQ(*mixed, *uuid);
}

TEST(UuidTest, RandomRoundTrip) {
  std::set<std::string> seen;
  for (int i = 0; i < 1000; ++i) {
    const Uuid uuid = NewRandomUuid();
    EXPECT_FALSE(uuid.is_nil());
    EXPECT_EQ(uuid.bytes[6] >> 4, 4) << "version nibble";
    EXPECT_EQ(uuid.bytes[8] & 0xC0, 0x80) << "RFC 4122 variant";
    const std::string text = uuid.ToString();
    ASSERT_EQ(text.size(), 36u);
    auto parsed = ParseUuid(text);
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_EQ(*parsed, uuid);
    EXPECT_TRUE(seen.insert(text).second) << "duplicate random UUID " << text;
  }
}

TEST(UuidTest, MalformedTextIsRejected) {
  const char* malformed[] = {
      "",
      "123e4567-e89b-42d3-a456-42661417400",     // 35 characters
      "123e4567-e89b-42d3-a456-4266141740000",   // 37 characters
      "123e4567e89b42d3a456426614174000",        // no dashes
      "123e4567-e89b-42d3-a456_426614174000",    // wrong separator
      "123e456-7e89b-42d3-a456-426614174000",    // dash one place early
      "123e45678-e89b-42d3-a456-42661417400",    // dash one place late
      "123e4567-e89b-42d3-a456-42661417400g",    // not hex
      "g23e4567-e89b-42d3-a456-426614174000",
      "123e4567-e89b-42d3-a456-4266141740 0",
      "{23e4567-e89b-42d3-a456-426614174000",
      "123e4567-e89b-42d3-a456-426614174000\n",
      "123e4567--89b-42d3-a456-426614174000",
      "------------------------------------",
      "+23e4567-e89b-42d3-a456-426614174000",
  };
  for (const char* text : malformed) {
    auto uuid = ParseUuid(text);
    EXPECT_EQ(uuid.status().code(), absl::StatusCode::kInvalidArgument) << "'" << text << "'";
  }
  // Embedded NUL: same length as a valid one.
  std::string with_nul = "123e4567-e89b-42d3-a456-426614174000";
  with_nul[3] = '\0';
  EXPECT_FALSE(ParseUuid(with_nul).ok());
}

}  // namespace
}  // namespace cbt
