#include "blksnap/log.h"

#include <cstdarg>
#include <cstdio>

namespace cbt::blksnap {
namespace {

void Emit(const char* level, const char* format, va_list args) {
  char line[1024];
  vsnprintf(line, sizeof(line), format, args);
  std::fprintf(stderr, "blksnap: %s: %s\n", level, line);
}

}  // namespace

void LogInfo(const char* format, ...) {
  va_list args;
  va_start(args, format);
  Emit("info", format, args);
  va_end(args);
}

void LogWarning(const char* format, ...) {
  va_list args;
  va_start(args, format);
  Emit("warning", format, args);
  va_end(args);
}

}  // namespace cbt::blksnap
