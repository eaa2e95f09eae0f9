// A child process for tests: started with fork/exec, stderr captured to a file, stopped with
// a signal on request or on destruction.
#ifndef CBT_TESTS_INTEGRATION_PROCESS_H_
#define CBT_TESTS_INTEGRATION_PROCESS_H_

#include <sys/types.h>

#include <string>
#include <vector>

namespace cbt::testing {

class ChildProcess {
 public:
  ChildProcess() = default;
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;
  ~ChildProcess() { Kill(); }

  // Starts `argv[0]` with `argv`; stdout and stderr go to `log_path`.
  bool Start(const std::vector<std::string>& argv, const std::string& log_path);
  // Sends `signal` and waits up to `timeout_ms`; returns the exit status as waitpid reports it
  // (or -1 if the process did not end in time, in which case it is killed).
  int Stop(int signal, int timeout_ms);
  // SIGKILL and reap.
  void Kill();
  bool running() const { return pid_ > 0; }
  // If the process already exited, its status (as waitpid); -1 while it runs.
  int ExitedStatus();
  std::string Log() const;

 private:
  pid_t pid_ = -1;
  std::string log_path_;
};

// Waits until a Unix socket at `path` accepts connections.
bool WaitForUnixSocket(const std::string& path, int timeout_ms);
// Waits until 127.0.0.1:`port` accepts TCP connections.
bool WaitForTcpPort(int port, int timeout_ms);
// A TCP port on 127.0.0.1 that was free a moment ago.
int PickFreePort();
// A fresh directory under /tmp, removed by RemoveTree.
std::string MakeTempDir(const std::string& prefix);
void RemoveTree(const std::string& path);
// Runs a shell command, returns its exit status.
int RunShell(const std::string& command);
// GET http://127.0.0.1:port/path, returns the body ("" on failure).
std::string HttpGet(int port, const std::string& path);

}  // namespace cbt::testing

#endif  // CBT_TESTS_INTEGRATION_PROCESS_H_
