// Summaries of the streamed replies: the change-number histogram of a CBT map and the totals
// of a changed-extents listing.
#ifndef CBT_AGENT_CBTCTL_SUMMARIES_H_
#define CBT_AGENT_CBTCTL_SUMMARIES_H_

#include <array>
#include <cstdint>
#include <optional>
#include <ostream>
#include <string>

#include "cbtagent/v1/agent.pb.h"
#include "cbtctl/output.h"

namespace cbt::cbtctl {

class MapHistogram {
 public:
  void Add(const std::string& map_bytes);
  uint64_t blocks() const { return blocks_; }
  uint64_t count(uint8_t change_number) const { return counts_[change_number]; }
  // "CHANGE  BLOCKS  PERCENT" rows for the change numbers that occur.
  void Write(std::ostream& out, int indent) const;

 private:
  std::array<uint64_t, 256> counts_{};
  uint64_t blocks_ = 0;
};

// Accumulates the chunks of a GetChangedExtents stream.
class ExtentsTotals {
 public:
  void Add(const ::cbtagent::v1::ChangedExtentsChunk& chunk);
  uint64_t extents() const { return extents_; }
  uint64_t changed_bytes() const { return changed_bytes_; }
  uint64_t scanned_to() const { return scanned_to_; }  // end of the last extent seen
  // extents, changed bytes, share of capacity (when known), completion, what to record.
  Fields Summary(std::optional<uint64_t> capacity) const;

 private:
  uint64_t extents_ = 0;
  uint64_t changed_bytes_ = 0;
  uint64_t scanned_to_ = 0;
  ::cbtagent::v1::ChangedExtentsChunk last_;
};

// One extent as a line: offset and length, bytes and human units, in fixed-width columns.
std::string FormatExtentLine(uint64_t offset, uint64_t length);
std::string ExtentHeader();

}  // namespace cbt::cbtctl

#endif  // CBT_AGENT_CBTCTL_SUMMARIES_H_
