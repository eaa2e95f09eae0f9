#include "cbtctl/sizes.h"

#include <cctype>
#include <cstdio>
#include <limits>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace cbt::cbtctl {
namespace {

constexpr char kUnits[] = "KMGTPE";

absl::Status Bad(const std::string& what, const std::string& text, const char* why) {
  return absl::InvalidArgumentError(absl::StrCat(what, " '", text, "': ", why));
}

}  // namespace

absl::StatusOr<uint64_t> ParseSize(const std::string& text, const std::string& what) {
  size_t pos = 0;
  uint64_t value = 0;
  constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();
  while (pos < text.size() && std::isdigit(static_cast<unsigned char>(text[pos]))) {
    const uint64_t digit = static_cast<uint64_t>(text[pos] - '0');
    if (value > (kMax - digit) / 10) return Bad(what, text, "too large");
    value = value * 10 + digit;
    ++pos;
  }
  if (pos == 0) {
    return Bad(what, text, "expected a number of bytes with an optional K/M/G/T suffix");
  }
  int shift = 0;
  std::string suffix = absl::AsciiStrToUpper(text.substr(pos));
  if (!suffix.empty() && suffix != "B") {
    const size_t unit = std::string(kUnits).find(suffix[0]);
    const std::string rest = suffix.substr(1);
    if (unit == std::string::npos || !(rest.empty() || rest == "B" || rest == "IB")) {
      return Bad(what, text, "unknown suffix (use K, M, G, T, P or E; binary units)");
    }
    shift = 10 * static_cast<int>(unit + 1);
  }
  if (shift > 0 && value > (kMax >> shift)) return Bad(what, text, "too large");
  return value << shift;
}

absl::StatusOr<ByteRangeArg> ParseRange(const std::string& text) {
  const size_t colon = text.find(':');
  if (colon == std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("range '", text, "': expected OFFSET:LENGTH, e.g. 1M:64K"));
  }
  auto offset = ParseSize(text.substr(0, colon), "range offset");
  if (!offset.ok()) return offset.status();
  auto length = ParseSize(text.substr(colon + 1), "range length");
  if (!length.ok()) return length.status();
  if (*length == 0) {
    return absl::InvalidArgumentError(absl::StrCat("range '", text, "': length must be > 0"));
  }
  if (*offset > std::numeric_limits<uint64_t>::max() - *length) {
    return absl::InvalidArgumentError(absl::StrCat("range '", text, "': end is too large"));
  }
  return ByteRangeArg{*offset, *length};
}

std::string HumanSize(uint64_t bytes) {
  if (bytes < 1024) return absl::StrCat(bytes, " B");
  double value = static_cast<double>(bytes) / 1024.0;
  int unit = 0;
  // Move up while the value would print as 1024.0 or more.
  while (unit + 1 < static_cast<int>(sizeof(kUnits) - 1) && value >= 1023.95) {
    value /= 1024.0;
    ++unit;
  }
  char buffer[32];
  std::snprintf(buffer, sizeof(buffer), "%.1f %ciB", value, kUnits[unit]);
  return buffer;
}

std::string FormatSize(uint64_t bytes) {
  if (bytes < 1024) return absl::StrCat(bytes);
  return absl::StrCat(bytes, " (", HumanSize(bytes), ")");
}

std::string Percent(uint64_t part, uint64_t whole) {
  if (whole == 0) return "n/a";
  char buffer[32];
  std::snprintf(buffer, sizeof(buffer), "%.2f%%",
                100.0 * static_cast<double>(part) / static_cast<double>(whole));
  return buffer;
}

}  // namespace cbt::cbtctl
