// Fuzz target for agent/server/request_validation.h and core ParseUuid: never crashes on any
// input, and the results keep their documented invariants. Traps on a violated invariant.
#include <cctype>
#include <cstdint>
#include <string>
#include <string_view>

#include "core/generation_id.h"
#include "google/protobuf/stubs/logging.h"
#include "server/request_validation.h"
#include "tests/fuzz/fuzz_input.h"

namespace {

using cbt::fuzz::Input;
namespace v1 = cbtagent::v1;

#define CHECK(cond)                \
  do {                             \
    if (!(cond)) __builtin_trap(); \
  } while (0)

bool IsBadInput(const absl::Status& s) {
  return s.code() == absl::StatusCode::kInvalidArgument ||
         s.code() == absl::StatusCode::kOutOfRange;
}

void CheckPath(const std::string& path) {
  const absl::Status s = cbt::agent::ValidatePath(path, "path");
  const bool valid = !path.empty() && path.size() <= cbt::agent::kMaxPathLength &&
                     path.find('\0') == std::string::npos && path[0] == '/';
  CHECK(s.ok() == valid);
  if (!s.ok()) CHECK(IsBadInput(s));
}

void CheckUuidText(const std::string& text) {
  auto id = cbt::ParseUuid(text);
  auto snapshot_id = cbt::agent::ParseSnapshotId(text);
  CHECK(id.ok() == snapshot_id.ok());
  if (!snapshot_id.ok()) CHECK(snapshot_id.status().code() == absl::StatusCode::kInvalidArgument);
  if (!id.ok()) return;
  CHECK(*id == *snapshot_id);
  const std::string canonical = id->ToString();
  CHECK(canonical.size() == 36);
  auto again = cbt::ParseUuid(canonical);
  CHECK(again.ok());
  CHECK(*again == *id);
  CHECK(again->ToString() == canonical);
}

void CheckCreate(const uint8_t* data, size_t size) {
  v1::CreateSnapshotRequest request;
  if (!request.ParseFromArray(data, static_cast<int>(size))) return;
  const absl::Status s = cbt::agent::ValidateCreateSnapshot(request);
  if (!s.ok()) {
    CHECK(IsBadInput(s));
    return;
  }
  CHECK(request.devices_size() >= 1 &&
        static_cast<size_t>(request.devices_size()) <= cbt::agent::kMaxDevicesPerSnapshot);
  for (const std::string& d : request.devices()) CHECK(cbt::agent::ValidatePath(d, "d").ok());
  CHECK(request.has_diff_storage());
  CHECK(cbt::agent::ValidatePath(request.diff_storage().path(), "p").ok());
  CHECK(request.diff_storage().limit_bytes() != 0 &&
        request.diff_storage().limit_bytes() % 512 == 0);
}

void CheckDirty(uint64_t capacity, const uint8_t* data, size_t size) {
  v1::MarkDirtyRequest request;
  if (!request.ParseFromArray(data, static_cast<int>(size))) return;
  uint64_t marked = 0xDEADBEEF;
  auto ranges = cbt::agent::ToSectorRanges(request.ranges(), capacity, &marked);
  if (!ranges.ok()) {
    CHECK(IsBadInput(ranges.status()));
    CHECK(marked == 0xDEADBEEF);  // untouched on failure
    return;
  }
  CHECK(!ranges->empty());
  CHECK(static_cast<int>(ranges->size()) == request.ranges_size());
  const uint64_t capacity_sectors = capacity / 512 + (capacity % 512 != 0 ? 1 : 0);
  unsigned __int128 sum = 0;
  for (size_t i = 0; i < ranges->size(); ++i) {
    const cbt::agent::SectorRange& r = (*ranges)[i];
    const auto& in = request.ranges(static_cast<int>(i));
    CHECK(r.count != 0);
    CHECK(r.sector < capacity_sectors && r.count <= capacity_sectors - r.sector);
    // The sector range covers the byte range and is at most one sector wider at each end.
    const unsigned __int128 begin = static_cast<unsigned __int128>(r.sector) * 512;
    const unsigned __int128 end = begin + static_cast<unsigned __int128>(r.count) * 512;
    CHECK(begin <= in.offset() && in.offset() - begin < 512);
    const unsigned __int128 in_end = static_cast<unsigned __int128>(in.offset()) + in.length();
    CHECK(end >= in_end && end - in_end < 512);
    sum += static_cast<unsigned __int128>(r.count) * 512;
  }
  // The sum saturates instead of wrapping (65,536 ranges of huge devices exceed 64 bits).
  CHECK((sum > UINT64_MAX ? UINT64_MAX : static_cast<uint64_t>(sum)) == marked);
}

void CheckMapRange(uint64_t offset, uint64_t length, uint64_t blocks) {
  auto r = cbt::agent::ResolveMapRange(offset, length, blocks);
  if (!r.ok()) {
    CHECK(r.status().code() == absl::StatusCode::kOutOfRange);
    CHECK(offset > blocks || (length != 0 && length > blocks - offset));
    return;
  }
  CHECK(r->offset == offset);
  CHECK(r->offset <= blocks && r->length <= blocks - r->offset);
  CHECK(length == 0 ? r->length == blocks - offset : r->length == length);
}

uint64_t Interesting(Input& in) {
  switch (in.U8() % 6) {
    case 0:
      return 0;
    case 1:
      return UINT64_MAX - in.U8();
    case 2:
      return uint64_t{1} << (in.U8() % 64);
    case 3:
      return in.U16();
    default:
      return in.U64();
  }
}

}  // namespace

// Invalid UTF-8 in string fields makes protobuf log an error per input; keep the output clean.
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  google::protobuf::SetLogHandler(
      [](google::protobuf::LogLevel, const char*, int, const std::string&) {});
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  Input in(data + 1, size - 1);
  switch (data[0] % 6) {
    case 0: {  // raw path
      CheckPath(std::string(reinterpret_cast<const char*>(data + 1), size - 1));
      break;
    }
    case 1: {  // UUID text, raw and with a canonical-looking mutation
      const std::string text(reinterpret_cast<const char*>(data + 1), size - 1);
      CheckUuidText(text);
      if (size >= 17) {
        cbt::Uuid u;
        for (size_t i = 0; i < 16; ++i) u.bytes[i] = data[1 + i];
        std::string canonical = u.ToString();
        CheckUuidText(canonical);
        for (char& c : canonical) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
        CheckUuidText(canonical);
      }
      break;
    }
    case 2:
      CheckCreate(data + 1, size - 1);
      break;
    case 3: {
      const uint64_t capacity = Interesting(in);
      const size_t consumed = size - 1 - in.remaining();
      CheckDirty(capacity, data + 1 + consumed, in.remaining());
      break;
    }
    case 4: {
      const uint64_t offset = Interesting(in);
      const uint64_t length = Interesting(in);
      const uint64_t blocks = Interesting(in);
      CheckMapRange(offset, length, blocks);
      break;
    }
    case 5: {
      const uint32_t value = in.U32();
      auto n = cbt::agent::ParseChangesNumber(value);
      CHECK(n.ok() == (value <= 255));
      if (n.ok()) CHECK(*n == value);
      break;
    }
  }
  return 0;
}
