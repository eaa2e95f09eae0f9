#include "cbtctl/requests.h"

#include <limits>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "cbtctl/sizes.h"

namespace cbt::cbtctl {
namespace {

absl::Status Usage(const std::string& message) { return absl::InvalidArgumentError(message); }

const std::string* Option(const Invocation& invocation, const std::string& name) {
  auto it = invocation.options.find(name);
  return it == invocation.options.end() ? nullptr : &it->second;
}

absl::StatusOr<std::string> RequiredOption(const Invocation& invocation,
                                           const std::string& name) {
  const std::string* value = Option(invocation, name);
  if (value == nullptr || value->empty()) {
    return Usage(absl::StrCat("'", invocation.command->name, "' needs --", name));
  }
  return *value;
}

// A size option, or `fallback` when absent.
absl::StatusOr<uint64_t> SizeOption(const Invocation& invocation, const std::string& name,
                                    uint64_t fallback) {
  const std::string* value = Option(invocation, name);
  if (value == nullptr) return fallback;
  return ParseSize(*value, "--" + name);
}

absl::StatusOr<uint64_t> IntegerOption(const std::string& name, const std::string& text,
                                       uint64_t max) {
  uint64_t value = 0;
  if (text.empty() || text[0] == '-' || text[0] == '+' || !absl::SimpleAtoi(text, &value) ||
      value > max) {
    return Usage(absl::StrCat("--", name, " '", text, "': expected an integer 0..", max));
  }
  return value;
}

absl::StatusOr<std::string> NonEmptyArg(const Invocation& invocation, size_t index,
                                        const char* what) {
  if (index >= invocation.args.size() || invocation.args[index].empty()) {
    return Usage(absl::StrCat("'", invocation.command->name, "' needs ", what));
  }
  return invocation.args[index];
}

}  // namespace

v1::EchoRequest BuildEchoRequest(const Invocation& invocation) {
  v1::EchoRequest request;
  request.set_payload(absl::StrJoin(invocation.args, " "));
  return request;
}

absl::StatusOr<std::string> DeviceArgument(const Invocation& invocation) {
  return NonEmptyArg(invocation, 0, "a DEVICE");
}

absl::StatusOr<std::string> SnapshotIdArgument(const Invocation& invocation) {
  return NonEmptyArg(invocation, 0, "a snapshot ID");
}

absl::StatusOr<v1::CreateSnapshotRequest> BuildCreateSnapshotRequest(
    const Invocation& invocation) {
  auto path = RequiredOption(invocation, "diff-storage");
  if (!path.ok()) return path.status();
  auto limit_text = RequiredOption(invocation, "limit");
  if (!limit_text.ok()) return limit_text.status();
  auto limit = ParseSize(*limit_text, "--limit");
  if (!limit.ok()) return limit.status();
  if (*limit == 0 || *limit % 512 != 0) {
    return Usage(absl::StrCat("--limit ", *limit_text, " (", *limit,
                              " bytes): must be a positive multiple of 512"));
  }
  v1::CreateSnapshotRequest request;
  for (size_t i = 0; i < invocation.args.size(); ++i) {
    auto device = NonEmptyArg(invocation, i, "non-empty DEVICE names");
    if (!device.ok()) return device.status();
    request.add_devices(*device);
  }
  if (request.devices().empty()) return Usage("'snapshot create' needs at least one DEVICE");
  request.mutable_diff_storage()->set_path(*path);
  request.mutable_diff_storage()->set_limit_bytes(*limit);
  return request;
}

v1::WatchSnapshotEventsRequest BuildWatchRequest(const Invocation& invocation) {
  v1::WatchSnapshotEventsRequest request;
  if (!invocation.args.empty()) request.set_snapshot_id(invocation.args[0]);
  return request;
}

absl::StatusOr<MapArgs> BuildMapArgs(const Invocation& invocation) {
  MapArgs args;
  auto device = DeviceArgument(invocation);
  if (!device.ok()) return device.status();
  auto offset = SizeOption(invocation, "offset", 0);
  if (!offset.ok()) return offset.status();
  auto length = SizeOption(invocation, "length", 0);
  if (!length.ok()) return length.status();
  if (*offset > std::numeric_limits<uint64_t>::max() - *length) {
    return Usage("--offset + --length is too large");
  }
  if (const std::string* output = Option(invocation, "output")) {
    if (output->empty()) return Usage("--output needs a file name");
    args.output = *output;
  }
  args.request.set_device(*device);
  args.request.set_offset(*offset);
  args.request.set_length(*length);
  return args;
}

absl::StatusOr<v1::MarkDirtyRequest> BuildMarkDirtyRequest(const Invocation& invocation) {
  v1::MarkDirtyRequest request;
  auto device = DeviceArgument(invocation);
  if (!device.ok()) return device.status();
  request.set_device(*device);
  for (size_t i = 1; i < invocation.args.size(); ++i) {
    auto range = ParseRange(invocation.args[i]);
    if (!range.ok()) return range.status();
    v1::ByteRange* out = request.add_ranges();
    out->set_offset(range->offset);
    out->set_length(range->length);
  }
  if (request.ranges().empty()) return Usage("'cbt dirty' needs at least one OFFSET:LENGTH");
  return request;
}

absl::StatusOr<v1::GetChangedExtentsRequest> BuildChangedExtentsRequest(
    const Invocation& invocation) {
  v1::GetChangedExtentsRequest request;
  auto device = DeviceArgument(invocation);
  if (!device.ok()) return device.status();
  auto generation = RequiredOption(invocation, "base-generation");
  if (!generation.ok()) return generation.status();
  auto changes_text = RequiredOption(invocation, "base-changes");
  if (!changes_text.ok()) return changes_text.status();
  auto changes = IntegerOption("base-changes", *changes_text, 255);
  if (!changes.ok()) return changes.status();
  auto start = SizeOption(invocation, "start", 0);
  if (!start.ok()) return start.status();
  uint64_t max = 0;
  if (const std::string* text = Option(invocation, "max")) {
    auto parsed = IntegerOption("max", *text, std::numeric_limits<uint32_t>::max());
    if (!parsed.ok()) return parsed.status();
    max = *parsed;
  }
  request.set_device(*device);
  request.set_base_generation_id(*generation);
  request.set_base_changes_number(static_cast<uint32_t>(*changes));
  request.set_start_offset(*start);
  request.set_max_extents(static_cast<uint32_t>(max));
  return request;
}

grpc::health::v1::HealthCheckRequest BuildHealthRequest(const Invocation& invocation) {
  grpc::health::v1::HealthCheckRequest request;
  if (!invocation.args.empty()) request.set_service(invocation.args[0]);
  return request;
}

}  // namespace cbt::cbtctl
