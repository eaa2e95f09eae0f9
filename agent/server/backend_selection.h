// Picks the backend the daemon runs with (--backend) and explains the choice.
#ifndef CBT_AGENT_SERVER_BACKEND_SELECTION_H_
#define CBT_AGENT_SERVER_BACKEND_SELECTION_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "backend/backend.h"
#include "server/agent_options.h"
#include "state/state_store.h"

namespace cbt::agent {

struct BackendChoice {
  std::unique_ptr<Backend> backend;
  // Non-empty when no kernel mechanism is usable: `backend` then fails every call with
  // FAILED_PRECONDITION carrying this reason, and readiness reports NOT_SERVING.
  std::string unavailable_reason;
};

// "blksnap" and "ublk" fail (and the daemon exits) when that backend cannot start; "auto"
// prefers blksnap when its control device exists, then ublk, and otherwise runs without one.
absl::StatusOr<BackendChoice> SelectBackend(const AgentOptions& options, EventSink* events,
                                            StateStore* state);

}  // namespace cbt::agent

#endif  // CBT_AGENT_SERVER_BACKEND_SELECTION_H_
