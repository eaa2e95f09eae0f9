#include "server/config_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "backend/errno_status.h"

namespace cbt::agent {
namespace {

constexpr off_t kMaxConfigBytes = 1024 * 1024;

}  // namespace

absl::StatusOr<std::string> ReadConfigFile(const std::string& path, const char* flag,
                                           FileSecrecy secrecy) {
  const std::string what = absl::StrCat(flag, "=", path);
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": cannot open: ", ErrnoText(errno)));
  }
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > kMaxConfigBytes) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat(what, ": not a regular file of at most 1 MiB"));
  }
  const mode_t forbidden =
      secrecy == FileSecrecy::kSecret ? (S_IRWXO | S_IWGRP) : (S_IWOTH | S_IWGRP);
  if ((st.st_mode & forbidden) != 0) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: mode %04o lets %s; refusing to start (chmod %s)", what, st.st_mode & 07777,
        secrecy == FileSecrecy::kSecret ? "other users read it or its group change it"
                                        : "other users change it",
        secrecy == FileSecrecy::kSecret ? "0600 or 0640" : "0644"));
  }
  std::string text(static_cast<size_t>(st.st_size), '\0');
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::read(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    done += static_cast<size_t>(n);
  }
  ::close(fd);
  text.resize(done);
  return text;
}

std::vector<ConfigLine> SplitConfigLines(absl::string_view text) {
  std::vector<ConfigLine> lines;
  int number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++number;
    // A comment runs from a '#' at the start of the line or after a blank to its end.
    for (size_t i = 0; i < line.size(); ++i) {
      if (line[i] == '#' && (i == 0 || line[i - 1] == ' ' || line[i - 1] == '\t')) {
        line = line.substr(0, i);
        break;
      }
    }
    line = absl::StripAsciiWhitespace(line);
    if (line.empty()) continue;
    ConfigLine parsed;
    parsed.number = number;
    for (absl::string_view field :
         absl::StrSplit(line, absl::ByAnyChar(" \t\r"), absl::SkipEmpty())) {
      parsed.fields.emplace_back(field);
    }
    lines.push_back(std::move(parsed));
  }
  return lines;
}

}  // namespace cbt::agent
