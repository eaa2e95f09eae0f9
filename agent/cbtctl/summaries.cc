#include "cbtctl/summaries.h"

#include "absl/strings/str_cat.h"
#include "cbtctl/sizes.h"

namespace cbt::cbtctl {

void MapHistogram::Add(const std::string& map_bytes) {
  for (const char byte : map_bytes) ++counts_[static_cast<uint8_t>(byte)];
  blocks_ += map_bytes.size();
}

void MapHistogram::Write(std::ostream& out, int indent) const {
  Table table({"CHANGE", "BLOCKS", "PERCENT"}, {true, true, true});
  for (int number = 0; number < 256; ++number) {
    if (counts_[number] == 0) continue;
    table.AddRow({absl::StrCat(number), absl::StrCat(counts_[number]),
                  Percent(counts_[number], blocks_)});
  }
  table.Write(out, indent);
}

void ExtentsTotals::Add(const ::cbtagent::v1::ChangedExtentsChunk& chunk) {
  for (const auto& extent : chunk.extents()) {
    ++extents_;
    changed_bytes_ += extent.length();
    scanned_to_ = extent.offset() + extent.length();
  }
  last_ = chunk;
}

Fields ExtentsTotals::Summary(std::optional<uint64_t> capacity) const {
  Fields fields;
  fields.Add("extents", absl::StrCat(extents_));
  // The last message carries the server's own total; it counts the same extents.
  const uint64_t changed = last_.changed_bytes() != 0 ? last_.changed_bytes() : changed_bytes_;
  fields.Add("changed bytes", FormatSize(changed));
  if (capacity) {
    fields.Add("of capacity", absl::StrCat(Percent(changed, *capacity), " of ",
                                           FormatSize(*capacity)));
  }
  if (last_.complete()) {
    fields.Add("complete", "yes");
  } else {
    fields.Add("complete", absl::StrCat("no: continue with --start ", last_.next_offset()));
  }
  fields.Add("next base generation", last_.generation_id());
  fields.Add("next base changes", absl::StrCat(last_.changes_number()));
  return fields;
}

namespace {
constexpr size_t kColumn = 28;
std::string Pad(std::string text) {
  if (text.size() < kColumn) text.append(kColumn - text.size(), ' ');
  return text;
}
}  // namespace

std::string ExtentHeader() { return Pad("OFFSET") + "  LENGTH"; }

std::string FormatExtentLine(uint64_t offset, uint64_t length) {
  return Pad(FormatSize(offset)) + "  " + FormatSize(length);
}

}  // namespace cbt::cbtctl
