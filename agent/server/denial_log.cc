#include "server/denial_log.h"

#include <algorithm>
#include <cstdint>
#include <mutex>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "backend/log.h"

namespace cbt::agent {
namespace {

constexpr double kBurst = 100;
constexpr double kPerSecond = 20;

// Token bucket; returns false when the line is to be left out, and sets *suppressed to the
// number left out since the last line written otherwise.
bool Admit(uint64_t* suppressed) {
  static std::mutex mu;
  static double tokens = kBurst;
  static absl::Time last = absl::Now();
  static uint64_t left_out = 0;
  std::lock_guard<std::mutex> lock(mu);
  const absl::Time now = absl::Now();
  tokens = std::min(kBurst, tokens + absl::ToDoubleSeconds(now - last) * kPerSecond);
  last = now;
  if (tokens < 1) {
    ++left_out;
    return false;
  }
  tokens -= 1;
  *suppressed = left_out;
  left_out = 0;
  return true;
}

}  // namespace

std::string PrintableForLog(absl::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte == '\\') {
      out += "\\\\";
    } else if (byte < 0x20 || byte >= 0x7f) {
      out += absl::StrFormat("\\x%02x", byte);
    } else {
      out += c;
    }
  }
  return out;
}

void LogDenial(absl::string_view method, absl::string_view peer, absl::string_view caller,
               const absl::Status& status) {
  uint64_t suppressed = 0;
  if (!Admit(&suppressed)) return;
  const std::string line = absl::StrCat(
      "denied ", method, " from ", PrintableForLog(peer), " as ", PrintableForLog(caller), ": ",
      absl::StatusCodeToString(status.code()), ": ", PrintableForLog(status.message()),
      suppressed == 0 ? "" : absl::StrCat(" (", suppressed, " earlier denials not logged)"));
  LogWarning("cbt-agent", "%s", line.c_str());
}

}  // namespace cbt::agent
