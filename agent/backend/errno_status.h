// ErrnoStatus: a kernel errno as an absl::Status, following the code convention of backend.h.
//
//   ENOENT ENODEV ENXIO ESRCH          NotFound            (callers override where the context
//                                                          means something else)
//   EINVAL ENOTBLK ENOTDIR EISDIR
//   ENAMETOOLONG ELOOP                 InvalidArgument
//   ENODATA ERANGE EOVERFLOW EFBIG     OutOfRange
//   EFAULT EUCLEAN                     DataLoss
//   ENOSPC EDQUOT ENOMEM EMFILE ENFILE ResourceExhausted
//   EALREADY EEXIST                    AlreadyExists
//   EBUSY                              FailedPrecondition
//   EPERM EACCES EROFS                 PermissionDenied
//   ENOTTY ENOSYS EOPNOTSUPP EIO
//   EINTR EAGAIN ESHUTDOWN             Unavailable (interface mismatch / device or module gone)
//   ETIMEDOUT                          DeadlineExceeded
//   anything else                      Internal
//
// The message is "<context>: <strerror> (errno N)", e.g.
//   "attach tracker to /dev/sdb1: Device or resource busy (errno 16)".
#ifndef CBT_AGENT_BACKEND_ERRNO_STATUS_H_
#define CBT_AGENT_BACKEND_ERRNO_STATUS_H_

#include <string>

#include "absl/status/status.h"

namespace cbt::agent {

// The code ErrnoStatus uses for `err` (kOk for 0).
absl::StatusCode ErrnoToStatusCode(int err);

// strerror(err) without the thread-safety trap of strerror().
std::string ErrnoText(int err);

// OkStatus() for err == 0, otherwise the mapped code and "<context>: <strerror> (errno N)".
absl::Status ErrnoStatus(int err, std::string context);

// Same with the code chosen by the caller (for errnos whose meaning depends on the call).
absl::Status ErrnoStatus(int err, std::string context, absl::StatusCode code);

}  // namespace cbt::agent

#endif  // CBT_AGENT_BACKEND_ERRNO_STATUS_H_
