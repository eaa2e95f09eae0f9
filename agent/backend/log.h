// One line per message on stderr, "<component>: <level>: <text>", written with a single
// fprintf so that lines from several threads never interleave. (Debian's abseil has no absl/log.)
#ifndef CBT_AGENT_BACKEND_LOG_H_
#define CBT_AGENT_BACKEND_LOG_H_

namespace cbt::agent {

void LogInfo(const char* component, const char* format, ...)
    __attribute__((format(printf, 2, 3)));
void LogWarning(const char* component, const char* format, ...)
    __attribute__((format(printf, 2, 3)));

}  // namespace cbt::agent

#endif  // CBT_AGENT_BACKEND_LOG_H_
