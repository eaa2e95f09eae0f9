#include "state/state_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "google/protobuf/text_format.h"

namespace cbt::agent {
namespace {

constexpr char kStateFile[] = "state.textproto";

absl::Status ErrnoError(const std::string& what, int err) {
  return absl::UnavailableError(absl::StrCat(what, ": ", std::strerror(err), " (errno ", err, ")"));
}

absl::Status MakeDirectories(const std::string& path) {
  for (size_t pos = 1; pos <= path.size(); ++pos) {
    if (pos != path.size() && path[pos] != '/') continue;
    const std::string prefix = path.substr(0, pos);
    if (::mkdir(prefix.c_str(), 0700) != 0 && errno != EEXIST) {
      return ErrnoError(absl::StrCat("cannot create state directory ", prefix), errno);
    }
  }
  return absl::OkStatus();
}

absl::Status WriteAll(int fd, const std::string& data, const std::string& path) {
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoError(absl::StrCat("cannot write ", path), errno);
    }
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status WriteFileAtomically(const std::string& path, const std::string& data) {
  const std::string temporary = absl::StrCat(path, ".tmp");
  const int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return ErrnoError(absl::StrCat("cannot create ", temporary), errno);
  absl::Status status = WriteAll(fd, data, temporary);
  if (status.ok() && ::fsync(fd) != 0) status = ErrnoError(absl::StrCat("fsync ", temporary), errno);
  ::close(fd);
  if (!status.ok()) return status;
  if (::rename(temporary.c_str(), path.c_str()) != 0) {
    return ErrnoError(absl::StrCat("cannot replace ", path), errno);
  }
  const std::string directory = path.substr(0, path.find_last_of('/') + 1);
  const int dir = ::open(directory.empty() ? "." : directory.c_str(),
                         O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir >= 0) {
    ::fsync(dir);
    ::close(dir);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<StateStore>> StateStore::Open(const std::string& directory) {
  if (directory.empty() || directory[0] != '/') {
    return absl::InvalidArgumentError(
        absl::StrCat("state directory must be an absolute path, got '", directory, "'"));
  }
  if (absl::Status status = MakeDirectories(directory); !status.ok()) return status;
  auto store = std::unique_ptr<StateStore>(new StateStore(directory));
  const std::string path = absl::StrCat(directory, "/", kStateFile);
  std::ifstream in(path);
  if (in) {
    std::stringstream text;
    text << in.rdbuf();
    if (!google::protobuf::TextFormat::ParseFromString(text.str(), &store->state_)) {
      const std::string aside =
          absl::StrCat(path, ".corrupt-", absl::ToUnixSeconds(absl::Now()));
      ::rename(path.c_str(), aside.c_str());
      store->state_.Clear();
    }
  }
  return store;
}

cbtagent::state::AgentState StateStore::Get() const {
  std::lock_guard<std::mutex> lock(mu_);
  return state_;
}

absl::Status StateStore::Put(const cbtagent::state::AgentState& state) {
  std::lock_guard<std::mutex> lock(mu_);
  return SaveLocked(state);
}

absl::Status StateStore::SaveLocked(const cbtagent::state::AgentState& state) {
  std::string text;
  if (!google::protobuf::TextFormat::PrintToString(state, &text)) {
    return absl::InternalError("cannot serialize agent state");
  }
  if (absl::Status status = WriteFileAtomically(absl::StrCat(directory_, "/", kStateFile), text);
      !status.ok()) {
    return status;
  }
  state_ = state;
  return absl::OkStatus();
}

}  // namespace cbt::agent
