#include "cbtctl/progress.h"

#include <unistd.h>

#include <cstdio>

namespace cbt::cbtctl {

bool Progress::StderrIsTty() { return ::isatty(STDERR_FILENO) == 1; }
bool Progress::StdoutIsTty() { return ::isatty(STDOUT_FILENO) == 1; }

void Progress::Show(const std::string& text, bool force) {
  if (!enabled_) return;
  const auto now = std::chrono::steady_clock::now();
  if (shown_ && !force && now - last_ < std::chrono::milliseconds(100)) return;
  last_ = now;
  std::fprintf(stderr, "\r%s\033[K", text.c_str());
  std::fflush(stderr);
  shown_ = true;
}

void Progress::Clear() {
  if (!enabled_ || !shown_) return;
  std::fputs("\r\033[K", stderr);
  std::fflush(stderr);
  shown_ = false;
}

}  // namespace cbt::cbtctl
