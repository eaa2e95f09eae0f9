// A minimal logger for the ublk library: one line per message on stderr ("ublk: <level>: ...").
#ifndef CBT_AGENT_UBLK_LOG_H_
#define CBT_AGENT_UBLK_LOG_H_

namespace cbt::ublk {

void LogInfo(const char* format, ...) __attribute__((format(printf, 1, 2)));
void LogWarning(const char* format, ...) __attribute__((format(printf, 1, 2)));

}  // namespace cbt::ublk

#endif  // CBT_AGENT_UBLK_LOG_H_
