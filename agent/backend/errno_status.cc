#include "backend/errno_status.h"

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace cbt::agent {

absl::StatusCode ErrnoToStatusCode(int err) {
  switch (err) {
    case 0:
      return absl::StatusCode::kOk;
    case ENOENT:
    case ENODEV:
    case ENXIO:
    case ESRCH:
      return absl::StatusCode::kNotFound;
    case EINVAL:
    case ENOTBLK:
    case ENOTDIR:
    case EISDIR:
    case ENAMETOOLONG:
    case ELOOP:
      return absl::StatusCode::kInvalidArgument;
    case ENODATA:
    case ERANGE:
    case EOVERFLOW:
    case EFBIG:
      return absl::StatusCode::kOutOfRange;
    case EFAULT:
    case EUCLEAN:
      return absl::StatusCode::kDataLoss;
    case ENOSPC:
    case EDQUOT:
    case ENOMEM:
    case EMFILE:
    case ENFILE:
      return absl::StatusCode::kResourceExhausted;
    case EALREADY:
    case EEXIST:
      return absl::StatusCode::kAlreadyExists;
    case EBUSY:
      return absl::StatusCode::kFailedPrecondition;
    case EPERM:
    case EACCES:
    case EROFS:
      return absl::StatusCode::kPermissionDenied;
    case ENOTTY:
    case ENOSYS:
    case EOPNOTSUPP:
    case EIO:
    case EINTR:
    case EAGAIN:
    case ESHUTDOWN:
      return absl::StatusCode::kUnavailable;
    case ETIMEDOUT:
      return absl::StatusCode::kDeadlineExceeded;
    default:
      return absl::StatusCode::kInternal;
  }
}

std::string ErrnoText(int err) {
  char buffer[256];
  // GNU strerror_r: returns a pointer to the text (maybe not `buffer`).
  const char* text = strerror_r(err, buffer, sizeof(buffer));
  return text != nullptr ? std::string(text) : absl::StrCat("Unknown error ", err);
}

absl::Status ErrnoStatus(int err, std::string context) {
  return ErrnoStatus(err, std::move(context), ErrnoToStatusCode(err));
}

absl::Status ErrnoStatus(int err, std::string context, absl::StatusCode code) {
  if (err == 0) return absl::OkStatus();
  if (code == absl::StatusCode::kOk) code = absl::StatusCode::kInternal;
  return absl::Status(code, absl::StrCat(context, ": ", ErrnoText(err), " (errno ", err, ")"));
}

}  // namespace cbt::agent
