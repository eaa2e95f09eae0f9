// The 16-byte identifier of a CBT generation (a random RFC 4122 version-4 UUID).
//
// A new generation is drawn whenever the map's history restarts (creation, reset, number
// wrap-around); change numbers are only comparable within one generation.
#ifndef CBT_CORE_GENERATION_ID_H_
#define CBT_CORE_GENERATION_ID_H_

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace cbt {

struct Uuid {
  std::array<uint8_t, 16> bytes{};

  bool is_nil() const;
  // Canonical lower-case text: 8-4-4-4-12 hex digits.
  std::string ToString() const;
  friend bool operator==(const Uuid&, const Uuid&) = default;
};

// Accepts the canonical 36-character form (either case); anything else is InvalidArgument.
absl::StatusOr<Uuid> ParseUuid(std::string_view text);

// Draws a version-4 UUID from the kernel's random source (getrandom(2)).
Uuid NewRandomUuid();

using GenerationId = Uuid;

}  // namespace cbt

#endif  // CBT_CORE_GENERATION_ID_H_
