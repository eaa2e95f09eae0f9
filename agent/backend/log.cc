#include "backend/log.h"

#include <cstdarg>
#include <cstdio>

namespace cbt::agent {
namespace {

void Emit(const char* component, const char* level, const char* format, va_list args) {
  char line[1024];
  std::vsnprintf(line, sizeof(line), format, args);
  std::fprintf(stderr, "%s: %s: %s\n", component, level, line);
}

}  // namespace

void LogInfo(const char* component, const char* format, ...) {
  va_list args;
  va_start(args, format);
  Emit(component, "info", format, args);
  va_end(args);
}

void LogWarning(const char* component, const char* format, ...) {
  va_list args;
  va_start(args, format);
  Emit(component, "warning", format, args);
  va_end(args);
}

}  // namespace cbt::agent
