#include "ublk/backend/saved_cbt_map.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "backend/errno_status.h"
#include "state/agent_state.pb.h"
#include "state/state_store.h"

namespace cbt::ublk {

std::string SavedCbtMapPath(const std::string& state_dir, const agent::DeviceNumber& number) {
  return absl::StrCat(state_dir, "/cbt-map-", number.major, "-", number.minor, ".binpb");
}

absl::Status SaveCbtMap(const std::string& state_dir, const SavedCbtMapOwner& owner,
                        const CbtMapState& state) {
  cbtagent::state::CbtMapRecord record;
  record.set_resolved_path(owner.resolved_path);
  record.set_major(owner.number.major);
  record.set_minor(owner.number.minor);
  record.set_ublk_dev_id(owner.ublk_dev_id);
  record.set_capacity_sectors(state.geometry.capacity_sectors);
  record.set_block_shift(state.geometry.block_shift);
  record.set_block_count(state.geometry.block_count);
  record.set_snap_number_previous(state.snap_number_previous);
  record.set_snap_number_active(state.snap_number_active);
  record.set_generation_id(state.generation_id.bytes.data(), state.generation_id.bytes.size());
  record.set_corrupted(state.corrupted);
  record.set_read_map(state.read_map.data(), state.read_map.size());
  record.set_write_map(state.write_map.data(), state.write_map.size());
  std::string bytes;
  if (!record.SerializeToString(&bytes)) {
    return absl::InternalError(absl::StrCat("cannot serialize the CBT map of ", owner.resolved_path));
  }
  return agent::WriteFileAtomically(SavedCbtMapPath(state_dir, owner.number), bytes);
}

absl::StatusOr<CbtMapState> TakeSavedCbtMap(const std::string& state_dir,
                                            const SavedCbtMapOwner& owner) {
  const std::string path = SavedCbtMapPath(state_dir, owner.number);
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    if (errno == ENOENT) {
      return absl::NotFoundError(absl::StrCat("no CBT map of ", owner.resolved_path,
                                              " was saved (", path, ")"));
    }
    return agent::ErrnoStatus(errno, absl::StrCat("open ", path));
  }
  std::stringstream bytes;
  bytes << in.rdbuf();
  in.close();
  // Consumed whatever happens next: a map may be used for one run only.
  if (unlink(path.c_str()) != 0) {
    return agent::ErrnoStatus(errno, absl::StrCat("remove ", path), absl::StatusCode::kInternal);
  }
  cbtagent::state::CbtMapRecord record;
  if (!record.ParseFromString(bytes.str()) || record.generation_id().size() != 16 ||
      record.snap_number_previous() > 255 || record.snap_number_active() > 255) {
    return absl::DataLossError(absl::StrCat("saved CBT map ", path, " is unreadable"));
  }
  if (record.resolved_path() != owner.resolved_path || record.major() != owner.number.major ||
      record.minor() != owner.number.minor || record.ublk_dev_id() != owner.ublk_dev_id) {
    return absl::FailedPreconditionError(absl::StrCat(
        "saved CBT map ", path, " belongs to ", record.resolved_path(), " (", record.major(), ":",
        record.minor(), ", /dev/ublkb", record.ublk_dev_id(), "), not to ", owner.resolved_path,
        " (", owner.number.major, ":", owner.number.minor, ", /dev/ublkb", owner.ublk_dev_id,
        ")"));
  }
  CbtMapState state;
  state.geometry.capacity_sectors = record.capacity_sectors();
  state.geometry.block_shift = record.block_shift();
  state.geometry.block_count = record.block_count();
  state.snap_number_previous = static_cast<uint8_t>(record.snap_number_previous());
  state.snap_number_active = static_cast<uint8_t>(record.snap_number_active());
  memcpy(state.generation_id.bytes.data(), record.generation_id().data(), 16);
  state.corrupted = record.corrupted();
  state.read_map.assign(record.read_map().begin(), record.read_map().end());
  state.write_map.assign(record.write_map().begin(), record.write_map().end());
  return state;
}

}  // namespace cbt::ublk
