// StateStore: the agent's memory across restarts, one text-format file in the state directory.
//
// Save() is atomic (temporary file, fsync, rename, fsync of the directory): after a crash the
// file holds either the old or the new state, never a mix.
#ifndef CBT_AGENT_STATE_STATE_STORE_H_
#define CBT_AGENT_STATE_STATE_STORE_H_

#include <memory>
#include <mutex>
#include <string>

#include "absl/status/statusor.h"
#include "state/agent_state.pb.h"

namespace cbt::agent {

// Replaces `path` with `data` atomically and durably (temporary file, fsync, rename, fsync of
// the directory), mode 0600.
absl::Status WriteFileAtomically(const std::string& path, const std::string& data);

class StateStore {
 public:
  // Creates `directory` (mode 0700) if needed and loads the state file if present. A state file
  // that cannot be parsed is kept aside as "state.textproto.corrupt-<time>" and an empty state
  // is used, so that a damaged file never keeps the agent from starting.
  static absl::StatusOr<std::unique_ptr<StateStore>> Open(const std::string& directory);

  const std::string& directory() const { return directory_; }

  cbtagent::state::AgentState Get() const;
  absl::Status Put(const cbtagent::state::AgentState& state);

  // Applies `mutate` to the current state and saves it, atomically with respect to other
  // callers.
  template <typename Fn>
  absl::Status Update(Fn&& mutate) {
    std::lock_guard<std::mutex> lock(mu_);
    cbtagent::state::AgentState next = state_;
    mutate(next);
    return SaveLocked(next);
  }

 private:
  explicit StateStore(std::string directory) : directory_(std::move(directory)) {}
  absl::Status SaveLocked(const cbtagent::state::AgentState& state);

  const std::string directory_;
  mutable std::mutex mu_;
  cbtagent::state::AgentState state_;
};

}  // namespace cbt::agent

#endif  // CBT_AGENT_STATE_STATE_STORE_H_
