// A minimal logger for the blksnap backend: one line per message on stderr.
#ifndef CBT_AGENT_BLKSNAP_LOG_H_
#define CBT_AGENT_BLKSNAP_LOG_H_

namespace cbt::blksnap {

// printf-style; prefixes "blksnap: <level>: " and appends a newline.
void LogInfo(const char* format, ...) __attribute__((format(printf, 1, 2)));
void LogWarning(const char* format, ...) __attribute__((format(printf, 1, 2)));

}  // namespace cbt::blksnap

#endif  // CBT_AGENT_BLKSNAP_LOG_H_
