// Byte counts on the command line and on the screen: parsing "64M", "4KiB", "OFFSET:LENGTH",
// and printing "67108864 (64.0 MiB)".
#ifndef CBT_AGENT_CBTCTL_SIZES_H_
#define CBT_AGENT_CBTCTL_SIZES_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace cbt::cbtctl {

// Decimal digits with an optional binary suffix K, M, G, T, P or E (case-insensitive,
// optionally followed by "iB" or "B"), e.g. "512", "64M", "4KiB", "1g". No sign, spaces,
// fractions or overflow past 2^64-1. `what` names the value in the error message.
absl::StatusOr<uint64_t> ParseSize(const std::string& text, const std::string& what);

struct ByteRangeArg {
  uint64_t offset = 0;
  uint64_t length = 0;
};

// "OFFSET:LENGTH", both ParseSize() syntax; the length must be > 0 and offset + length must
// not overflow.
absl::StatusOr<ByteRangeArg> ParseRange(const std::string& text);

// "512 B", "64.0 MiB", "1.5 GiB": one decimal for KiB and above.
std::string HumanSize(uint64_t bytes);

// "67108864 (64.0 MiB)"; plain "512" below 1 KiB.
std::string FormatSize(uint64_t bytes);

// part / whole as a percentage with two decimals ("12.50%"); "n/a" when whole is 0.
std::string Percent(uint64_t part, uint64_t whole);

}  // namespace cbt::cbtctl

#endif  // CBT_AGENT_CBTCTL_SIZES_H_
