#include "ublk/log.h"

#include <cstdarg>
#include <cstdio>

namespace cbt::ublk {
namespace {

void Log(const char* level, const char* format, va_list args) {
  char line[1024];
  vsnprintf(line, sizeof(line), format, args);
  // One fprintf per line, so lines from several threads do not interleave.
  fprintf(stderr, "ublk: %s: %s\n", level, line);
}

}  // namespace

void LogInfo(const char* format, ...) {
  va_list args;
  va_start(args, format);
  Log("info", format, args);
  va_end(args);
}

void LogWarning(const char* format, ...) {
  va_list args;
  va_start(args, format);
  Log("warning", format, args);
  va_end(args);
}

}  // namespace cbt::ublk
