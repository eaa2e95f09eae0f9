// A single self-overwriting status line on stderr for long streams. Disabled (no output at all)
// unless enabled, which callers do only when stderr is a TTY and --json is not set.
#ifndef CBT_AGENT_CBTCTL_PROGRESS_H_
#define CBT_AGENT_CBTCTL_PROGRESS_H_

#include <chrono>
#include <string>

namespace cbt::cbtctl {

class Progress {
 public:
  explicit Progress(bool enabled) : enabled_(enabled) {}
  ~Progress() { Clear(); }
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  // True when stderr is a terminal.
  static bool StderrIsTty();
  static bool StdoutIsTty();

  // Shows `text` (at most ten times a second unless `force`).
  void Show(const std::string& text, bool force = false);
  // Erases the line (before other output, and at the end).
  void Clear();

 private:
  bool enabled_;
  bool shown_ = false;
  std::chrono::steady_clock::time_point last_{};
};

}  // namespace cbt::cbtctl

#endif  // CBT_AGENT_CBTCTL_PROGRESS_H_
